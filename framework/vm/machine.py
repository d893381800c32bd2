"""`QemuMachine`: one QEMU VM, the VM tier's transport of the shared test-target contract
(framework.target, SPEC section 6), as QemuMachine is in the NixOS test driver.

The vocabulary (succeed, fail, the waits, read_file) and the error family come from Target;
this class starts the VM (a boot or a snapshot restore), runs commands through the VM's agent
(agent.py: a virtio-serial port, no login to wait for after a restore) and says whether QEMU
still runs; SSH serves interactive shells and --keep-vm's attach. Its timeouts
are stretched for the accelerator (`scaled`), and its command waits loop inside the guest in
one command (`_wait_until`).
"""

from __future__ import annotations

import base64
import contextlib
import io
import shlex
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paramiko
from qemu.qmp import ConnectError, ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

from framework.atomic import temporary_sibling
from framework.net import free_port
from framework.target import (
    TIMEOUT,
    CheckFailed,
    CommandFailed,
    RequestRefused,
    Target,
    TargetDied,
    TargetUnusable,
    WaitAbandoned,
    WaitTimeout,
    awaited,
    shorten,
)
from framework.vm import rootdisk, ssh
from framework.vm.accel import KVM_MACHINE, TIMEOUT_FACTOR, qemu_binary
from framework.vm.agent import Agent, AgentLost, CommandTimeout, qemu_args
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
# init_on_free: pages the guest frees are zeroed, which a snapshot stores as a flag rather
# than 4 KiB (dockerd's spent load buffers, the initramfs).
KERNEL_ARGS = "console=tty0 console=ttyS0 quiet panic=-1 oops=panic init_on_free=1"
MIGRATE_BANDWIDTH = 64 << 30
# Snapshots are zstd streams: a third of the size (a booted VM 264 -> 83 MB, most of the
# cache after a `make test`) for 0.56 s more to save one and 0.1-0.2 s more to restore one
# (measured alternating, quiet machine: 0.65-0.69 s against 0.73-0.89 s to Docker ready).
COMPRESS = "zstd -1 -T2 -q -c"
DECOMPRESS = "zstd -dcq"
SNAPSHOT_FORMAT = "zstd"  # bytes per second: no limit that matters
# The VM's start-up waits are polled finely: a restore takes well under two seconds.
START_POLL = (0.01, 0.01)
T = TypeVar("T")


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


# The VM tier's name for a failed check before the tiers shared one error family.
MachineError = CheckFailed


