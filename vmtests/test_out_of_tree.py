"""Adoptable anywhere: a new repository that only `pip install`s a wheel of cimages (no
conftest, no checkout on its path) gets the fixtures and the `image` marker, and its own
sandbox and VM tests pass. It shares this machine's caches (CIMAGES_CACHE and pip's), so
its VM restores the booted snapshot instead of booting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

WEB = """\
# A page served by busybox httpd, supervised by the image's s6 init.
image:
  name: web
  exposedPorts: [8080]
environment:
  systemPackages: [busybox]
  etc:
    www/index.html: {text: "hello from web\\n"}
s6:
  services:
    httpd:
      execStart: busybox httpd -f -p 8080 -h /etc/www
      path: [coreutils]
      readiness: 8080
"""
# The same package request as WEB ([bash, busybox, coreutils, execline, s6]: s6 services add
# bash, execline and s6), so its lock serves WEB and the build needs no apt resolution.
LOCK_OF_THE_SAME_PACKAGES = ROOT / "sandbox_tests/images/slow-listener.lock"

SANDBOX_TEST = '''
import pytest


@pytest.mark.image("web")
def test_web_serves_its_page(sandbox):
    box = sandbox("web")
    page = box.wait_until_succeeds("busybox wget -qO- http://127.0.0.1:8080/")
    assert page == "hello from web\\n"
    assert "s6-init: all services started" in box.logs()
'''

VM_TEST = '''
import pytest


@pytest.mark.image("web")
def test_web_answers_through_docker(vm, image):
    ref = vm.load_image(image("web"))
    vm.run_container(ref, name="web", ports={8080: 8080})
    page = vm.wait_until_succeeds("curl -sf localhost:8080/", timeout=60)
    assert page == "hello from web\\n"
'''

PYPROJECT = """\
[tool.pytest.ini_options]
# importlib: sandbox_tests/test_web.py and vmtests/test_web.py share a basename.
addopts = "-ra --strict-markers --strict-config --import-mode=importlib"
testpaths = ["sandbox_tests", "vmtests"]
"""


def run(cmd: list[str | Path], *, cwd: Path, timeout: float,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (f"{' '.join(map(str, cmd))} exited {done.returncode}:\n"
                                  f"{done.stdout[-4000:]}\n{done.stderr[-3000:]}")
    return done


def build_wheel(out: Path) -> Path:
    """A wheel of this checkout, built from a copy: setuptools writes build/ and *.egg-info
    beside the sources, and the checkout's build/ holds image outputs."""
    source = out / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "framework", source / "framework", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out / "dist", source],
        cwd=out, timeout=300)
    (wheel,) = (out / "dist").glob("cimages-*.whl")
    return wheel


def check_wheel(wheel: Path) -> None:
    """Every data file of the package (definitions, locks, scripts) and the entry point are
    in the wheel: a missing one would only show on a machine without this checkout."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    data = {str(p.relative_to(ROOT)) for p in (ROOT / "framework").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert data - names == set(), "package data missing from the wheel: add its suffix to " \
                                  "[tool.setuptools.package-data] in pyproject.toml"
    assert "[pytest11]\ncimages = framework.pytest_plugin.plugin" in entry_points, entry_points


def write_project(folder: Path) -> None:
    """The other repository: its image, one test per tier, pytest settings, no conftest."""
    files = {"images/web.yaml": WEB, "sandbox_tests/test_web.py": SANDBOX_TEST,
             "vmtests/test_web.py": VM_TEST, "pyproject.toml": PYPROJECT}
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(textwrap.dedent(text).lstrip())
    shutil.copy(LOCK_OF_THE_SAME_PACKAGES, folder / "images/web.lock")


@pytest.mark.timeout(1800)
def test_a_repository_with_the_installed_wheel_passes_both_tiers(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    wheel = build_wheel(tmp_path)
    check_wheel(wheel)
    timings["wheel"] = time.monotonic() - started

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path, timeout=120)
    run([venv / "bin/python", "-m", "pip", "install", "-q", wheel], cwd=tmp_path, timeout=600)
    timings["venv"] = time.monotonic() - started - timings["wheel"]

    project = tmp_path / "web-project"
    write_project(project)
    # Nothing of this run may leak in: no path to the checkout, none of pytest's (xdist's
    # worker ids, PYTEST_ADDOPTS with options the fresh venv lacks). CIMAGES_CACHE stays.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")
           and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    where = run([venv / "bin/python", "-c", "import framework; print(framework.__file__)"],
                cwd=project, env=env, timeout=60)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    tiers = run([venv / "bin/pytest", "-rA", "--durations=3", "-p", "no:cacheprovider",
                 "sandbox_tests", "vmtests"], cwd=project, env=env, timeout=1500)
    timings["tiers"] = time.monotonic() - started - timings["wheel"] - timings["venv"]
    print(tiers.stdout[-3000:])
    print("out-of-tree: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    passed = {line.split()[1] for line in tiers.stdout.splitlines() if line.startswith("PASSED ")}
    assert passed == {"sandbox_tests/test_web.py::test_web_serves_its_page",
                      "vmtests/test_web.py::test_web_answers_through_docker"}, tiers.stdout
    assert "2 passed" in tiers.stdout.splitlines()[-1], tiers.stdout[-2000:]
    # Passed: drop the ~700 MB of build outputs and the venv, kept for a failure only.
    shutil.rmtree(project / "build", ignore_errors=True)
    shutil.rmtree(venv, ignore_errors=True)
