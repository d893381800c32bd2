"""VM tier timings under the accelerator the probe picks (TCG on this kind of host).

- boot_to_docker_ready_s: a cold boot (no snapshot) until the Engine API answers;
- restore_to_docker_ready_s: a new QEMU restored from the booted snapshot, to the same point;
- vmtests_first_s: the whole `pytest vmtests` on the current caches (it also warms them);
  vmtests_s: the same again, every cache warm;
- vmtests_workers2_s: the whole `pytest vmtests -n 2` (what `make vm-tests` runs), warm;
- test_call_s: each VM test's own duration in the warm serial run (restore, load, run, check);
- warm_test_s: `pytest vmtests/test_docker.py::test_nginx` wall time, warm (one process);
- nginx_cold_s: `pytest vmtests -k nginx` with an empty VM cache (kernel, initramfs, root
  disk, snapshots: so it boots and loads), image builds cached; nginx_warm_s: the same, warm.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

from framework.cache import cache_root
from framework.vm.docker import Machine
from framework.vm.snapshot import VMFactory

REPO = Path(__file__).resolve().parents[2]


def _pytest(args: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one pytest process."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                   cwd=REPO, env={**os.environ, **(env or {})}, check=True, timeout=3600,
                   stdout=subprocess.DEVNULL)
    return round(time.monotonic() - started, 2)


def _call_seconds(junit: Path) -> dict[str, float]:
    return {case.get("name", ""): round(float(case.get("time", 0)), 2)
            for case in ElementTree.parse(junit).iter("testcase")}


def _without_vm_cache(tmp: Path) -> dict[str, str]:
    """An environment whose cache root shares every cache but the VM tier's."""
    root = tmp / "cache"
    root.mkdir()
    for entry in cache_root().iterdir():
        if entry.name != "vm":
            (root / entry.name).symlink_to(entry)
    return {"CIMAGES_CACHE": str(root)}


def _to_docker_ready(machine: Machine) -> float:
    started = time.monotonic()
    machine.start()
    machine.wait_for_docker()
    return round(time.monotonic() - started, 2)


def run() -> dict[str, object]:
    factory = VMFactory.prepare()
    results: dict[str, object] = {"accel": factory.accel}
    with tempfile.TemporaryDirectory(prefix="cimages-bench-vm-") as tmp:
        machine = factory.machine(Path(tmp) / "boot", booted=False)
        try:
            results["boot_to_docker_ready_s"] = _to_docker_ready(machine)
            results["boot_guest_uptime_s"] = float(machine.succeed("cut -d' ' -f1 /proc/uptime"))
        finally:
            machine.crash()
        restores = []
        for attempt in range(3):
            machine = factory.machine(Path(tmp) / f"restore{attempt}")
            try:
                restores.append(_to_docker_ready(machine))
            finally:
                machine.crash()
        results["restore_to_docker_ready_s"] = min(restores)
        results["vmtests_first_s"] = _pytest(["vmtests"])
        junit = Path(tmp) / "junit.xml"
        results["vmtests_s"] = _pytest(["vmtests", f"--junitxml={junit}"])
        results["test_call_s"] = _call_seconds(junit)
        results["vmtests_workers2_s"] = _pytest(["vmtests", "-n", "2"])
        results["warm_test_s"] = _pytest(["vmtests/test_docker.py::test_nginx"])
        results["nginx_cold_s"] = _pytest(["vmtests", "-k", "nginx"],
                                          _without_vm_cache(Path(tmp)))
        results["nginx_warm_s"] = _pytest(["vmtests", "-k", "nginx"])
    return results