class QemuMachine(Target):
    kind = "the VM"
    output_name = "serial console"

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
        self._console: Console | None = None
        self._qmp: QEMUMonitorProtocol | None = None
        self._ssh: paramiko.SSHClient | None = None
        self._agent: Agent | None = None
        # forward_port's forwards, set up again by every start: a restore is a new QEMU.
        self._forwards: dict[int, int] = {}

    # -- timing -------------------------------------------------------------------------
    def scaled(self, seconds: float) -> float:
        """`seconds` as meant under KVM, stretched for a slower accelerator."""
        return seconds * TIMEOUT_FACTOR[self.accel]

    def _start_wait(self, attempt: Callable[[], T | None], what: str, timeout: float,
                    last: Callable[[], str] | None = None,
                    interval: tuple[float, float] = START_POLL) -> T:
        """A wait of the VM's own (start-up, restore, snapshot): running late there is a
        broken VM, not a failed check."""
        return self.retry(attempt, what, timeout, last=last, broken_if_late=True,
                          interval=interval)

    # -- lifecycle ----------------------------------------------------------------------
    def _argv(self, disk: Path, qmp_path: Path) -> list[str]:
        cmdline = " ".join([
            KERNEL_ARGS,
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
                "-qmp", f"unix:{qmp_path},server=on,wait=off",
                *qemu_args(self._agent_path)]
        if self.snapshot is not None:
            argv += ["-incoming", f"exec:{DECOMPRESS} {shlex.quote(str(self.snapshot))}"]
        return argv

    def start(self) -> None:
        """Boots the VM (or restores it from `snapshot`) and waits until its agent answers."""
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
            except TargetDied:
                # Another process took the forwarded port between probe and bind: retry.
                if "Could not set up host forwarding" not in self._console.text \
                        or attempt == SSH_PORT_RETRIES - 1:
                    raise
                self._console.close()
        for host_port, guest_port in self._forwards.items():
            self._add_forward(host_port, guest_port)
        # Connected before the guest runs: what it writes for this run finds a reader.
        self._agent = Agent(self._agent_path)
        if self.snapshot is not None:
            self._resume_incoming()
        self._wait_for_agent()
        if self.snapshot is not None:
            # The guest's clock still says when the snapshot was taken. The agent sets it
            # before it reads the next frame (no round trip, no `date` exec).
            self._agent.set_clock(time.time())
            self.pristine = True

    def restore(self, snapshot: Path) -> None:
        """Replaces this VM by a fresh one restored from `snapshot`. What the Machine set up
        on the host side (forward_port's forwards, docker_host) carries over."""
        self._kill()
        self.snapshot = snapshot
        self.start()

    def _connect_qmp(self, path: Path) -> QEMUMonitorProtocol:
        def attempt() -> QEMUMonitorProtocol | None:
            # The socket file appears at bind(), a moment before QEMU listens on it.
            if not path.exists():
                return None
            qmp = QEMUMonitorProtocol(str(path))
            try:
                qmp.connect()
                qmp.settimeout(30)
                return qmp
            except ConnectError:
                qmp.close()
                return None

        return self._start_wait(attempt, f"QEMU to accept QMP connections on {path}", 10)

    def _resume_incoming(self) -> None:
        status = ""

        def attempt() -> bool | None:
            nonlocal status
            status = self.qmp("query-status")["status"]
            if status in ("paused", "postmigrate"):
                self.qmp("cont")
                return True
            return True if status == "running" else None

        self._start_wait(attempt, f"the snapshot {self.snapshot} to load", 60,
                         last=lambda: f"status {status}")

    @property
    def _agent_path(self) -> Path:
        return self.state_dir / "agent.sock"

    def _wait_for_agent(self) -> None:
        assert self._agent is not None
        answered = self._agent.ping()
        self._start_wait(lambda: True if answered.is_set() else None,
                         "the VM's command agent to answer", 30 if self.snapshot else 120)

    def _connect_ssh(self) -> None:
        last = ""

        def attempt() -> paramiko.SSHClient | None:
            nonlocal last
            sock = ssh.sshd_socket(self.ssh_port, timeout=1)
            if sock is None:
                return None
            try:
                return ssh.connect(sock, self.root.user_key, self.root.host_key, timeout=5)
            except (OSError, paramiko.SSHException, EOFError) as err:
                sock.close()
                last = repr(err)
                return None

        self._ssh = self._start_wait(attempt, f"SSH on port {self.ssh_port} to answer",
                                     30 if self.snapshot else 60, last=lambda: last,
                                     interval=(0.05, 0.05))

    def _ensure_started(self) -> None:
        """Machines start on first use, so a test whose first step is restoring a derived
        snapshot (docker.py) pays for one restore, not two."""
        if self._console is None:
            self.start()

    def is_up(self) -> bool:
        return self._console is not None and self._console.alive()

    def _gone(self) -> str:
        return "the VM died (QEMU exited)"

    def _recent_output(self) -> str:
        return self._console.text.replace("\r\n", "\n") if self._console else ""

    def qmp(self, command: str, **args: Any) -> Any:
        self._ensure_started()
        if self._qmp is None:
            raise TargetUnusable("the VM is not started")
        try:
            return self._qmp.cmd(command, **args)
        except ExecuteError as err:
            raise TargetUnusable(f"QMP {command} failed: {err}") from None

    def shutdown(self, timeout: float = 30) -> None:
        """An ACPI power-off; the VM is killed if it does not stop in time."""
        if not self.is_up():
            return
        self.qmp("system_powerdown")
        with contextlib.suppress(TargetUnusable):
            self._start_wait(lambda: None if self.is_up() else True, "the VM to power off",
                             timeout, interval=(0.1, 0.1))
        self.crash()

    def crash(self) -> None:
        """Stops the VM at once, like pulling the plug."""
        self._kill()

    def _kill(self) -> None:
        """Ends the QEMU process and the connections to it."""
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None
        if self._agent is not None:
            self._agent.close()
            self._agent = None
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
        unless `resume`. The SSH session is closed first so the snapshot holds none; the
        agent's connection stays (a restore connects anew)."""
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None
        tmp = temporary_sibling(path)
        written = tmp.with_name(tmp.name + ".done")
        self.qmp("stop")
        # QEMU caps a migration at 128 MiB/s by default, a limit meant for a network
        # shared with a running guest: a paused one saved to a file goes at disk speed.
        self.qmp("migrate-set-parameters", **{"max-bandwidth": MIGRATE_BANDWIDTH})
        # QEMU does not wait for the command it migrates into: the rename says it is done.
        self.qmp("migrate", uri=f"exec:{COMPRESS} > {shlex.quote(str(tmp))} && "
                                f"mv {shlex.quote(str(tmp))} {shlex.quote(str(written))}")
        state = ""

        def attempt() -> bool | None:
            nonlocal state
            state = self.qmp("query-migrate").get("status")
            if state == "failed":
                raise TargetUnusable("saving the VM snapshot failed (migration failed)")
            return True if state == "completed" and written.exists() else None

        try:
            self._start_wait(attempt, "the VM snapshot to be saved", 120,
                             last=lambda: f"migration {state}", interval=(0.02, 0.02))
        finally:
            tmp.unlink(missing_ok=True)
        written.replace(path)
        if resume:
            self.qmp("cont")

    # -- commands -----------------------------------------------------------------------
    def _client(self) -> paramiko.SSHClient:
        """The Machine's SSH connection (interactive shells), logged into on first use."""
        self._ensure_started()
        if self._ssh is None:
            self._connect_ssh()
        assert self._ssh is not None
        return self._ssh

    def _agent_for(self, doing: str) -> Agent:
        """The agent's connection, for a command or another request (an Engine API call, a
        connection to a VM socket) that is `doing` something."""
        self._ensure_up(doing)
        assert self._agent is not None
        return self._agent

    def _execute(self, command: str, seconds: float,
                 stdin: io.BufferedIOBase | None = None) -> tuple[int, str]:
        """A test's command: the VM is no longer as restored."""
        self.pristine = False
        return self._run(command, seconds, stdin)

    def _run(self, command: str, seconds: float, stdin: io.BufferedIOBase | None = None,
             shown: str | None = None, doing: str | None = None) -> tuple[int, str]:
        """_execute for the framework's own commands, which keep the VM pristine. `shown`:
        the command as messages name it, `doing` what it is for (a wait's loop is named by
        the command it retries and the wait)."""
        shown = shown or command
        doing = doing or f"running `{shown}`"
        agent = self._agent_for(doing)
        try:
            return agent.run(command, seconds, stdin)
        except CommandTimeout as err:
            raise WaitTimeout(f"`{shown}` to finish", seconds, err.output,
                              self._context()) from None
        except AgentLost as err:
            raise self._lost(doing, str(err)) from None

    def _lost(self, doing: str, why: str) -> TargetUnusable:
        """The error for a connection to the VM that broke: TargetDied when QEMU exited (given a
        moment, as the connection may close before the process has ended)."""
        with contextlib.suppress(TargetUnusable):
            self.retry(lambda: None if self.is_up() else True, "QEMU to exit", 1,
                       while_up=False, broken_if_late=True)
        if not self.is_up():
            return self._died(doing)
        return TargetUnusable(f"{doing} failed: {why}", self._context())

    def _succeed_with_input(self, command: str, stdin: io.BufferedIOBase,
                            timeout: float = 120) -> str:
        """succeed() with `stdin` fed to the command (copy_from_host's tar stream)."""
        self._ensure_up(f"running `{command}`")
        status, output = self._execute(command, self.scaled(timeout), stdin)
        if status != 0:
            raise CommandFailed(command, status, output, self._context())
        return output

    def interact(self, banner: str = "") -> int:
        """An interactive shell on the local terminal; its exit status."""
        from framework.vm.interactive import shell

        self._ensure_up("starting a shell")
        self.pristine = False
        return shell(self._client(), banner)

    def _wait_until(self, command: str, succeed: bool, timeout: float) -> str:
        """The contract's command waits, run inside the guest (see wait_in_vm)."""
        return self.wait_in_vm(command, succeed=succeed, timeout=timeout)

    def wait_in_vm(self, command: str, succeed: bool, timeout: float,
                   give_up_if: str | None = None, gave_up: str = "") -> str:
        """Retries `command` in the VM until it succeeds (or fails) and returns its output.

        The loop runs inside the VM as one command, as each round trip costs a tenth
        of a second under TCG. Each attempt's output goes to a file, so a background process
        left holding it cannot stall the loop. `give_up_if`, a shell condition checked after
        each attempt that missed, ends the wait at once (a terminal state) with
        WaitAbandoned saying `gave_up`. A VM that dies ends it with TargetDied.
        """
        seconds = self.scaled(timeout)
        done = "-eq 0" if succeed else "-ne 0"
        # Builtins where possible (a subshell, not `bash -c`; $$, not mktemp): every exec
        # costs tens of milliseconds under TCG, and the loop shares the one vCPU with what
        # it waits for. The pause between attempts is a `read -t` on a pipe nobody writes
        # (a coprocess's output, one fork per wait; its stderr away from the agent's pipe)
        # instead of an exec of sleep: 127 ms against 230 ms per 0.1 s pause under TCG.
        script = "\n".join([
            f"deadline=$((SECONDS + {int(seconds) + 1}))",
            "out=/tmp/.cimages-wait-$$",
            "trap 'rm -f \"$out\"' EXIT",
            "coproc NAP { read -r; } 2>/dev/null",
            f"command={shlex.quote(command)}",
            "while :; do",
            "  ( eval \"$command\" ) >\"$out\" 2>&1 </dev/null",
            f"  if [ $? {done} ]; then cat \"$out\"; exit 0; fi",
            f"  if {give_up_if}; then cat \"$out\"; exit 3; fi" if give_up_if else "",
            "  if [ $SECONDS -ge $deadline ]; then cat \"$out\"; exit 1; fi",
            "  read -rt 0.1 -u \"${NAP[0]}\"",
            "done",
        ])
        what = awaited(command, succeed)
        self.pristine = False
        status, out = self._run(script, seconds + self.scaled(30), shown=command,
                                doing=f"waiting for {what}")
        if status == 3:
            raise WaitAbandoned(what, gave_up, out, self._context())
        if status == 1:
            raise WaitTimeout(what, seconds, out, self._context())
        if status != 0:
            raise TargetUnusable(f"the loop waiting for {what} ended with exit {status}: "
                                 f"{shorten(out)}", self._context())
        return out

    def wait_for_console_text(self, regex: str, timeout: float = TIMEOUT) -> str:
        """The first text matching `regex` the serial console showed (since the start)."""
        what = f"the console to show {regex!r}"
        self._ensure_up(f"waiting for {what}")
        assert self._console is not None
        seconds = self.scaled(timeout)
        try:
            return self._console.wait_for(regex, seconds).group(0)
        except TimeoutError:
            raise WaitTimeout(what, seconds, context=self._context()) from None
        except RuntimeError:
            raise self._died(f"waiting for {what}") from None

    def send_console(self, text: str) -> None:
        """Types on the serial console (e.g. into the initramfs emergency shell)."""
        self._ensure_up("typing on the console")
        assert self._console is not None
        self._console.send(text)

    # -- files, ports, screen -------------------------------------------------------------
    def copy_from_host(self, source: str | Path, target: str) -> None:
        """Copies a host file or directory to the path `target` in the VM."""
        source = Path(source)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(source, arcname=Path(target).name)
        buffer.seek(0)
        parent = shlex.quote(str(Path(target).parent))
        self._succeed_with_input(f"mkdir -p {parent} && tar -x -C {parent}", buffer)

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
            raise RequestRefused(f"cannot forward host port {host_port}: {reply.strip()}; "
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

