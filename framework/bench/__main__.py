"""Runs each benchmark in BENCHMARKS (a module with `run() -> dict`) and writes the JSON."""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path

from framework.atomic import write_atomic

# Each entry: a module under framework.bench exposing `run() -> dict[str, object]`.
BENCHMARKS: list[str] = ["builder", "sandbox", "vm"]


def main() -> int:
    results: dict[str, object] = {
        "machine": {"cpus": len(__import__("os").sched_getaffinity(0)),
                    "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for name in BENCHMARKS:
        print(f"bench: {name}", file=sys.stderr)
        results[name] = importlib.import_module(f"framework.bench.{name}").run()
    out = Path("bench/results.json")
    out.parent.mkdir(exist_ok=True)
    write_atomic(out, json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


raise SystemExit(main())
