"""`Machine`: one QEMU VM, driven NixOS-test-driver style (SPEC section 6).

Every wait has a timeout scaled by the accelerator and fails with what it waited for and
the last output seen; a VM that died ends any wait at once.
"""

from __future__ import annotations

import base64
import contextlib
import io
import shlex
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from qemu.qmp import ConnectError, ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

from framework.atomic import temporary_sibling
from framework.errors import UserError
from framework.net import free_port
from framework.vm import rootdisk, ssh
from framework.vm.accel import KVM_MACHINE, TIMEOUT_FACTOR, qemu_binary
from framework.vm.console import Console
from framework.vm.png import ppm_to_png

DEFAULT_MEMORY_MIB = 1024
SSH_PORT_RETRIES = 3
# TCG emulates AVX slowly and glibc picks AVX string functions when it sees them: a CPU
# model without AVX is markedly faster.
TCG_CPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt"
# vCPUs per accelerator. Under TCG one: two MTTCG vCPUs on a busy two-core host were seen
# to deadlock in the guest (soft lockups on both CPUs), and two were barely faster.
SMP = {"kvm": 2, "tcg": 1}


@dataclass(frozen=True)
class VMRoot:
    """What a VM boots: built once per VM root digest."""

    digest: str
    kernel: Path
    initramfs: Path
    disk: Path  # raw ext4, mounted read-only by the guest
    init: list[str]  # the root's own init and its arguments
    user_key: ssh.KeyPair
    host_key: ssh.KeyPair


class MachineError(AssertionError):
    """A VM command or wait failed; the message says what and shows the last output."""


class WaitAbandoned(MachineError):
    """A wait ended early because what it waited on reached a terminal state."""


