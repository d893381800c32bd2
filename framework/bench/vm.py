"""VM tier timings under the accelerator the probe picks (TCG on this kind of host).

- boot_to_docker_ready_s: a cold boot (no snapshot) until the Engine API answers;
- restore_to_docker_ready_s: a new QEMU restored from the booted snapshot, to the same point;
- naive / ours (test_nginx's steps, one run each, warm caches): `naive_nginx_s` is what a
  driver without snapshots does per test: boot, `docker load` of the image as built (one
  layer per package), `docker run -p` and curl until nginx answers; `ours_nginx_s` is
  restore + load_image + run_container + the same check; `ours_speedup` is their ratio;
- vmtests_first_s: the whole `pytest vmtests` on the current caches (it also warms them);
  vmtests_s: the same again, every cache warm; test_call_s: each test's own duration in it;
- vmtests_workers2_s: the whole `pytest vmtests -n 2` (what `make vm-tests` runs), warm;
- warm_test_s: `pytest vmtests/test_docker.py::test_nginx` wall time, warm (one process);
- nginx_cold_s: `pytest vmtests -k nginx` with an empty VM cache (kernel, initramfs, root
  disk, snapshots: so it boots and loads), image builds cached; nginx_warm_s: the same, warm;
- nginx_after_edit_s: the same right after one /etc file of nginx.yaml changed (a new
  stamp each run), so nginx is rebuilt and reloaded; edit_over_warm: its ratio to warm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO
from xml.etree import ElementTree

from framework.bench.subject import DEFINITION, variant
from framework.builder import build
from framework.cache import cache_root
from framework.vm.docker import Machine
from framework.vm.fileserver import served
from framework.vm.snapshot import VMFactory

REPO = Path(__file__).resolve().parents[2]
NGINX_CHECK = "curl -sf localhost:8000/plop"


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


def _edited_images(tmp: Path) -> Path:
    """A copy of images/ whose nginx.yaml has one /etc file more, new on every call."""
    folder = tmp / "images"
    folder.mkdir(exist_ok=True)
    for definition in (REPO / "images").iterdir():
        if not definition.name.startswith("nginx.") and not (folder / definition.name).exists():
            (folder / definition.name).symlink_to(definition)
    variant(folder, f"edited at {time.time()}\n", "nginx.yaml")
    return folder


def _to_docker_ready(machine: Machine) -> float:
    started = time.monotonic()
    machine.start()
    machine.wait_for_docker()
    return round(time.monotonic() - started, 2)


def _naive_nginx(factory: VMFactory, state: Path) -> float:
    archive = build(DEFINITION).archive
    assert archive is not None, "build() writes the docker-archive by default"
    started = time.monotonic()
    machine = factory.machine(state, booted=False)
    try:
        machine.start()
        machine.wait_for_docker()
        with served(lambda out: _copy(archive, out)) as url:
            machine.succeed(f"set -o pipefail; curl -sSf {url} | docker load", timeout=900)
        machine.succeed("docker run -d --name web -p 8000:80 nginx:latest")
        machine.wait_until_succeeds(NGINX_CHECK, timeout=120)
    finally:
        machine.crash()
    return round(time.monotonic() - started, 2)


def _copy(path: Path, out: BinaryIO) -> None:
    with path.open("rb") as data:
        shutil.copyfileobj(data, out, 1 << 20)


def _ours_nginx(factory: VMFactory, state: Path) -> float:
    image = build(DEFINITION)
    started = time.monotonic()
    machine = factory.machine(state)
    try:
        ref = machine.load_image(image)
        machine.run_container(ref, name="web", ports={8000: 80})
        machine.wait_while_running("web", NGINX_CHECK, timeout=120)
    finally:
        machine.crash()
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
        ours = results["ours_nginx_s"] = _ours_nginx(factory, Path(tmp) / "ours")
        naive = results["naive_nginx_s"] = _naive_nginx(factory, Path(tmp) / "naive")
        results["ours_speedup"] = round(naive / ours, 2)
        results["nginx_cold_s"] = _pytest(["vmtests", "-k", "nginx"],
                                          _without_vm_cache(Path(tmp)))
        warm = results["nginx_warm_s"] = _pytest(["vmtests", "-k", "nginx"])
        edited = _edited_images(Path(tmp))
        after = results["nginx_after_edit_s"] = _pytest(
            ["vmtests", "-k", "nginx", "-o", f"cimages_images={edited}"])
        results["edit_over_warm"] = round(after / warm, 2)
    return results
