"""The test-target contract both tiers share (framework.target, SPEC section 6): the same
methods with the same signatures and defaults on the Sandbox and the VM Machine, one error
family (a failed check is an AssertionError, a broken target is not), one retry with the
same fail-fast on a dead target, one place output is shortened, and one VM factory.

No VM and no sandbox is started: a third transport runs commands in a host shell, and the
tiers' own classes are given a dead target (an exited process, a QEMU console that ended)."""

from __future__ import annotations

import inspect
import pickle
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from framework.errors import OUTPUT_SHOWN, UserError, shorten
from framework.sandbox.runner import Sandbox
from framework.target import (
    TIMEOUT,
    VOCABULARY,
    CheckFailed,
    CommandFailed,
    RequestRefused,
    Target,
    TargetDied,
    TargetError,
    TargetUnusable,
    WaitAbandoned,
    WaitTimeout,
    retry,
)
from framework.vm import snapshot
from framework.vm.docker import Machine
from framework.vm.machine import QemuMachine, VMRoot
from framework.vm.ssh import KeyPair

REPO = Path(__file__).resolve().parent.parent


class HostShell(Target):
    """A transport in a dozen lines: commands in a host shell; `alive` says whether it runs."""

    kind = "the host shell"
    output_name = "shell"

    def __init__(self, env: dict[str, str] | None = None, factor: float = 1.0) -> None:
        self.alive = True
        self.env = env
        self.factor = factor
        self.commands: list[str] = []
        self.said = ""

    def _execute(self, command: str, seconds: float) -> tuple[int, str]:
        self.commands.append(command)
        done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                              timeout=seconds, env=self.env, check=False)
        return done.returncode, done.stdout + done.stderr

    def is_up(self) -> bool:
        return self.alive

    def _recent_output(self) -> str:
        return self.said

    def scaled(self, seconds: float) -> float:
        return seconds * self.factor


# -- one vocabulary ---------------------------------------------------------------------


@pytest.mark.parametrize("tier", [Sandbox, QemuMachine, Machine])
@pytest.mark.parametrize("name", VOCABULARY)
def test_both_tiers_have_the_vocabulary_with_one_signature(tier: type[Target], name: str):
    assert issubclass(tier, Target)
    assert inspect.signature(getattr(tier, name)) == inspect.signature(getattr(Target, name))
    default = inspect.signature(getattr(Target, name)).parameters.get("timeout")
    assert default is not None and default.default == TIMEOUT


def test_the_tiers_implement_only_their_transport():
    """succeed, fail and the waits are written once; the VM replaces only the wait hook
    (its loop runs inside the guest), the sandbox only read_file (no `cat` needed)."""
    overridden = {tier: {name for name in (*VOCABULARY, "_wait_until", "retry")
                         if getattr(tier, name) is not getattr(Target, name)}
                  for tier in (Sandbox, Machine)}
    assert overridden == {Sandbox: {"read_file"}, Machine: {"_wait_until"}}
    for tier in (Sandbox, QemuMachine):
        assert {"_execute", "is_up"} <= set(vars(tier))


def test_the_tiers_share_the_default_timeouts():
    for tier in (Sandbox, Machine):
        assert inspect.signature(tier.wait_for_log if tier is Sandbox else
                                 tier.wait_for_console_text).parameters["timeout"].default \
            == TIMEOUT


# -- one error family -------------------------------------------------------------------


def test_a_failed_check_is_an_assertion_error_and_a_broken_target_is_not():
    for failed in (CheckFailed, CommandFailed, WaitTimeout, WaitAbandoned):
        assert issubclass(failed, AssertionError) and issubclass(failed, TargetError)
    for broken in (TargetUnusable, TargetDied):
        assert issubclass(broken, TargetError) and not issubclass(broken, AssertionError)
    assert issubclass(RequestRefused, UserError) and issubclass(RequestRefused, TargetError)
    assert not issubclass(RequestRefused, AssertionError)


