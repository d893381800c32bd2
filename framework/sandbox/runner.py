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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from framework.errors import UserError

# Root's sandboxes run as host uids/gids BASE..BASE+65535 (image uid 0 = BASE): no host
# account uses them, and image users keep distinct ids inside.
UID_BASE = 0x60000
ID_COUNT = 65536
STATE_INSIDE = "/run/s6"
LAUNCHER = Path(__file__).with_name("userns.py")
START_TIMEOUT = 10.0
# `docker stop` waits 10 s before SIGKILL; so do we.
STOP_TIMEOUT = 10.0
LOG_TAIL = 30
T = TypeVar("T")


# What a sandbox keeps in its folder, besides its log.
WORKDIR_PARTS = ("state", "upper", "work", "merged")

class Sandbox:
    """A running sandbox: the object the `sandbox` fixture gives tests (SPEC section 6)."""

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

    # Running commands inside -------------------------------------------------------------
    def execute(self, command: str, timeout: float = 30.0) -> tuple[int, str]:
        """Run shell `command` inside the sandbox (its root, namespaces, environment) as
        its root user; returns (exit code, stdout+stderr)."""
        if self.exit_code is not None:
            raise AssertionError(f"cannot run `{command}`: the sandbox exited with code "
                                 f"{self.exit_code}\n{self._tail()}")
        nsenter = ["nsenter", "--target", str(self.init_pid), "--user", "--mount", "--pid",
                   "--net", "--ipc", "--root", "--", *self.shell, command]
        read_end, write_end = self._output_pipe()
        try:
            process = subprocess.Popen(nsenter, stdout=write_end, stderr=write_end,
                                       env=self.env, stdin=subprocess.DEVNULL)
        finally:
            os.close(write_end)
        try:
            return _collect(process, read_end, timeout, command, self._tail)
        finally:
            os.close(read_end)

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

    def succeed(self, command: str, timeout: float = 30.0) -> str:
        code, output = self.execute(command, timeout)
        if code != 0:
            raise AssertionError(f"`{command}` failed with exit code {code}:\n{output}\n"
                                 f"{self._tail()}")
        return output

    def fail(self, command: str, timeout: float = 30.0) -> str:
        code, output = self.execute(command, timeout)
        if code == 0:
            raise AssertionError(f"`{command}` succeeded but was expected to fail:\n"
                                 f"{output}\n{self._tail()}")
        return output

    def wait_until_succeeds(self, command: str, timeout: float = 10.0) -> str:
        last = ""

        def attempt() -> tuple[str] | None:  # a tuple: an empty output is still success
            nonlocal last
            code, last = self.execute(command, timeout)
            return (last,) if code == 0 else None

        return self._poll(attempt, lambda: f"`{command}` to succeed (last output: {last!r})",
                          timeout)[0]

    # Files, logs, services ---------------------------------------------------------------
    def path(self, inside: str) -> Path:
        """A path inside the running sandbox, as the host sees it."""
        return Path(f"/proc/{self.init_pid}/root") / inside.lstrip("/")

    def read_file(self, inside: str) -> str:
        return self.path(inside).read_text()

    def wait_for_file(self, inside: str, timeout: float = 10.0) -> None:
        self._poll(lambda: self.path(inside).exists() or None, f"file {inside}", timeout)

    def logs(self) -> str:
        if self.log_path is None or not self.log_path.exists():  # not captured / cleaned up
            return ""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, regex: str, timeout: float = 10.0) -> re.Match[str]:
        pattern = re.compile(regex, re.MULTILINE)
        return self._poll(lambda: pattern.search(self.logs()),
                          f"a log line matching {regex!r}", timeout, while_running=False)

    def service_status(self, name: str) -> str:
        """`ready`, `up`, `down` (long-runs); `done`, `running`, `pending`, `failed N`
        (oneshots): what the image's own status command says."""
        _, output = self.execute("/etc/s6/status")
        for line in output.splitlines():
            service, _, state = line.split(" ", 2)
            if service == name:
                return state
        raise AssertionError(f"no service {name!r} in the status output:\n{output}")

    # Stopping ----------------------------------------------------------------------------
    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the init to exit by itself; its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"the sandbox did not exit within {timeout} s\n"
                                 f"{self._tail()}") from err

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

    # Helpers -----------------------------------------------------------------------------
    def _tail(self) -> str:
        lines = self.logs().splitlines()[-LOG_TAIL:]
        return "last log lines:\n" + "\n".join(f"  | {line}" for line in lines)

    def _poll(self, attempt: Callable[[], T | None], what: str | Callable[[], str],
              timeout: float, while_running: bool = True) -> T:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            result = attempt()
            if result:
                return result
            if while_running and self.exit_code is not None:
                raise AssertionError(f"the sandbox exited (code {self.exit_code}) while "
                                     f"waiting for {_text(what)}\n{self._tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for "
                                     f"{_text(what)}\n{self._tail()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


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


def _text(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


def _map_ids(process: subprocess.Popen[bytes]) -> None:
    """As root: once the launcher is in its new user namespace, map the id range."""
    assert process.stdin is not None
    if os.geteuid() != 0:
        process.stdin.close()
        return
    ours = os.readlink("/proc/self/ns/user")
    deadline = time.monotonic() + START_TIMEOUT
    while os.readlink(f"/proc/{process.pid}/ns/user") == ours:
        if process.poll() is not None or time.monotonic() > deadline:
            raise UserError("the sandbox launcher could not create a user namespace; "
                            "check that user namespaces are enabled "
                            "(sysctl user.max_user_namespaces)")
        time.sleep(0.001)
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


def _collect(process: subprocess.Popen[bytes], read_end: int, timeout: float, command: str,
             tail: Callable[[], str]) -> tuple[int, str]:
    """The command's exit code and output. Reading stops once the command has exited and
    the pipe is drained, not at end of file, so a background process it left holding the
    pipe cannot hang us."""
    chunks: list[bytes] = []
    eof = False
    deadline = time.monotonic() + timeout
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
    raise AssertionError(f"`{command}` did not finish within {timeout} s\n{tail()}")


def _wait_for_exec(pid: int, bwrap: str, process: subprocess.Popen[bytes]) -> None:
    """bwrap reports its child's pid before the child has mounted the sandbox's root; only
    once it has exec'd the entry point can `execute` enter that root."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except (FileNotFoundError, ProcessLookupError):
            return  # it already exited: the caller sees the exit code
        if argv0 and argv0.decode(errors="replace") != bwrap:
            return
        time.sleep(0.001)


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
