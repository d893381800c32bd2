"""`cimages report [RESULTS...] [-o DIR]`: the Allure HTML report of test results."""

from __future__ import annotations

import argparse
from pathlib import Path

from framework.ci.report import generate


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("report", help="generate the Allure HTML report")
    cmd.add_argument("results", nargs="*", type=Path, default=[Path("allure-results")],
                     help="allure-results directories (default: allure-results)")
    cmd.add_argument("-o", "--out", type=Path, default=Path("allure-report"),
                     help="report directory (default: allure-report)")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(f"report: {generate(args.results, args.out) / 'index.html'}")
    return 0
