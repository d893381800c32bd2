"""`cimages eval FILE [--option a.b.c] [--json]`: the merged configuration."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from framework.options import evaluate


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("eval", help="print the merged configuration of a definition")
    cmd.add_argument("file", help="image definition (YAML)")
    cmd.add_argument("--option", help="only this option (dotted path, e.g. image.name)")
    cmd.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = evaluate(args.file)
    for warning in result.warnings:
        print(f"cimages: warning: {warning}", file=sys.stderr)
    value = result.get(args.option) if args.option else result.config
    if args.json:
        print(json.dumps(value, indent=2, sort_keys=True))
    elif isinstance(value, str | int | float | bool) or value is None:
        print("null" if value is None else str(value).lower() if isinstance(value, bool) else value)
    else:
        print(yaml.safe_dump(value, sort_keys=True, default_flow_style=False), end="")
    return 0