def test_errors_carry_their_fields_and_survive_pickling():
    failed = CommandFailed("echo oops; exit 3", 3, "oops\n", "last log lines:\n  | x")
    assert (failed.command, failed.status, failed.output) == ("echo oops; exit 3", 3, "oops\n")
    assert str(failed) == "`echo oops; exit 3` exited 3; output:\noops\n\nlast log lines:\n  | x"
    assert "`true` unexpectedly succeeded" in str(CommandFailed("true", 0, ""))
    late = WaitTimeout("`false` to succeed", 1.3, "nope")
    assert (late.what, late.timeout, late.last) == ("`false` to succeed", 1.3, "nope")
    assert str(late) == "timed out after 1.3 s waiting for `false` to succeed; last output:\nnope"
    gave_up = WaitAbandoned("`curl x` to succeed", "container web stopped", "refused")
    assert str(gave_up).startswith("container web stopped while waiting for `curl x`")
    died = TargetDied("the VM died (QEMU exited)", "running `true`")
    assert (died.gone, died.doing) == ("the VM died (QEMU exited)", "running `true`")
    for error in (failed, late, gave_up, died, RequestRefused("invalid name")):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        assert vars(again) == vars(error)


def test_output_is_shortened_in_one_place():
    assert shorten("short") == "short"
    long = "".join(f"line {n}\n" for n in range(2000))
    cut = shorten(long)
    assert cut.endswith("line 1999\n") and len(cut) < OUTPUT_SHOWN + 60
    assert re.match(rf"\[{len(long) - OUTPUT_SHOWN} earlier characters not shown\]\n", cut)
    assert len(str(CommandFailed("x", 1, long))) < OUTPUT_SHOWN + 100


# -- one retry --------------------------------------------------------------------------


def test_a_wait_returns_the_output_of_the_attempt_that_succeeded(tmp_path: Path):
    shell = HostShell()
    flag = tmp_path / "n"
    command = f"echo x >> {flag}; [ $(wc -l < {flag}) -ge 3 ] && echo third"
    assert shell.wait_until_succeeds(command, timeout=10) == "third\n"
    assert len(shell.commands) == 3
    assert shell.wait_until_fails("echo still; false", timeout=10) == "still\n"


def test_a_wait_that_runs_late_says_what_and_the_last_output():
    shell = HostShell(factor=2)
    shell.said = "the target's own words"
    began = time.monotonic()
    with pytest.raises(WaitTimeout) as late:
        shell.wait_until_succeeds("echo not yet; false", timeout=0.2)
    assert 0.4 <= time.monotonic() - began < 3, "the timeout is scaled, and kept"
    assert late.value.timeout == 0.4 and late.value.last == "not yet\n"
    assert re.match(r"timed out after 0\.4 s waiting for `echo not yet; false` to succeed; "
                    r"last output:\nnot yet\n\nlast shell lines:\n  \| the target's own words$",
                    str(late.value))


def test_a_wait_on_a_target_that_died_ends_at_once_and_is_no_failed_check():
    shell = HostShell()
    attempts = 0

    def dies_on_the_second() -> None:
        nonlocal attempts
        attempts += 1
        shell.alive = attempts < 2

    began = time.monotonic()
    with pytest.raises(TargetDied, match="the host shell is not running while waiting for "
                                         "`false` to succeed") as died:
        shell.retry(lambda: dies_on_the_second(), "`false` to succeed", 30)
    assert time.monotonic() - began < 5 and attempts == 2
    assert not isinstance(died.value, AssertionError)
    with pytest.raises(TargetDied, match="while running `true`"):
        shell.succeed("true")


def test_failed_commands_are_command_failed_with_the_targets_output():
    shell = HostShell()
    shell.said = "what the target said last"
    with pytest.raises(CommandFailed, match=r"`echo oops; exit 3` exited 3; output:\noops") \
            as failed:
        shell.succeed("echo oops; exit 3")
    assert failed.value.status == 3 and "what the target said last" in failed.value.context
    assert shell.fail("echo nope; false") == "nope\n"
    with pytest.raises(CommandFailed, match="unexpectedly succeeded"):
        shell.fail("true")


def test_the_retry_alone_and_its_start_up_mode():
    assert retry(lambda: 0, "zero", 1) == 0, "only None is a miss"
    with pytest.raises(TargetDied, match="the launcher exited while waiting for it"):
        retry(lambda: None, "it", 10, gone=lambda: "the launcher exited")
    with pytest.raises(TargetUnusable, match=r"timed out after 0\.05 s waiting for QMP") as late:
        retry(lambda: None, "QMP", 0.05, broken_if_late=True)
    assert not isinstance(late.value, AssertionError)


