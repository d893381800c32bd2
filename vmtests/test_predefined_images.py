"""Predefined images the seed's Docker tests do not cover, under real Docker."""

from __future__ import annotations

import pytest

from framework.target import CommandFailed


@pytest.mark.image("s6")
def test_s6_image_serves_nginx_under_its_init(vm, image):
    ref = vm.load_image(image("s6"))
    vm.run_container(ref, name="s6web", ports={8001: 80})
    assert vm.wait_until_succeeds("curl -sf localhost:8001/", timeout=30) == "nginx under s6\n"
    # The init's status command answers inside the container, as a HEALTHCHECK would use it.
    assert "nginx" in vm.container_exec("s6web", "/etc/s6/status")
    with pytest.raises(CommandFailed, match=r"docker exec s6web /etc/s6/status /nowhere"):
        vm.container_exec("s6web", "/etc/s6/status", "/nowhere")  # no such state: unhealthy


@pytest.mark.image("example")
def test_example_runs_hello_and_has_alice_with_her_home(vm, image):
    ref = vm.load_image(image("example"))
    assert "Hello, world!" in vm.run_container(ref, detach=False)
    vm.succeed(f"docker create --name example {ref}")
    passwd = vm.succeed("docker cp example:/etc/passwd - | tar -xO")
    assert "alice:x:1000:100:Alice:/home/alice:/bin/sh" in passwd.splitlines()
    home = vm.succeed("docker cp example:/home/alice - | tar --numeric-owner -tv | head -1")
    assert home.split()[1] == "1000/100", home
