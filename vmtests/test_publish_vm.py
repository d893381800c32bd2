"""`cimages copy FILE docker-daemon:NAME:TAG` into the VM's dockerd, reached as any daemon
is: DOCKER_HOST set to the VM's docker_host URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.image("hello")
def test_copy_to_the_vms_docker_daemon_runs(vm, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "framework", "copy", str(ROOT / "images/hello.yaml"),
         "docker-daemon:hello:copied", "--frozen", "-o", str(tmp_path / "out")],
        cwd=ROOT, env={**os.environ, "DOCKER_HOST": vm.docker_host}, capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "-> docker-daemon:hello:copied" in done.stdout
    assert "Hello, world!" in vm.succeed("docker run --rm hello:copied")
