"""The seed project's 7 Docker tests (nix, from, exposedPorts, nginx, env, systemd, s6) plus
hello and empty: each image is loaded into the VM's dockerd and run there."""

from __future__ import annotations

import re

import pytest

from framework.target import WaitAbandoned

HERE_IMAGES = "vmtests/images"


def in_order(log: str, *patterns: str) -> None:
    """Each pattern appears in `log`, after the previous one."""
    position = 0
    for pattern in patterns:
        found = re.compile(pattern, re.MULTILINE).search(log, position)
        assert found, f"{pattern!r} not found after offset {position} in:\n{log[-3000:]}"
        position = found.end()


@pytest.mark.image("nginx")
def test_nginx(vm, image):
    ref = vm.load_image(image("nginx"))
    vm.run_container(ref, name="web", ports={8000: 80})
    out = vm.wait_while_running("web", "curl -sf localhost:8000/plop", timeout=30)
    assert "plop" in out


@pytest.mark.image("hello")
def test_hello(vm, image):
    ref = vm.load_image(image("hello"))
    assert "Hello, world!" in vm.run_container(ref, detach=False)


@pytest.mark.image("empty")
def test_empty(vm, image):
    ref = vm.load_image(image("empty"))
    size = vm.api("GET", f"/images/{ref}/json")["Size"]
    assert size < 1_000_000, f"the empty image is {size} bytes"


def test_env(vm, image):
    ref = vm.load_image(image(f"{HERE_IMAGES}/env.yaml"))
    assert re.search(r"^KEY=value$", vm.run_container(ref, detach=False), re.MULTILINE)


def test_exposedPorts(vm, image):
    ref = vm.load_image(image(f"{HERE_IMAGES}/exposed-ports.yaml"))
    vm.run_container(ref, name="exposed", options="-P")
    assert re.search(r"^5000/tcp -> 0\.0\.0\.0:\d+$", vm.succeed("docker port exposed"),
                     re.MULTILINE)


@pytest.mark.image("hello")
def test_from(vm, image):
    result = image(f"{HERE_IMAGES}/from.yaml")
    base = image("hello")
    assert len(result.layers) > len(base.layers) - 1, "the base image's layers come first"
    ref = vm.load_image(result)
    assert "Hello, world!" in vm.run_container(ref, detach=False)


@pytest.mark.image("nix")
def test_nix(vm, image):
    ref = vm.load_image(image("nix"))
    assert re.search(r"nix \(Nix\) \d+\.\d+", vm.run_container(ref, "nix", "--version",
                                                             detach=False))


@pytest.mark.image("example-systemd")
def test_systemd(vm, image):
    ref = vm.load_image(image("example-systemd"))
    vm.run_container(ref, name="systemd")
    vm.wait_for_container_log("systemd", "dependent services 2", timeout=30)
    in_order(vm.container_logs("systemd"), r"dependent services 1", r"dependent services 2")


def test_s6(vm, image):
    ref = vm.load_image(image(f"{HERE_IMAGES}/s6-failing.yaml"))
    vm.run_container(ref, name="s6")
    # A wait on a container that stops ends then, with its exit code and logs, not at timeout.
    with pytest.raises(WaitAbandoned, match=r"(?s)container s6 stopped.*exited with code 3.*"
                                           r"failing starts"):
        vm.wait_for_container_log("s6", "never logged", timeout=60)
    assert vm.wait_for_container_exit("s6", timeout=30) == 3
    logs = vm.container_logs("s6")
    assert "bystander up" in logs
    in_order(logs, r"failing starts",
             r"s6-init: failing failed with exit code 3; stopping the container",
             r"bystander got TERM")
