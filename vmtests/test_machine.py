"""The Machine API itself (SPEC section 6) on the restored VM: console, files, ports, screen."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest

from framework.errors import UserError
from framework.net import free_port
from framework.target import CommandFailed, TargetDied, WaitTimeout


def test_console_files_ports_and_screen(vm, tmp_path: Path):
    vm.succeed("echo cimages-console-check > /dev/console")
    vm.wait_for_console_text(r"cimages-console-check", timeout=10)

    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "hello.txt").write_text("from the host\n")
    vm.copy_from_host(tmp_path / "up", "/srv/up")
    assert vm.succeed("cat /srv/up/hello.txt") == "from the host\n"
    vm.succeed("echo from the vm > /srv/up/back.txt")
    back = vm.copy_from_vm("/srv/up/back.txt", tmp_path / "down")
    assert back.read_text() == "from the vm\n"

    vm.succeed("mkdir -p /srv/www && echo served > /srv/www/index.html")
    vm.succeed("busybox httpd -p 8080 -h /srv/www")
    vm.wait_for_open_port(8080, timeout=20)
    host_port = free_port()
    vm.forward_port(host_port, 8080)
    with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/index.html", timeout=30) as r:
        assert r.read() == b"served\n"
    vm.succeed("pkill -f 'httpd -p 8080'")
    vm.wait_for_closed_port(8080, timeout=20)

    png = vm.screenshot(tmp_path / "screen.png")
    assert png.read_bytes().startswith(b"\x89PNG")


def test_failures_say_what_and_show_output(vm):
    with pytest.raises(CommandFailed, match=r"`echo oops; exit 3` exited 3; output:\noops"):
        vm.succeed("echo oops; exit 3")
    assert "nope" in vm.fail("echo nope; false")
    with pytest.raises(WaitTimeout, match=r"timed out .* waiting for `false` to succeed"):
        vm.wait_until_succeeds("false", timeout=1)
    # A background process holding stdout open must not hang the command.
    assert vm.succeed("sleep 600 & echo started", timeout=20) == "started\n"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        taken = sock.getsockname()[1]
        with pytest.raises(UserError, match="cannot forward host port"):
            vm.forward_port(taken, 80)


def test_a_vm_that_dies_ends_a_wait_at_once_and_is_no_failed_check(vm):
    """The contract's fail-fast: a wait on a VM that powered off ends then, with TargetDied
    (not an AssertionError: the VM broke, no check failed), not at its timeout."""
    vm.succeed("(sleep 1; echo o > /proc/sysrq-trigger) >/dev/null 2>&1 &")
    began = time.monotonic()
    with pytest.raises(TargetDied, match="the VM died") as died:
        vm.wait_until_succeeds("false", timeout=60)
    assert not isinstance(died.value, AssertionError)
    assert time.monotonic() - began < vm.scaled(30)
    with pytest.raises(TargetDied):
        vm.succeed("true")
