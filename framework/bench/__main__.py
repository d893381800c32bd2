"""Runs each benchmark in BENCHMARKS (a module with `run() -> dict`) and writes the JSON:
`python -m framework.bench [NAME ...]`."""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from framework.atomic import write_atomic
from framework.errors import run_entry_point

# Each entry: a module under framework.bench exposing `run() -> dict[str, object]`.
BENCHMARKS: list[str] = ["builder", "sandbox", "vm", "publish"]


def main(names: list[str]) -> int:
    """Runs the named benchmarks (all without names); a partial run updates their entries in
    the existing results and keeps the others."""
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"bench: unknown benchmark {', '.join(unknown)}; choose from "
              f"{', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    out = Path("bench/results.json")
    results: dict[str, object] = json.loads(out.read_text()) if names and out.exists() else {}
    results.update({
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    for name in names or BENCHMARKS:
        print(f"bench: {name}", file=sys.stderr)
        results[name] = importlib.import_module(f"framework.bench.{name}").run()
    out.parent.mkdir(exist_ok=True)
    write_atomic(out, json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


raise SystemExit(run_entry_point("bench", lambda: main(sys.argv[1:])))
