"""`cimages lock FILE [--update]`: pin the definition's Debian packages in FILE.lock."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from framework.builder import pull
from framework.builder.lockfile import lock_path
from framework.builder.resolve import lock_definition, requested
from framework.options import evaluate


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("lock", help="resolve and pin packages in the definition's .lock")
    cmd.add_argument("file", help="image definition (YAML)")
    cmd.add_argument("--update", action="store_true",
                     help="refresh Debian's package lists first (picks up new versions) and "
                          "pin what a registry image.from names now")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    definition = Path(args.file)
    lock_path(definition)  # refuses a lock file given as the definition, before reading it
    cfg = evaluate(definition).config
    lock = lock_definition(definition, requested(cfg), update=args.update)
    if pull.is_registry(cfg["image"]["from"]):
        lock, _, said = pull.base_image(definition, cfg["image"]["from"], lock, frozen=False,
                                        update=args.update, load=False)
        for line in said:
            print(f"cimages: warning: {line}", file=sys.stderr)
        assert lock.base is not None
        print(f"{lock_path(definition)}: image.from {lock.base.reference} pinned at "
              f"{lock.base.digest}")
    else:
        lock = pull.drop_stale(definition, lock, frozen=False)
    print(f"{lock_path(definition)}: {len(lock.packages)} packages "
          f"({sum(p.size for p in lock.packages) / 1e6:.1f} MB)")
    return 0