class QemuMachine:
    def __init__(self, root: VMRoot, accel: str, state_dir: Path, name: str = "machine",
                 memory_mib: int = DEFAULT_MEMORY_MIB, snapshot: Path | None = None) -> None:
        self.root = root
        self.accel = accel
        self.name = name
        self.memory_mib = memory_mib
        self.snapshot = snapshot
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.serial_log = state_dir / "serial.log"
        self.ssh_port = 0
        # True while nothing ran in the VM since it was restored: its state is then exactly
        # the snapshot's, so a further snapshot can be derived from it (see docker.py).
        self.pristine = False
        # After a restore the guest clock still says when the snapshot was taken: it is set
        # by the first command run, which saves a round trip (a third of a second under TCG).
        self._clock_stale = False
        self._console: Console | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self._ssh: paramiko.SSHClient | None = None
        # forward_port's forwards, set up again by every start: a restore is a new QEMU.
        self._forwards: dict[int, int] = {}

    # -- timing -------------------------------------------------------------------------
    def timeout(self, seconds: float) -> float:
        """`seconds` as meant under KVM, stretched for a slower accelerator."""
        return seconds * TIMEOUT_FACTOR[self.accel]

    # -- lifecycle ----------------------------------------------------------------------
    def _argv(self, disk: Path, qmp_path: Path) -> list[str]:
        cmdline = " ".join([
            "console=tty0 console=ttyS0 quiet panic=-1 oops=panic",
            f"cimages.init={base64.b64encode(' '.join(self.root.init).encode()).decode()}",
            f"cimages.ssh_key={self.root.user_key.b64('public')}",
            f"cimages.host_key={self.root.host_key.b64('private')}",
        ])
        machine = KVM_MACHINE if self.accel == "kvm" else ["-M", "q35", "-cpu", TCG_CPU]
        argv = [qemu_binary(), "-name", self.name, "-accel", self.accel, *machine,
                "-smp", str(SMP[self.accel]),
                "-m", str(self.memory_mib), "-nodefaults", "-no-user-config",
                "-display", "none", "-device", "VGA", "-no-reboot", "-serial", "stdio",
                "-kernel", str(self.root.kernel), "-initrd", str(self.root.initramfs),
                "-append", cmdline,
                "-drive", f"file={disk},if=virtio,format=qcow2,cache=unsafe",
                "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
                "-device", "virtio-net-pci,netdev=net0",
                "-device", "virtio-rng-pci",
                "-qmp", f"unix:{qmp_path},server=on,wait=off"]
        if self.snapshot is not None:
            argv += ["-incoming", f"exec:cat {shlex.quote(str(self.snapshot))}"]
        return argv

    def start(self) -> None:
        """Boots the VM (or restores it from `snapshot`) and waits until SSH works."""
        if self._console is not None:
            return
        disk = rootdisk.overlay(self.root.disk, self.state_dir)
        qmp_path = self.state_dir / "qmp.sock"
        for attempt in range(SSH_PORT_RETRIES):
            qmp_path.unlink(missing_ok=True)
            self.ssh_port = free_port()
            self._console = Console(self._argv(disk, qmp_path), self.serial_log)
            try:
                self._qmp = self._connect_qmp(qmp_path)
                break
            except MachineError:
                # Another process took the forwarded port between probe and bind: retry.
                if "Could not set up host forwarding" not in self._console.text \
                        or attempt == SSH_PORT_RETRIES - 1:
                    raise
                self._console.close()
        for host_port, guest_port in self._forwards.items():
            self._add_forward(host_port, guest_port)
        if self.snapshot is not None:
            self._resume_incoming()
        self._connect_ssh()
        if self.snapshot is not None:
            self._clock_stale = True
            self.pristine = True

    def restore(self, snapshot: Path) -> None:
        """Replaces this VM by a fresh one restored from `snapshot`. What the Machine set up
        on the host side (forward_port's forwards, docker_host) carries over."""
        self._kill()
        self.snapshot = snapshot
        self.start()

    def _connect_qmp(self, path: Path) -> QEMUMonitorProtocol:
        # The socket file appears at bind(), a moment before QEMU listens on it.
        deadline = time.monotonic() + 10
        while True:
            self._check_alive("the QMP socket to accept")
            if path.exists():
                qmp = QEMUMonitorProtocol(str(path))
                try:
                    qmp.connect()
                    qmp.settimeout(30)
                    return qmp
                except ConnectError:
                    qmp.close()
            if time.monotonic() > deadline:
                raise MachineError(f"QEMU did not accept QMP connections on {path} within "
                                   f"10 s; console:\n{self.console_tail()}")
            time.sleep(0.01)

    def _resume_incoming(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            status = self.qmp("query-status")["status"]
            if status in ("paused", "postmigrate"):
                self.qmp("cont")
                return
            if status == "running":
                return
            if time.monotonic() > deadline:
                raise MachineError(f"restoring {self.snapshot} did not finish within 60 s "
                                   f"(status {status})")
            self._check_alive("the snapshot to load")
            time.sleep(0.01)

    def _connect_ssh(self) -> None:
        timeout = self.timeout(30 if self.snapshot else 60)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive("SSH to answer")
            sock = ssh.sshd_socket(self.ssh_port, timeout=1)
            if sock is None:
                time.sleep(0.05)
                continue
            try:
                self._ssh = ssh.connect(sock, self.root.user_key, self.root.host_key, timeout=5)
                return
            except (OSError, paramiko.SSHException, EOFError) as err:
                sock.close()
                last = repr(err)
                time.sleep(0.05)
        raise MachineError(f"SSH on port {self.ssh_port} did not answer within {timeout:.0f} s "
                           f"(last error {last}); console:\n{self.console_tail()}")

    def _check_alive(self, waiting_for: str) -> None:
        if self._console is None or not self._console.alive():
            raise MachineError(f"the VM died while waiting for {waiting_for}; last console "
                               f"output:\n{self.console_tail()}")

    def _ensure_started(self) -> None:
        """Machines start on first use, so a test whose first step is restoring a derived
        snapshot (docker.py) pays for one restore, not two."""
        if self._console is None:
            self.start()

    def is_up(self) -> bool:
        return self._console is not None and self._console.alive()

    def qmp(self, command: str, **args: Any) -> Any:
        self._ensure_started()
        if self._qmp is None:
            raise MachineError("the VM is not started")
        try:
            return self._qmp.cmd(command, **args)
        except ExecuteError as err:
            raise MachineError(f"QMP {command} failed: {err}") from None

    def shutdown(self, timeout: float = 30) -> None:
        """An ACPI power-off; the VM is killed if it does not stop in time."""
        if not self.is_up():
            return
        self.qmp("system_powerdown")
        deadline = time.monotonic() + self.timeout(timeout)
        while self.is_up() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.crash()

    def crash(self) -> None:
        """Stops the VM at once, like pulling the plug."""
        self._kill()

    def _kill(self) -> None:
        """Ends the QEMU process and the connections to it."""
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None
        if self._qmp is not None:
            # QEMU may be gone already, or close the socket mid-reply: the kill below ends it.
            with contextlib.suppress(Exception):
                self._qmp.cmd("quit")
            with contextlib.suppress(Exception):
                self._qmp.close()
            self._qmp = None
        if self._console is not None:
            self._console.close()
            self._console = None

    def take_snapshot(self, path: Path, resume: bool = False) -> None:
        """Saves the whole VM state to `path` (stop + migrate to file); the VM is left paused
        unless `resume`. The SSH session is closed first so the snapshot holds none."""
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None
        tmp = temporary_sibling(path)
        self.qmp("stop")
        self.qmp("migrate", uri=f"exec:cat > {shlex.quote(str(tmp))}")
        deadline = time.monotonic() + 120
        while (state := self.qmp("query-migrate").get("status")) != "completed":
            if state == "failed" or time.monotonic() > deadline:
                raise MachineError(f"saving the VM snapshot failed (migration {state})")
            time.sleep(0.02)
        tmp.replace(path)
        if resume:
            self.qmp("cont")
            self._connect_ssh()

    # -- commands -----------------------------------------------------------------------
    def _client(self) -> paramiko.SSHClient:
        if self._ssh is None:
            self.start()
        assert self._ssh is not None
        return self._ssh

    def execute(self, command: str, timeout: float = 60,
                stdin: io.BufferedIOBase | None = None) -> tuple[int, str]:
        """(exit status, output) of a shell command run as root in the VM."""
        self._ensure_started()
        self.pristine = False
        return self._run(command, timeout, stdin)

    def _run(self, command: str, timeout: float,
             stdin: io.BufferedIOBase | None = None) -> tuple[int, str]:
        """execute() for the framework's own commands, which keep the VM pristine."""
        self._ensure_started()
        self._check_alive(f"`{command}`")
        shown = command
        if self._clock_stale:
            command = f"date -u -s @{time.time():.3f} >/dev/null 2>&1\n{command}"
            self._clock_stale = False
        try:
            return ssh.run(self._client(), command, self.timeout(timeout), stdin)
        except TimeoutError as err:
            raise MachineError(str(err).replace(command, shown)) from None
        except (ConnectionError, paramiko.SSHException) as err:
            raise MachineError(f"`{shown}` failed: {err}; console:\n{self.console_tail()}") \
                from None

    def succeed(self, *commands: str, timeout: float = 60) -> str:
        """Runs each command; fails on the first non-zero exit. Returns the joined output."""
        output = ""
        for command in commands:
            status, out = self.execute(command, timeout)
            if status != 0:
                raise MachineError(f"`{command}` exited {status}; output:\n{out[-3000:]}")
            output += out
        return output

    def fail(self, *commands: str, timeout: float = 60) -> str:
        """Runs each command; each must exit non-zero."""
        output = ""
        for command in commands:
            status, out = self.execute(command, timeout)
            if status == 0:
                raise MachineError(f"`{command}` unexpectedly succeeded; output:\n{out[-3000:]}")
            output += out
        return output

    def interact(self, banner: str = "") -> int:
        """An interactive shell on the local terminal; its exit status."""
        from framework.vm.interactive import shell

        self._ensure_started()
        if self._clock_stale:
            self._run("true", 30)
        self.pristine = False
        return shell(self._client(), banner)

    def wait_until_succeeds(self, command: str, timeout: float = 60) -> str:
        """Retries `command` until it exits 0; its output."""
        return self.wait_in_vm(command, succeed=True, timeout=timeout)

    def wait_until_fails(self, command: str, timeout: float = 60) -> str:
        """Retries `command` until it exits non-zero; its output."""
        return self.wait_in_vm(command, succeed=False, timeout=timeout)

    def wait_in_vm(self, command: str, succeed: bool, timeout: float,
                   give_up_if: str | None = None, gave_up: str = "") -> str:
        """Retries `command` in the VM until it succeeds (or fails) and returns its output.

        The loop runs inside the VM as one SSH command, as each SSH round trip costs a third
        of a second under TCG. Each attempt's output goes to a file, so a background process
        left holding it cannot stall the loop. `give_up_if`, a shell condition checked after
        each attempt that missed, ends the wait at once (a terminal state) with `gave_up`.
        """
        seconds = self.timeout(timeout)
        done = "-eq 0" if succeed else "-ne 0"
        # Builtins where possible (a subshell, not `bash -c`; $$, not mktemp): every exec
        # costs tens of milliseconds under TCG.
        script = "\n".join([
            f"deadline=$((SECONDS + {int(seconds) + 1}))",
            "out=/tmp/.cimages-wait-$$",
            "trap 'rm -f \"$out\"' EXIT",
            f"command={shlex.quote(command)}",
            "while :; do",
            "  ( eval \"$command\" ) >\"$out\" 2>&1 </dev/null",
            f"  if [ $? {done} ]; then cat \"$out\"; exit 0; fi",
            f"  if {give_up_if}; then cat \"$out\"; exit 3; fi" if give_up_if else "",
            "  if [ $SECONDS -ge $deadline ]; then cat \"$out\"; exit 1; fi",
            "  sleep 0.1",
            "done",
        ])
        status, out = self.execute(script, timeout + 30)
        what = f"`{command}` to {'succeed' if succeed else 'fail'}"
        if status == 3:
            raise WaitAbandoned(f"{gave_up} while waiting for {what}; last output:\n"
                               f"{out[-3000:]}")
        if status == 1:
            raise MachineError(f"timed out after {seconds:.0f} s waiting for {what}; "
                               f"last output:\n{out[-3000:]}")
        if status != 0:
            raise MachineError(f"waiting for {what} failed (exit {status}): {out[-3000:]}")
        return out

    def wait_for_open_port(self, port: int, addr: str = "127.0.0.1", timeout: float = 60) -> None:
        tcp = shlex.quote(f"exec 3<>/dev/tcp/{addr}/{int(port)}")
        self.wait_until_succeeds(f"nc -z -w 1 {shlex.quote(addr)} {int(port)} 2>&1 || "
                                 f"bash -c {tcp}", timeout)

    def wait_for_closed_port(self, port: int, addr: str = "127.0.0.1",
                             timeout: float = 60) -> None:
        tcp = shlex.quote(f"exec 3<>/dev/tcp/{addr}/{int(port)}")
        self.wait_until_fails(f"bash -c {tcp} 2>/dev/null", timeout)

    def wait_for_file(self, path: str, timeout: float = 60) -> None:
        self.wait_until_succeeds(f"test -e {shlex.quote(path)}", timeout)

    def wait_for_console_text(self, regex: str, timeout: float = 60) -> str:
        self._ensure_started()
        if self._console is None:
            raise MachineError("the VM is not started")
        try:
            return self._console.wait_for(regex, self.timeout(timeout)).group(0)
        except (TimeoutError, RuntimeError) as err:
            raise MachineError(str(err)) from None

    def send_console(self, text: str) -> None:
        """Types on the serial console (e.g. into the initramfs emergency shell)."""
        self._ensure_started()
        if self._console is None:
            raise MachineError("the VM is not started")
        self._console.send(text)

    def console_tail(self, chars: int = 3000) -> str:
        return self._console.tail(chars) if self._console else ""

    # -- files, ports, screen -------------------------------------------------------------
    def copy_from_host(self, source: str | Path, target: str) -> None:
        """Copies a host file or directory to the path `target` in the VM."""
        source = Path(source)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(source, arcname=Path(target).name)
        buffer.seek(0)
        parent = shlex.quote(str(Path(target).parent))
        self._expect_ok(f"mkdir -p {parent} && tar -x -C {parent}", buffer)

    def copy_from_vm(self, source: str, target_dir: str | Path) -> Path:
        """Copies a VM file or directory into the host folder `target_dir`; returns its path."""
        target_dir = Path(target_dir)
        target_dir.mkdir(parents=True, exist_ok=True)
        src = Path(source)
        command = f"tar -c -C {shlex.quote(str(src.parent))} {shlex.quote(src.name)} | base64 -w0"
        data = base64.b64decode(self.succeed(command, timeout=120))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(target_dir, filter="data")
        return target_dir / src.name

    def _expect_ok(self, command: str, stdin: io.BufferedIOBase, timeout: float = 120) -> str:
        status, out = self.execute(command, timeout, stdin)
        if status != 0:
            raise MachineError(f"`{command}` exited {status}; output:\n{out[-3000:]}")
        return out

    def forward_port(self, host_port: int, guest_port: int) -> None:
        """Forwards 127.0.0.1:host_port on the host to guest_port in the VM (QEMU user
        networking, loopback only). The forward lasts as long as this Machine: it is set up
        again whenever the VM is restarted or restored (each is a new QEMU process)."""
        self._ensure_started()
        if self._forwards.get(host_port) == guest_port:
            return
        self._add_forward(host_port, guest_port)
        self._forwards[host_port] = guest_port

    def _add_forward(self, host_port: int, guest_port: int) -> None:
        rule = f"tcp:127.0.0.1:{int(host_port)}-:{int(guest_port)}"
        reply = self.qmp("human-monitor-command", **{"command-line": f"hostfwd_add net0 {rule}"})
        if reply:
            raise UserError(f"cannot forward host port {host_port}: {reply.strip()}; "
                            "choose a free port")

    def screenshot(self, path: str | Path) -> Path:
        """The VGA screen as PNG (QEMU writes PPM; converted here without extra packages)."""
        path = Path(path)
        with tempfile.TemporaryDirectory() as tmp:
            ppm = Path(tmp) / "screen.ppm"
            self.qmp("screendump", filename=str(ppm))
            path.write_bytes(ppm_to_png(ppm.read_bytes()))
        return path

    def __enter__(self) -> QemuMachine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.crash()

