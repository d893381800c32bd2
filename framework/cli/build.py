"""`cimages build FILE [-o DIR] [--frozen]`: an OCI layout and a docker-archive."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from framework.builder import build


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("build", help="build an image: OCI layout + docker-archive")
    cmd.add_argument("file", help="image definition (YAML)")
    cmd.add_argument("-o", "--out", type=Path, help="output directory (default build/NAME)")
    cmd.add_argument("--frozen", action="store_true",
                     help="never resolve packages: fail unless the lock file matches")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = build(args.file, args.out, frozen=args.frozen)
    for warning in result.warnings:
        print(f"cimages: warning: {warning}", file=sys.stderr)
    print(f"{result.name}:{result.tag}")
    print(f"digest:  {result.digest}")
    print(f"layers:  {len(result.layers)} ({result.written_layers} written, "
          f"{result.reused_layers} reused)")
    size = f"{result.size / 1e6:.1f} MB" if result.size >= 1e6 else f"{result.size / 1e3:.1f} kB"
    print(f"size:    {size} (compressed)")
    print(f"time:    {result.seconds:.2f} s")
    print(f"oci:     {result.oci_dir}")
    print(f"archive: {result.archive}")
    return 0
