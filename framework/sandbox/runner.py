"""Runs a root's init under bubblewrap: unprivileged, own PID/IPC/network namespaces,
writable overlay over the (shared, cached) root, a fresh state directory.

Networking: by default the sandbox has a private network namespace with only loopback
up; tests reach its services by running their probes inside it (`execute`/`succeed`
enter all its namespaces). `network="host"` shares the host's network instead (for
`cimages init`, so a browser can reach the services).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from framework.errors import UserError
from framework.target import (
    TIMEOUT,
    CheckFailed,
    Target,
    TargetUnusable,
    WaitTimeout,
    retry,
)

# Root's sandboxes run as host uids/gids BASE..BASE+65535 (image uid 0 = BASE): no host
# account uses them, and image users keep distinct ids inside.
UID_BASE = 0x60000
ID_COUNT = 65536
STATE_INSIDE = "/run/s6"
LAUNCHER = Path(__file__).with_name("userns.py")
START_TIMEOUT = 10.0
# `docker stop` waits 10 s before SIGKILL; so do we.
STOP_TIMEOUT = 10.0
# Start-up is polled finely: the time to a sandbox's first service is a goal (< 0.5 s).
START_POLL = (0.001, 0.001)


# What a sandbox keeps in its folder, besides its log.
WORKDIR_PARTS = ("state", "upper", "work", "merged")


class Sandbox(Target):
    """A running sandbox: the object the `sandbox` fixture gives tests (SPEC section 6).

    The vocabulary (succeed, fail, the waits, ...) and its errors are the shared contract's
    (framework.target); this class is the transport: commands entered into the sandbox's
    namespaces with nsenter, its files read through /proc/PID/root, its init's log."""

    kind = "the sandbox"
    output_name = "log"

    def __init__(self, process: subprocess.Popen[bytes], init_pid: int, workdir: Path,
                 log: Path | None, env: Mapping[str, str], shell: list[str]) -> None:
        self.process = process
        self.init_pid = init_pid
        self.workdir = workdir
        self.log_path = log
        self.env = dict(env)
        self.shell = shell
        self.started = time.monotonic()

    # Starting ----------------------------------------------------------------------------
    @classmethod
    def start(cls, lowers: Sequence[Path], argv: Sequence[str], *,
              env: Mapping[str, str] | None = None, workdir: Path | None = None,
              cwd: str = "/", network: str = "private", capture: bool = True) -> Sandbox:
        """Start `argv` (the image's entry point) in a sandbox over the root directories
        `lowers` (topmost first). Its files go to `workdir` (a fresh temp dir if None):
        state/ (bound at /run/s6), upper/ (what the sandbox wrote), log (its output)."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise UserError("bubblewrap is not installed; run `make setup` (or apt-get "
                            "install bubblewrap)")
        if workdir is not None:
            check_workdir(workdir)
        # The sandbox's root must be able to reach these: not under a 0700 directory.
        workdir = Path(workdir or tempfile.mkdtemp(prefix="cimages-sandbox-"))
        dirs = {name: workdir / name for name in WORKDIR_PARTS}
        for path in [workdir, *dirs.values()]:
            path.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(path, UID_BASE, UID_BASE)
        command = [
            sys.executable, "-S", "-E", str(LAUNCHER),
            ":".join(str(p) for p in lowers), str(dirs["upper"]), str(dirs["work"]),
            str(dirs["merged"]), "--",
            bwrap, "--bind", str(dirs["merged"]), "/", "--proc", "/proc", "--dev", "/dev",
            "--bind", str(dirs["state"]), STATE_INSIDE,
            "--unshare-pid", "--unshare-ipc", "--as-pid-1", "--die-with-parent",
            *(["--unshare-net"] if network == "private" else []),
        ]
        log = workdir / "log" if capture else None
        status_read, status_write = os.pipe()
        command += ["--chdir", cwd, "--json-status-fd", str(status_write), "--", *argv]
        out = open(log, "ab") if log else None  # noqa: SIM115 (the child keeps it)
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                env=dict(env or {}), pass_fds=(status_write,), start_new_session=True,
            )
        finally:
            os.close(status_write)
            if out:
                out.close()
        try:
            _map_ids(process)
            init_pid = _child_pid(status_read, process, log)
            _wait_for_exec(init_pid, bwrap, process)
        except BaseException:
            _kill(process, None)
            raise
        finally:
            os.close(status_read)
        return cls(process, init_pid, workdir, log, env or {}, _shell(lowers))

    # The transport ------------------------------------------------------------------------
    def _execute(self, command: str, seconds: float) -> tuple[int, str]:
        """Shell `command` inside the sandbox (its root, namespaces, environment) as its
        root user."""
        nsenter = ["nsenter", "--target", str(self.init_pid), "--user", "--mount", "--pid",
                   "--net", "--ipc", "--root", "--", *self.shell, command]
        read_end, write_end = self._output_pipe()
        try:
            process = subprocess.Popen(nsenter, stdout=write_end, stderr=write_end,
                                       env=self.env, stdin=subprocess.DEVNULL)
        finally:
            os.close(write_end)
        try:
            status, output = _collect(process, read_end, seconds)
        finally:
            os.close(read_end)
        if status is None:
            raise WaitTimeout(f"`{command}` to finish", seconds, output, self._context())
        return status, output

    def is_up(self) -> bool:
        return self.exit_code is None

    def _gone(self) -> str:
        return f"the sandbox exited with code {self.exit_code}"

    def _recent_output(self) -> str:
        return self.logs()

    def _output_pipe(self) -> tuple[int, int]:
        """A pipe the sandbox's root owns (a FIFO, unlinked once open): commands reopen their
        output by path (`nginx -t`, `> /dev/stdout`), which a pipe of ours would refuse."""
        fifo = Path(tempfile.mktemp(dir=self.workdir, prefix="exec-"))
        os.mkfifo(fifo, 0o600)
        try:
            if os.geteuid() == 0:
                os.chown(fifo, UID_BASE, UID_BASE)
            read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            return read_end, os.open(fifo, os.O_WRONLY)
        finally:
            fifo.unlink()

    # Files, logs, services ---------------------------------------------------------------
    def path(self, inside: str) -> Path:
        """A path inside the running sandbox, as the host sees it."""
        return Path(f"/proc/{self.init_pid}/root") / inside.lstrip("/")

    def read_file(self, path: str, timeout: float = TIMEOUT) -> str:
        """The contract's read_file, through /proc/PID/root rather than a command: an image
        need not have `cat`."""
        self._ensure_up(f"reading {path}")
        try:
            return self.path(path).read_text()
        except OSError as err:
            raise CheckFailed(f"cannot read {path} in the sandbox: {err.strerror}",
                              self._context()) from None

    def logs(self) -> str:
        if self.log_path is None or not self.log_path.exists():  # not captured / cleaned up
            return ""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, regex: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """The first match of `regex` (multi-line) in the log; the log is still read once
        the init exited."""
        pattern = re.compile(regex, re.MULTILINE)
        return self.retry(lambda: pattern.search(self.logs()),
                          f"a log line matching {regex!r}", timeout, while_up=False)

    def service_status(self, name: str) -> str:
        """`ready`, `up`, `down` (long-runs); `done`, `running`, `pending`, `failed N`
        (oneshots): what the image's own status command says."""
        _, output = self.execute("/etc/s6/status")
        for line in output.splitlines():
            service, _, state = line.split(" ", 2)
            if service == name:
                return state
        raise CheckFailed(f"no service {name!r} in the status output:\n{output}")

    # Stopping ----------------------------------------------------------------------------
    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for the init to exit by itself; its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout("the sandbox to exit", timeout, context=self._context()) \
                from None

    def signal(self, signum: int) -> None:
        if self.exit_code is None:
            os.kill(self.init_pid, signum)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the init, as `docker stop` does; SIGKILL after `timeout`. Afterwards no
        process of the sandbox is left (its PID namespace dies with its init)."""
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return _kill(self.process, self.init_pid)

    def cleanup(self) -> None:
        """Stop (hard) and delete the work directory."""
        if self.exit_code is None:
            _kill(self.process, self.init_pid)
        shutil.rmtree(self.workdir, ignore_errors=True)


def check_workdir(workdir: Path) -> None:
    """A sandbox's folder is new, empty or an earlier sandbox's: it is handed (chowned) to
    the sandbox's uid, so a folder of the user's files must never be taken."""
    if workdir.is_symlink() or (workdir.exists() and not workdir.is_dir()):
        raise UserError(f"{workdir} exists and is not a directory; give a directory path for "
                        "the sandbox state")
    if not workdir.is_dir():
        return
    foreign = sorted(p.name for p in workdir.iterdir()
                     if p.name not in (*WORKDIR_PARTS, "log") and not p.name.startswith("exec-"))
    if foreign:
        raise UserError(f"{workdir} is not empty and not an earlier sandbox's folder (it holds "
                        f"{', '.join(foreign[:5])}); give a new or empty folder")


def _map_ids(process: subprocess.Popen[bytes]) -> None:
    """As root: once the launcher is in its new user namespace, map the id range."""
    assert process.stdin is not None
    if os.geteuid() != 0:
        process.stdin.close()
        return
    ours = os.readlink("/proc/self/ns/user")
    try:
        retry(lambda: os.readlink(f"/proc/{process.pid}/ns/user") != ours or None,
              "the sandbox launcher's user namespace", START_TIMEOUT,
              gone=lambda: None if process.poll() is None else "the launcher exited",
              broken_if_late=True, interval=START_POLL)
    except TargetUnusable:
        raise UserError("the sandbox launcher could not create a user namespace; "
                        "check that user namespaces are enabled "
                        "(sysctl user.max_user_namespaces)") from None
    for name in ("uid_map", "gid_map"):
        Path(f"/proc/{process.pid}/{name}").write_text(f"0 {UID_BASE} {ID_COUNT}\n")
    process.stdin.write(b"go\n")
    process.stdin.close()


def _child_pid(status_fd: int, process: subprocess.Popen[bytes], log: Path | None) -> int:
    """The init's host pid, from bwrap's first JSON status document."""
    data = b""
    deadline = time.monotonic() + START_TIMEOUT
    while b"}" not in data:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([status_fd], [], [], max(left, 0))
        chunk = os.read(status_fd, 4096) if ready else b""
        if not chunk:
            process.wait(START_TIMEOUT)
            output = log.read_text(errors="replace").strip() if log else ""
            raise UserError(f"the sandbox did not start (exit code {process.returncode}"
                            f"{': ' + output if output else ''}); bubblewrap needs user "
                            "namespaces and overlayfs in them (Linux >= 5.11)")
        data += chunk
    return int(json.loads(data[: data.index(b"}") + 1])["child-pid"])


def _collect(process: subprocess.Popen[bytes], read_end: int,
             seconds: float) -> tuple[int | None, str]:
    """The command's exit code and output; None and the output so far when it ran over
    `seconds` (it is killed). Reading stops once the command has exited and the pipe is
    drained, not at end of file, so a background process it left holding the pipe cannot
    hang us."""
    chunks: list[bytes] = []
    eof = False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not eof and select.select([read_end], [], [], 0.02)[0]:
            data = os.read(read_end, 65536)
            chunks.append(data)
            eof = not data
        elif process.poll() is not None:
            return process.returncode, b"".join(chunks).decode(errors="replace")
        elif eof:
            time.sleep(0.02)
    process.kill()
    process.wait()
    return None, b"".join(chunks).decode(errors="replace")


def _wait_for_exec(pid: int, bwrap: str, process: subprocess.Popen[bytes]) -> None:
    """bwrap reports its child's pid before the child has mounted the sandbox's root; only
    once it has exec'd the entry point can `execute` enter that root. Not having done so
    within START_TIMEOUT is not an error here: `execute` then says what is wrong."""

    def execed() -> bool | None:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except (FileNotFoundError, ProcessLookupError):
            return True  # it already exited: the caller sees the exit code
        return True if argv0 and argv0.decode(errors="replace") != bwrap else None

    with contextlib.suppress(TargetUnusable):  # TargetDied included: bwrap exited
        retry(execed, "the sandbox's entry point to start", START_TIMEOUT,
              gone=lambda: None if process.poll() is None else "bubblewrap exited",
              broken_if_late=True, interval=START_POLL)


def _kill(process: subprocess.Popen[bytes], init_pid: int | None) -> int:
    """SIGKILL the init (the kernel then kills its whole PID namespace) and let bwrap reap
    it and exit; bwrap and its session are killed only if that does not happen."""
    if init_pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init_pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait(STOP_TIMEOUT)


def _shell(lowers: Sequence[Path]) -> list[str]:
    """The image's shell for `execute`: /bin/sh, else bash or busybox's (s6 images have
    both)."""
    for path, argv in (("bin/sh", ["/bin/sh", "-c"]), ("bin/bash", ["/bin/bash", "-c"]),
                       ("bin/busybox", ["/bin/busybox", "sh", "-c"])):
        if any((lower / path).exists() or (lower / path).is_symlink() for lower in lowers):
            return argv
    return ["/bin/sh", "-c"]
