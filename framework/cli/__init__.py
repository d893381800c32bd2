"""`cimages`: the command line. Each subcommand lives in its own module here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from framework.cli import build, ci_cell, evaluate, init, lock, matrix, options, report, vm
from framework.errors import UserError

COMMANDS = [evaluate, options, matrix, ci_cell, report, build, lock, init, vm]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="cimages",
        description="Declarative container images: build, run in a sandbox, test in a VM.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as err:
        print(f"cimages: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("cimages: interrupted", file=sys.stderr)
        return 130
