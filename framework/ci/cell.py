"""Runs one matrix cell and leaves what a CI (or Hydra) publishes: junit.xml,
allure-results/, logs/ and nix-support/hydra-build-products listing them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from framework.ci.matrix import Cell
from framework.errors import shorten

# A cell runs long (VM boots); this bounds it well under CI's own limit.
CELL_TIMEOUT = 30 * 60


def run_cell(root: Path, cell: Cell, out: Path) -> int:
    """Runs the cell's tests (every one by node id) with pytest in `root`; returns pytest's
    exit code, which `nix-support/failed` records for Hydra as well."""
    out = out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    junit, allure = out / "junit.xml", out / "allure-results"
    log = logs / "pytest.log"
    with log.open("w") as sink:
        try:
            code = subprocess.run(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}",
                 f"--alluredir={allure}", "--clean-alluredir",
                 "-o", f"junit_suite_name={cell.name}", *cell.tests],
                cwd=root, stdout=sink, stderr=subprocess.STDOUT, timeout=CELL_TIMEOUT,
                # The tiers' plugins copy serial/dockerd/container logs here as well.
                env={**os.environ, "CIMAGES_LOG_DIR": str(logs)},
            ).returncode
        except subprocess.TimeoutExpired:
            sink.write(f"\ncimages ci-cell: {cell.name} ran over {CELL_TIMEOUT} s and was "
                       "stopped\n")
            code = 124
    sys.stdout.write(shorten(log.read_text()))
    products = out / "nix-support" / "hydra-build-products"
    products.parent.mkdir(exist_ok=True)
    lines = [f"report junit {junit}", f"report allure {allure}"]
    lines += [f"file log {path}" for path in sorted(logs.iterdir())]
    products.write_text("\n".join(lines) + "\n")
    if code:
        (out / "nix-support" / "failed").touch()
    return code
