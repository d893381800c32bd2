"""`cimages options`: the Markdown reference of every option."""

from __future__ import annotations

import argparse

from framework.modules.docs import render


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("options", help="print the Markdown reference of every option")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from framework.options import ALL_MODULES

    print(render(ALL_MODULES), end="")
    return 0
