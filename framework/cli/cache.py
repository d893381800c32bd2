"""`cimages cache [--gc | --clear]`: the size of every cache folder, and trimming them."""

from __future__ import annotations

import argparse
import os

from framework import cache


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("cache", help="sizes of every cache, evict least recently used")
    what = cmd.add_mutually_exclusive_group()
    what.add_argument("--gc", action="store_true",
                      help=f"evict least recently used entries until under the bound "
                           f"({cache.MAX_ENV}, default {human(cache.DEFAULT_MAX)})")
    what.add_argument("--clear", action="store_true",
                      help="remove every entry not in use by a running build, test or VM")
    cmd.set_defaults(run=run)


def human(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def run(args: argparse.Namespace) -> int:
    limit = cache.bound()  # a bad CIMAGES_CACHE_MAX: exit 2 before anything
    root = cache.cache_root()
    if args.gc or args.clear:
        before, after, kept = cache.gc(limit, clear=args.clear)
        in_use = f"; {len(kept)} in use kept" if kept else ""
        print(f"{'cleared' if args.clear else 'gc'}: {human(before)} -> {human(after)}"
              f"{in_use}")
    folders = cache.scan(root)
    print(f"cache root: {root}")
    width = max([len(f.name) for f in folders] + [6])
    print(f"  {'folder':<{width}}  {'size':>10}  {'entries':>7}")
    for folder in folders:
        print(f"  {folder.name:<{width}}  {human(folder.size):>10}  {len(folder.entries):>7}")
    source = cache.MAX_ENV if os.environ.get(cache.MAX_ENV, "").strip() \
        else f"default; set {cache.MAX_ENV}"
    print(f"total {human(cache.total(folders))} in "
          f"{sum(len(f.entries) for f in folders)} entries; bound {human(limit)} ({source})")
    return 0
