"""No process outlives the one that started it, even when that one is SIGKILLed."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child (preexec_fn, a pool initializer): the kernel kills it when its parent dies.
    A parent that died before the call is caught by the re-check: orphans are re-parented."""
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
