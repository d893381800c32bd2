"""The contract both test tiers' objects share (SPEC section 6), as the NixOS test driver's
BaseMachine: one vocabulary, one retry, one error family, one way to shorten output.

`Target` holds the vocabulary: `execute`, `succeed`, `fail`, `wait_until_succeeds`,
`wait_until_fails`, `wait_for_file`, `wait_for_open_port`, `wait_for_closed_port` and
`read_file`, every one with the same signature and the same default timeout (`TIMEOUT`) in
both tiers. A tier implements only its transport: `_execute` (run one shell command as root
in the target), `is_up`, and optionally `_ensure_started` (a target started on first use),
`scaled` (timeouts stretched for a slow target), `_recent_output` (what its messages show of
the target's own output) and `_wait_until` (a faster wait: the VM loops inside the guest in
one command instead of one round trip per attempt). The sandbox tier
(framework.sandbox.runner.Sandbox) and the VM tier (framework.vm.machine.QemuMachine) both
build on it; neither imports the other.

The error family: `TargetError` is all a target raises. A failed check (`CheckFailed`:
`CommandFailed`, `WaitTimeout`, `WaitAbandoned`) is an AssertionError, so pytest reports it
as a test failure; a target that cannot be used (`TargetUnusable`, `TargetDied`) is not, so
a broken VM or sandbox is never mistaken for a wrong result. `RequestRefused` (a request the
caller can fix: an invalid name, a host port already taken) is also a UserError.
"""

from __future__ import annotations

import shlex
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

from framework.errors import UserError, shorten

# Every command and wait of both tiers, in seconds as meant on a fast host (KVM, the
# sandbox); a slower target stretches it (`Target.scaled`).
TIMEOUT = 60.0
# How much of an output a message shows: its end, this many characters.
# The retry's pause after a missed attempt: from the first, doubled up to the most.
POLL_FIRST = 0.01
POLL_MOST = 0.1

T = TypeVar("T")


def seconds_text(seconds: float) -> str:
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


# -- the error family -------------------------------------------------------------------


def _rebuild(cls: type[TargetError], message: str, fields: dict[str, Any]) -> TargetError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(fields)
    return error


class TargetError(Exception):
    """Anything a test target raises. `context` is what the message adds about the target
    (its last log or console lines)."""

    def __init__(self, message: str, context: str = "") -> None:
        self.context = context
        super().__init__(f"{message}\n{context}" if context else message)

    def __reduce__(self) -> tuple[Any, ...]:
        # The fields are not the constructor's arguments: rebuilt from message and fields,
        # so the error crosses a process boundary (multiprocessing, xdist) intact.
        return _rebuild, (type(self), str(self), dict(self.__dict__))


class CheckFailed(TargetError, AssertionError):
    """What a test checked does not hold: a test failure, not a broken target."""


class CommandFailed(CheckFailed):
    """`succeed` saw a non-zero exit status, or `fail` a zero one."""

    def __init__(self, command: str, status: int, output: str, context: str = "") -> None:
        self.command, self.status, self.output = command, status, output
        said = f"exited {status}" if status else "unexpectedly succeeded"
        super().__init__(f"`{command}` {said}; output:\n{shorten(output)}", context)


class WaitTimeout(CheckFailed):
    """A wait (or a command) ran past its timeout; `last` is the last output it saw."""

    def __init__(self, what: str, timeout: float, last: str = "", context: str = "") -> None:
        self.what, self.timeout, self.last = what, timeout, last
        super().__init__(_with_last(f"timed out after {seconds_text(timeout)} waiting for "
                                    f"{what}", last), context)


class WaitAbandoned(CheckFailed):
    """A wait ended early: what it waited on reached a state it cannot leave (a container
    that stopped). `reason` says which."""

    def __init__(self, what: str, reason: str, last: str = "", context: str = "") -> None:
        self.what, self.reason, self.last = what, reason, last
        super().__init__(_with_last(f"{reason} while waiting for {what}", last), context)


class TargetUnusable(TargetError):
    """The target cannot do what was asked (it did not start, its control channel broke):
    not a test failure, so not an AssertionError."""


