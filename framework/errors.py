"""The one exception type for mistakes a user can fix, and how every entry point (the
`cimages` CLI, the demo, the bench, the lint) ends: one line, exit 2 for a UserError, 130
for Ctrl-C, quietly when the reader of its output went away."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

# How much of a command's output a message shows: its end, where the failure usually is.
OUTPUT_SHOWN = 3000


def shorten(text: str) -> str:
    """The end of `text` for a message (the one place output is cut), saying what was cut."""
    if len(text) <= OUTPUT_SHOWN:
        return text
    cut = text[-OUTPUT_SHOWN:]
    return f"[{len(text) - len(cut)} earlier characters not shown]\n{cut}"


class UserError(Exception):
    """A problem in the user's input or environment, with a message naming cause and fix."""

    exit_code = 2


def run_entry_point(prog: str, body: Callable[[], int]) -> int:
    try:
        code = int(body() or 0)
        sys.stdout.flush()
        return code
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `cimages ... | head`: the reader is gone, which is not an error of ours. Python
        # would complain once more while flushing stdout at exit; point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
