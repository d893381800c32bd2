"""An interactive root shell in the VM over paramiko, the local terminal in raw mode."""

from __future__ import annotations

import os
import select
import shutil
import sys
import termios
import tty

import paramiko


def shell(client: paramiko.SSHClient, banner: str = "") -> int:
    """Runs a login shell until it exits; returns its exit status."""
    transport = client.get_transport()
    assert transport is not None
    size = shutil.get_terminal_size()
    channel = transport.open_session()
    channel.get_pty(term=os.environ.get("TERM", "xterm"), width=size.columns,
                    height=size.lines)
    channel.invoke_shell()
    if banner:
        channel.send(f"echo {banner!r}\n".encode())
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    try:
        if saved is not None:
            tty.setraw(stdin)
        while True:
            readable, _, _ = select.select([channel, stdin], [], [], 0.5)
            if channel in readable:
                data = channel.recv(1 << 15)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if stdin in readable:
                data = os.read(stdin, 1 << 10)
                if not data:
                    channel.shutdown_write()
                    continue
                channel.send(data)
            if channel.exit_status_ready() and not channel.recv_ready():
                break
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    return channel.recv_exit_status()
