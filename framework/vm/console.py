"""The serial console: QEMU runs under pexpect with the serial on its stdio, and a reader
thread drains it continuously (a full pty would stall the guest) into a log file."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pexpect

from framework.errors import shorten
from framework.processes import die_with_parent


class Console:
    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self._text = ""
        self._changed = threading.Condition()
        # No encoding: the serial console is bytes (the log keeps them as the guest sent).
        self.child: pexpect.spawn[bytes] = pexpect.spawn(
            argv[0], argv[1:], preexec_fn=die_with_parent, echo=False, timeout=None)
        self._reader = threading.Thread(target=self._read, name="vm-console", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self.child.read_nonblocking(1 << 16, timeout=0.5)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError, ValueError):
                break
            self._log.write(chunk)
            self._log.flush()
            with self._changed:
                self._text += chunk.decode(errors="replace")
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def text(self) -> str:
        return self._text

    def alive(self) -> bool:
        return self.child.isalive()

    def wait_for(self, regex: str, timeout: float, start: int = 0) -> re.Match[str]:
        """The first match of `regex` in the console output after offset `start`."""
        pattern = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = pattern.search(self._text, start)
                if found:
                    return found
                if not self._reader.is_alive():
                    raise RuntimeError(f"the VM exited before its console showed {regex!r}; "
                                       f"last console output:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"console did not show {regex!r} within {timeout:.0f} s; "
                                       f"last console output:\n{self.tail()}")
                self._changed.wait(min(left, 0.5))

    def send(self, text: str) -> None:
        self.child.send(text)

    def tail(self) -> str:
        return shorten(self._text)

    def close(self, timeout: float = 5.0) -> None:
        """Ends QEMU (if it still runs) and the reader."""
        if self.child.isalive():
            self.child.terminate(force=True)
        self._reader.join(timeout)
        self.child.close(force=True)
        self._log.close()
