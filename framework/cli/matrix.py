"""`cimages matrix [--json]`: the CI matrix, one cell per image x tier."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from framework.ci.matrix import matrix


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("matrix", help="list the CI matrix: one cell per image x tier")
    cmd.add_argument("--json", action="store_true",
                     help="print {\"include\": [...]} for a GitHub Actions matrix")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cells = matrix(Path.cwd())
    if args.json:
        print(json.dumps({"include": [c.as_json() for c in cells]}, indent=2))
    else:
        for cell in cells:
            print(f"{cell.image:20} {cell.tier:8} {len(cell.tests)} tests")
    return 0