class TargetDied(TargetUnusable):
    """The target is gone (the VM's QEMU or the sandbox's init exited) while `doing`."""

    def __init__(self, gone: str, doing: str, context: str = "") -> None:
        self.gone, self.doing = gone, doing
        super().__init__(f"{gone} while {doing}", context)


class RequestRefused(TargetError, UserError):
    """A request the caller can fix (an invalid name, a host port already taken); also a
    UserError, so an entry point prints it as one line."""


def _with_last(headline: str, last: str) -> str:
    return f"{headline}; last output:\n{shorten(last)}" if last else headline


# -- the one retry ----------------------------------------------------------------------


def retry(attempt: Callable[[], T | None], what: str, seconds: float, *,
          gone: Callable[[], str | None] | None = None,
          last: Callable[[], str] | None = None,
          context: Callable[[], str] | None = None,
          broken_if_late: bool = False,
          interval: tuple[float, float] = (POLL_FIRST, POLL_MOST)) -> T:
    """Calls `attempt` until it returns something other than None, and returns that.

    After each miss: `gone()`, when it returns a reason, ends the wait at once with
    TargetDied (the target died: waiting on is pointless); past `seconds` the wait ends with
    WaitTimeout showing `last()`, or, with `broken_if_late` (a wait of the target's own
    start-up or control channel), with TargetUnusable. Pauses start at interval[0] and
    double up to interval[1]. `context()` is called only for a message.
    """
    deadline = time.monotonic() + seconds
    delay, most = interval
    while True:
        result = attempt()
        if result is not None:
            return result
        reason = gone() if gone is not None else None
        if reason is not None:
            raise TargetDied(reason, f"waiting for {what}", context() if context else "")
        left = deadline - time.monotonic()
        if left <= 0:
            late = WaitTimeout(what, seconds, last() if last else "",
                               context() if context else "")
            if broken_if_late:
                raise TargetUnusable(str(late)) from None
            raise late
        time.sleep(min(delay, left))
        delay = min(delay * 2, most)


def port_probe(addr: str, port: int, expect_open: bool) -> str:
    """A shell command that exits 0 when a TCP connection to addr:port succeeds (nc, else
    bash's /dev/tcp). Without either tool it never gives the awaited answer, so the wait
    times out saying why instead of passing by accident."""
    target = f"{shlex.quote(addr)} {int(port)}"
    tcp = shlex.quote(f"exec 3<>/dev/tcp/{addr}/{int(port)}")
    missing = "echo 'neither nc nor bash here to probe a TCP port with'; " \
              f"exit {1 if expect_open else 0}"
    return (f"if command -v nc >/dev/null; then nc -z -w 1 {target} 2>&1; "
            f"elif command -v bash >/dev/null; then bash -c {tcp} 2>&1; "
            f"else {missing}; fi")


# -- the contract -----------------------------------------------------------------------


