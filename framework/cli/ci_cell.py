"""`cimages ci-cell IMAGE TIER --out DIR`: run one matrix cell and write its reports."""

from __future__ import annotations

import argparse
from pathlib import Path

from framework.ci.cell import run_cell


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("ci-cell", help="run one matrix cell, writing junit.xml, "
                         "allure-results/, logs/ and nix-support/hydra-build-products")
    cmd.add_argument("image", help="image name (a file in images/)")
    cmd.add_argument("tier", help="sandbox or vm")
    cmd.add_argument("--out", required=True, type=Path, help="output directory")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_cell(Path.cwd(), args.image, args.tier, args.out)
