"""The VM tier's fixtures.

`vm`: a `framework.vm.Machine` (Docker ready) restored from the cached booted snapshot for
each test, on its first use, so every test starts from the same fresh state without a
boot. On failure the serial log, the dockerd log and every container's log are printed and
attached to Allure; `--keep-vm` leaves the VM running and says how to attach. QEMU dies with
pytest (PR_SET_PDEATHSIG) even when pytest is killed. (`image`, which builds what `vm` loads,
is in `images.py`: the sandbox tier resolves names the same way.)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.target import TargetError, shorten
from framework.vm.docker import Machine
from framework.vm.machine import DEFAULT_MEMORY_MIB, VMRoot
from framework.vm.snapshot import VMFactory


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cimages-vm", "cimages VM tier")
    group.addoption("--accel", choices=["kvm", "tcg"], default=None,
                    help="QEMU accelerator (default: KVM if a probe shows it works, else TCG)")
    group.addoption("--vm-memory", type=int, default=DEFAULT_MEMORY_MIB, metavar="MIB",
                    help=f"guest memory in MiB (default {DEFAULT_MEMORY_MIB})")
    group.addoption("--keep-vm", action="store_true",
                    help="leave a failed test's VM running and print how to attach to it")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"vm_report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def vm_accel(pytestconfig: pytest.Config, vm_root: VMRoot) -> str:
    """The QEMU accelerator of the session: `--accel`, else KVM when a short probe boot
    shows it works (nested KVM can hang), else TCG. The probe's answer is cached."""
    from framework.vm.accel import select_accel

    return select_accel(vm_root.kernel, pytestconfig.getoption("accel"))


@pytest.fixture(scope="session")
def vm_root() -> VMRoot:
    """The Docker host the VMs boot: framework/vm/docker-host.yaml built by the builder, its
    kernel, initramfs and ext4 root disk, cached by digest under CIMAGES_CACHE."""
    from framework.vm.host import docker_host

    return docker_host()


@pytest.fixture(scope="session")
def vm_factory(vm_root: VMRoot, vm_accel: str, pytestconfig: pytest.Config) -> VMFactory:
    """The session's VM wiring (root, accelerator, `--vm-memory`, booted snapshot):
    `vm_factory.machine(folder)` makes one more VM, e.g. a second one in a test."""
    return VMFactory(vm_root, vm_accel, pytestconfig.getoption("vm_memory"))


@pytest.fixture(scope="session")
def vm_snapshot(vm_factory: VMFactory) -> Path:
    """A VM state saved once Docker was ready, booted once and cached (per root disk,
    accelerator and `--vm-memory`); every `vm` restores it instead of booting."""
    return vm_factory.snapshot()


@pytest.fixture
def vm(request: pytest.FixtureRequest, vm_factory: VMFactory, vm_snapshot: Path,
       tmp_path: Path) -> Iterator[Machine]:
    """A QEMU VM with Docker ready (a `framework.vm.Machine`), restored from `vm_snapshot`
    on first use: `succeed`, `wait_until_succeeds`, `load_image(image("web"))`,
    `run_container(...)`, `docker_host` and the rest of the tier's contract. After the
    test it is killed; a failed test gets its serial, dockerd and container logs printed
    and attached to Allure (`--keep-vm` leaves it running and says how to attach).
    """
    machine = vm_factory.machine(tmp_path / "vm", name=request.node.name[:60])
    try:
        yield machine  # it starts on first use (see Machine._ensure_started)
    finally:
        try:
            failed = any(getattr(getattr(request.node, f"vm_report_{when}", None), "failed",
                                 False) for when in ("setup", "call"))
            if failed:
                _report_failure(machine)
            if failed and request.config.getoption("keep_vm") and machine.is_up():
                _keep(machine)
        finally:
            machine.crash()


def _report_failure(machine: Machine) -> None:
    logs: dict[str, str] = {"serial console": machine.serial_log.read_text(errors="replace")}
    if machine.is_up():
        # Short timeouts: the VM may be what failed (a failed check, or a VM broken or dead).
        with contextlib.suppress(TargetError):
            logs["dockerd log"] = machine.execute("cat /var/log/dockerd.log", timeout=10)[1]
            for name in machine.containers(timeout=10):
                logs[f"container {name} log"] = machine.execute(
                    f"docker logs {name} 2>&1", timeout=10)[1]
    screen = None
    if machine.is_up():
        with contextlib.suppress(Exception):  # a screenshot must not hide the real failure
            screen = machine.screenshot(machine.state_dir / "screen.png")
    try:
        import allure

        for title, text in logs.items():
            allure.attach(text, name=title, attachment_type=allure.attachment_type.TEXT)
        if screen:
            allure.attach.file(str(screen), name="screen",
                               attachment_type=allure.attachment_type.PNG)
    except ImportError:
        pass
    _keep_logs(machine.name, logs, screen)
    for title, text in logs.items():
        print(f"--- {title} ---\n{shorten(text)}")


def _keep_logs(test: str, logs: dict[str, str], screen: Path | None) -> None:
    """Copies into $CIMAGES_LOG_DIR (set by `cimages ci-cell`), so a CI cell publishes them."""
    folder = os.environ.get("CIMAGES_LOG_DIR")
    if not folder:
        return
    target = Path(folder) / re.sub(r"[^\w.-]+", "_", test)
    target.mkdir(parents=True, exist_ok=True)
    for title, text in logs.items():
        (target / (re.sub(r"\W+", "-", title) + ".log")).write_text(text)
    if screen:
        shutil.copy(screen, target / "screen.png")


def _keep(machine: Machine) -> None:
    """Blocks until the user is done with the VM (only with a terminal to ask on)."""
    key = machine.state_dir / "id_ed25519"
    machine.root.user_key.save(key)
    message = (f"\ncimages: --keep-vm: the VM of the failed test is running. Attach with\n"
               f"  ssh -i {key} -o StrictHostKeyChecking=no -p {machine.ssh_port} "
               f"root@127.0.0.1\nPress Enter here to stop it and go on.\n")
    try:
        with open("/dev/tty", "r+") as tty:
            tty.write(message)
            tty.flush()
            tty.readline()
    except OSError:
        print(message.replace("Press Enter", "(no terminal: stopping it now) Press Enter"),
              file=sys.stderr)

