"""`cimages matrix [--json | --hydra]`: the CI matrix, one cell per image x tier plus one per
tier for the tests that name no image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from framework.ci.matrix import matrix


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("matrix", help="list the CI matrix: one cell per image x tier, "
                         "and one per tier for the tests that name no image")
    form = cmd.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true",
                      help="print {\"include\": [...]} for a GitHub Actions matrix")
    form.add_argument("--hydra", action="store_true",
                      help="print the cells without test counts, as hydra/cells.json holds "
                      "them for the Hydra jobset")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cells = matrix(Path.cwd())
    if args.json:
        print(json.dumps({"include": [c.as_json() for c in cells]}, indent=2))
    elif args.hydra:
        print(json.dumps([c.as_hydra() for c in cells], indent=2))
    else:
        for cell in cells:
            print(f"{cell.name:28} {len(cell.tests):3} tests")
    return 0