def test_files_and_ports_through_the_vocabulary(tmp_path: Path):
    shell = HostShell()
    (tmp_path / "there").write_text("content\n")
    shell.wait_for_file(str(tmp_path / "there"), timeout=5)
    assert shell.read_file(str(tmp_path / "there")) == "content\n"
    with pytest.raises(WaitTimeout, match="waiting for `test -e"):
        shell.wait_for_file(str(tmp_path / "not there"), timeout=0.2)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        shell.wait_for_open_port(port, timeout=10)
    shell.wait_for_closed_port(port, timeout=10)


def test_a_port_probe_without_tools_never_passes_by_accident():
    shell = HostShell(env={"PATH": "/nonexistent"})
    with pytest.raises(WaitTimeout, match="neither nc nor bash"):
        shell.wait_for_closed_port(1, timeout=0.3)
    with pytest.raises(WaitTimeout, match="neither nc nor bash"):
        shell.wait_for_open_port(1, timeout=0.3)


# -- the tiers' own classes on a dead target --------------------------------------------


def test_a_sandbox_whose_init_exited_is_a_dead_target(tmp_path: Path):
    process = subprocess.Popen(["/bin/sh", "-c", "exit 3"])
    process.wait()
    log = tmp_path / "log"
    log.write_text("s6-init: failing failed with exit code 3; stopping the container\n")
    box = Sandbox(process, process.pid, tmp_path, log, {}, ["/bin/sh", "-c"])
    with pytest.raises(TargetDied, match=r"(?s)the sandbox exited with code 3 while running "
                                         r"`true`\nlast log lines:\n  \| s6-init: failing"):
        box.succeed("true")
    with pytest.raises(TargetDied, match="while waiting for `true` to succeed"):
        box.wait_until_succeeds("true")
    assert box.wait_for_log(r"stopping the container").group(0) == "stopping the container"


class _EndedConsole:
    text = "Kernel panic - not syncing\n"

    def alive(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _root(tmp_path: Path) -> VMRoot:
    key = KeyPair(b"", "")
    return VMRoot("sha256:0", tmp_path / "vmlinux", tmp_path / "initrd", tmp_path / "disk",
                  ["/init"], key, key)


def test_a_vm_whose_qemu_exited_is_a_dead_target(tmp_path: Path):
    vm = Machine(_root(tmp_path), "tcg", tmp_path / "vm")
    assert vm.scaled(10) == 40, "TCG stretches every timeout"
    vm._console = _EndedConsole()  # type: ignore[assignment]
    for call in (lambda: vm.succeed("true"), lambda: vm.wait_until_succeeds("true"),
                 lambda: vm.read_file("/etc/hostname"), lambda: vm.wait_for_open_port(80)):
        with pytest.raises(TargetDied, match=r"(?s)the VM died \(QEMU exited\) while .*"
                                             r"last serial console lines:\n  \| Kernel panic"):
            call()


# -- one VM factory ---------------------------------------------------------------------


def test_one_factory_wires_every_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    made: list[tuple[VMRoot, str, int]] = []

    def booted(root: VMRoot, accel: str, memory_mib: int) -> Path:
        made.append((root, accel, memory_mib))
        return tmp_path / "booted.state"

    monkeypatch.setattr(snapshot, "booted_snapshot", booted)
    factory = snapshot.VMFactory(_root(tmp_path), "tcg", 2048)
    cold = factory.machine(tmp_path / "cold", booted=False)
    assert (cold.root, cold.accel, cold.memory_mib, cold.snapshot) == \
        (factory.root, "tcg", 2048, None)
    first, second = factory.machine(tmp_path / "a", "a"), factory.machine(tmp_path / "b")
    assert first.snapshot == second.snapshot == tmp_path / "booted.state"
    assert first.name == "a" and made == [(factory.root, "tcg", 2048)], "booted once"


def test_no_other_place_constructs_a_machine():
    constructs = re.compile(r"(?<![\w.])(Machine|QemuMachine)\(")
    places = [f"{path.relative_to(REPO)}:{number}"
              for path in sorted((REPO / "framework").rglob("*.py"))
              for number, line in enumerate(path.read_text().splitlines(), 1)
              if constructs.search(line) and not line.lstrip().startswith("class ")]
    assert len(places) == 1 and places[0].startswith("framework/vm/snapshot.py:"), places
