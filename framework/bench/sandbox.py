"""Sandbox tier timings: from `sandbox(...)` to the first long-run up (goal < 0.5 s), and
the wall time of the whole `pytest sandbox_tests` (goal < 60 s on 2 cores)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from framework.builder import build
from framework.sandbox.image import start_image

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "sandbox_tests/images/probe.yaml"
RUNS = 10


def time_to_first_long_run() -> list[float]:
    result = build(PROBE)
    start_image(result).cleanup()  # unpack the root once: the tier reuses it
    times = []
    for _ in range(RUNS):
        began = time.monotonic()
        box = start_image(result)
        try:
            box.wait_until_succeeds("/etc/s6/status")
            times.append(time.monotonic() - began)
        finally:
            box.cleanup()
    return times


def run() -> dict[str, object]:
    starts = time_to_first_long_run()
    began = time.monotonic()
    tier = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "sandbox_tests"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    return {
        "start_to_first_long_run_up_s": {"median": round(statistics.median(starts), 3),
                                         "max": round(max(starts), 3), "runs": RUNS},
        "sandbox_tests_wall_s": round(time.monotonic() - began, 1),
        "sandbox_tests_result": tier.stdout.strip().splitlines()[-1] if tier.stdout else "",
    }