class Target(ABC):
    """A test target: the vocabulary over a tier's transport (see the module's doc)."""

    # For messages: what the target is, and what its own output is called.
    kind = "the target"
    output_name = "output"

    # -- the transport: what a tier implements ------------------------------------------
    @abstractmethod
    def _execute(self, command: str, seconds: float) -> tuple[int, str]:
        """(exit status, stdout and stderr) of shell `command` run as root in the target,
        within `seconds` (already scaled): WaitTimeout when it runs over, TargetUnusable
        (TargetDied when the target is gone) when the transport breaks."""

    @abstractmethod
    def is_up(self) -> bool:
        """Whether the target runs (a VM not started yet is not up)."""

    def _ensure_started(self) -> None:
        """Starts a target that starts on first use (the VM); the sandbox runs once made."""
        return

    def _gone(self) -> str:
        """What became of a target that is not up, for TargetDied."""
        return f"{self.kind} is not running"

    def _recent_output(self) -> str:
        """The target's own latest output (a log, a console), for messages."""
        return ""

    def scaled(self, seconds: float) -> float:
        """`seconds` as meant on a fast host, stretched for a slower target."""
        return seconds

    # -- the vocabulary ------------------------------------------------------------------
    def execute(self, command: str, timeout: float = TIMEOUT) -> tuple[int, str]:
        """(exit status, stdout and stderr) of shell `command` run as root in the target."""
        self._ensure_up(f"running `{command}`")
        return self._execute(command, self.scaled(timeout))

    def succeed(self, command: str, timeout: float = TIMEOUT) -> str:
        """The output of `command`; CommandFailed if it exits non-zero."""
        status, output = self.execute(command, timeout)
        if status != 0:
            raise CommandFailed(command, status, output, self._context())
        return output

    def fail(self, command: str, timeout: float = TIMEOUT) -> str:
        """The output of `command`; CommandFailed if it exits 0."""
        status, output = self.execute(command, timeout)
        if status == 0:
            raise CommandFailed(command, status, output, self._context())
        return output

    def wait_until_succeeds(self, command: str, timeout: float = TIMEOUT) -> str:
        """Retries `command` until it exits 0; its output."""
        return self._wait_until(command, True, timeout)

    def wait_until_fails(self, command: str, timeout: float = TIMEOUT) -> str:
        """Retries `command` until it exits non-zero; its output."""
        return self._wait_until(command, False, timeout)

    def wait_for_file(self, path: str, timeout: float = TIMEOUT) -> None:
        """Waits until `path` exists in the target."""
        self.wait_until_succeeds(f"test -e {shlex.quote(path)}", timeout)

    def wait_for_open_port(self, port: int, addr: str = "127.0.0.1",
                           timeout: float = TIMEOUT) -> None:
        """Waits until a TCP connection to addr:port, made in the target, succeeds."""
        self.wait_until_succeeds(port_probe(addr, port, expect_open=True), timeout)

    def wait_for_closed_port(self, port: int, addr: str = "127.0.0.1",
                             timeout: float = TIMEOUT) -> None:
        """Waits until a TCP connection to addr:port, made in the target, is refused."""
        self.wait_until_fails(port_probe(addr, port, expect_open=False), timeout)

    def read_file(self, path: str, timeout: float = TIMEOUT) -> str:
        """The text of the file `path` in the target."""
        return self.succeed(f"cat -- {shlex.quote(path)}", timeout)

    # -- waiting -------------------------------------------------------------------------
    def _wait_until(self, command: str, succeed: bool, timeout: float) -> str:
        """The hook of both command waits: retries `command` from here until its exit
        status is the awaited one. A tier may override it with a faster loop."""
        what = awaited(command, succeed)
        self._ensure_up(f"waiting for {what}")
        last = ""

        def attempt() -> str | None:
            nonlocal last
            if not self.is_up():
                return None  # the retry says the target died
            status, last = self._execute(command, self.scaled(timeout))
            return last if (status == 0) == succeed else None

        return self.retry(attempt, what, timeout, last=lambda: last)

    def retry(self, attempt: Callable[[], T | None], what: str, timeout: float, *,
              last: Callable[[], str] | None = None, while_up: bool = True,
              broken_if_late: bool = False,
              interval: tuple[float, float] = (POLL_FIRST, POLL_MOST)) -> T:
        """`retry` for this target: its scaled `timeout`, its output in the messages, and,
        `while_up`, ending at once with TargetDied once the target is gone."""
        return retry(attempt, what, self.scaled(timeout),
                     gone=self._gone_now if while_up else None, last=last,
                     context=self._context, broken_if_late=broken_if_late, interval=interval)

    # -- for the tiers' messages ---------------------------------------------------------
    def _ensure_up(self, doing: str) -> None:
        self._ensure_started()
        if not self.is_up():
            raise self._died(doing)

    def _died(self, doing: str) -> TargetDied:
        return TargetDied(self._gone(), doing, self._context())

    def _gone_now(self) -> str | None:
        return None if self.is_up() else self._gone()

    def _context(self) -> str:
        text = self._recent_output().rstrip("\n")
        if not text.strip():
            return ""
        lines = [line for line in shorten(text).splitlines() if line.strip()]
        return f"last {self.output_name} lines:\n" + "\n".join(f"  | {line}" for line in lines)


def awaited(command: str, succeed: bool) -> str:
    """What a command wait waits for, as its messages say it."""
    return f"`{command}` to {'succeed' if succeed else 'fail'}"


# The vocabulary SPEC section 6 names for both tiers (the contract test checks each tier
# has every one with the base's signature).
VOCABULARY = ("execute", "succeed", "fail", "wait_until_succeeds", "wait_until_fails",
              "wait_for_file", "wait_for_open_port", "wait_for_closed_port", "read_file")
