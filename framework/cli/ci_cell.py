"""`cimages ci-cell CELL --out DIR` (or `IMAGE TIER`): run one matrix cell, write its reports."""

from __future__ import annotations

import argparse
from pathlib import Path

from framework.ci.cell import run_cell
from framework.ci.matrix import find_cell, find_image_cell
from framework.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("ci-cell", help="run one matrix cell, writing junit.xml, "
                         "allure-results/, logs/ and nix-support/hydra-build-products")
    cmd.add_argument("cell", nargs="+", metavar="CELL | IMAGE TIER",
                     help="a cell name as `cimages matrix` lists it (nginx-vm, vm-untagged), "
                     "or an image name and a tier (sandbox or vm); the image \"\" stands for "
                     "the tier's tests that name no image")
    cmd.add_argument("--out", required=True, type=Path, help="output directory")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    root = Path.cwd()
    if len(args.cell) == 1:
        cell = find_cell(root, args.cell[0])
    elif len(args.cell) == 2:
        cell = find_image_cell(root, *args.cell)
    else:
        raise UserError("ci-cell takes one cell name (e.g. nginx-vm) or an image and a tier "
                        f"(e.g. nginx vm), not {len(args.cell)} arguments")
    return run_cell(root, cell, args.out)
