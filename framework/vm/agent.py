"""The host's side of the VM's agent (guest_agent.py has the why and the protocol): one
connection to QEMU's socket for the agent's port, commands and socket connections
multiplexed over it."""

from __future__ import annotations

import contextlib
import http.client
import io
import itertools
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from framework.vm.guest_agent import (
    CLOCK,
    CONNECT,
    EXIT,
    HEADER,
    INPUT,
    INPUT_END,
    KILL,
    MAX_PAYLOAD,
    OUTPUT,
    PING,
    PORT_NAME,
    READY,
    RUN,
    frame,
)


class AgentLost(ConnectionError):
    """The connection to the agent's port ended (QEMU exited or closed it)."""


class CommandTimeout(TimeoutError):
    """A command still ran after its timeout (it was killed); `output` is what it printed."""

    def __init__(self, command: str, seconds: float, output: str) -> None:
        super().__init__(f"`{command}` still running after {seconds:.0f} s")
        self.output = output


def qemu_args(socket_path: Path) -> list[str]:
    """The QEMU options for the agent's port, served by QEMU on `socket_path`."""
    return ["-device", "virtio-serial-pci,id=agent-bus",
            "-chardev", f"socket,id=agent,path={socket_path},server=on,wait=off",
            "-device", f"virtserialport,bus=agent-bus.0,chardev=agent,name={PORT_NAME}"]


@dataclass
class _Stream:
    output: bytearray = field(default_factory=bytearray)
    status: int | None = None
    ready: threading.Event = field(default_factory=threading.Event)  # READY, or over
    done: threading.Event = field(default_factory=threading.Event)  # EXIT, or lost
    sink: socket.socket | None = None  # a connection's host end: OUTPUT goes there


class Agent:
    """A connection to one QEMU's agent port."""

    def __init__(self, socket_path: Path) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.connect(str(socket_path))
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._streams_lock = threading.Lock()
        # Random: frames the guest still had queued for a former connection (a snapshot
        # taken mid-command) must not match this connection's streams.
        self._ids = itertools.count(secrets.randbits(30) + 1)
        self._lost = threading.Event()
        threading.Thread(target=self._read, name="vm-agent", daemon=True).start()

    def close(self) -> None:
        self._lost.set()
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()

    def ping(self) -> threading.Event:
        """An event set once the agent answered (or the connection ended: run() then says
        so). A ping sent before the agent runs waits in QEMU until it reads its port."""
        stream, state = self._open()
        self._send(frame(PING, stream))
        return state.ready

    def set_clock(self, seconds: float) -> None:
        """Sets the guest's wall clock to `seconds` since the epoch (no answer: the agent
        handles frames in order, so what is sent next sees the new time)."""
        self._send(frame(CLOCK, 0, f"{seconds:.6f}".encode()))

    def run(self, command: str, timeout: float,
            stdin: io.BufferedIOBase | None = None) -> tuple[int, str]:
        """(exit status, stdout+stderr) of `bash -c command`; CommandTimeout after `timeout`
        seconds (the command's process group is killed then), AgentLost if the connection
        ends first."""
        stream, state = self._open()
        try:
            self._send(frame(RUN, stream, command.encode("utf-8", "surrogateescape")))
            if stdin is not None:
                while chunk := stdin.read(MAX_PAYLOAD):
                    self._send(frame(INPUT, stream, chunk))
            self._send(frame(INPUT_END, stream))
            deadline = time.monotonic() + timeout
            while not state.done.wait(min(0.5, max(deadline - time.monotonic(), 0))):
                if time.monotonic() >= deadline:
                    self._send(frame(KILL, stream))
                    raise CommandTimeout(command, timeout, state.output.decode(errors="replace"))
            if state.status is None:
                raise AgentLost("the connection to the VM's agent ended; output so far:\n"
                                + state.output.decode(errors="replace"))
            return state.status, state.output.decode(errors="replace")
        finally:
            self._forget(stream)

    def connect(self, path: str, timeout: float = 30) -> socket.socket:
        """A socket connected, through the agent, to the unix socket `path` in the VM.
        Closing it (or shutting down its writing) ends the connection's input."""
        stream, state = self._open()
        ours, theirs = socket.socketpair()
        state.sink = ours
        self._send(frame(CONNECT, stream, path.encode()))
        if not state.ready.wait(timeout) or state.done.is_set():
            self._forget(stream)
            ours.close()
            theirs.close()
            if self._lost.is_set():
                raise AgentLost("the connection to the VM's agent ended")
            raise ConnectionRefusedError(state.output.decode(errors="replace").strip()
                                         or f"no answer to connecting to {path} in the VM")
        threading.Thread(target=self._carry, args=(stream, state, ours),
                         name="vm-agent-connection", daemon=True).start()
        return theirs

    def http(self, socket_path: str, timeout: float) -> http.client.HTTPConnection:
        """An HTTP connection to the server on the VM's unix socket `socket_path`."""
        agent = self

        class Connection(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = agent.connect(socket_path, timeout)
                self.sock.settimeout(timeout)

        return Connection("docker", timeout=timeout)

    def _carry(self, stream: int, state: _Stream, ours: socket.socket) -> None:
        """The host's bytes for a connection, until its host end is shut; then, once the
        VM's side ended too, the host end is closed."""
        with contextlib.suppress(OSError, AgentLost):
            while data := ours.recv(MAX_PAYLOAD):
                self._send(frame(INPUT, stream, data))
            self._send(frame(INPUT_END, stream))
        state.done.wait()
        ours.close()

    def _open(self) -> tuple[int, _Stream]:
        if self._lost.is_set():
            raise AgentLost("the connection to the VM's agent ended")
        stream, state = next(self._ids), _Stream()
        with self._streams_lock:
            self._streams[stream] = state
        return stream, state

    def _forget(self, stream: int) -> None:
        with self._streams_lock:
            self._streams.pop(stream, None)

    def _send(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self._socket.sendall(data)
        except OSError as err:
            self._lost.set()
            raise AgentLost(f"the connection to the VM's agent ended ({err})") from None

    def _read(self) -> None:
        buffer = bytearray()
        try:
            while chunk := self._socket.recv(1 << 16):
                buffer += chunk
                while len(buffer) >= HEADER.size:
                    kind, stream, size = HEADER.unpack_from(buffer)
                    if len(buffer) < HEADER.size + size:
                        break
                    payload = bytes(buffer[HEADER.size:HEADER.size + size])
                    del buffer[:HEADER.size + size]
                    self._deliver(kind, stream, payload)
        except OSError:
            pass
        finally:
            self._lost.set()
            with self._streams_lock:
                states = list(self._streams.values())
            for state in states:
                self._end(state)

    def _deliver(self, kind: int, stream: int, payload: bytes) -> None:
        with self._streams_lock:
            state = self._streams.get(stream)
        if state is None:
            return  # a stream given up on (timed out), or of a former connection
        if kind == READY:
            state.ready.set()
        elif kind == OUTPUT and state.sink is not None and state.ready.is_set():
            try:
                state.sink.sendall(payload)
            except OSError:  # the host end is closed: the VM's side is not wanted either
                with contextlib.suppress(AgentLost):
                    self._send(frame(KILL, stream))
        elif kind == OUTPUT:
            state.output += payload
        elif kind == EXIT:
            state.status = int(payload)
            self._end(state)
            if state.sink is not None:
                self._forget(stream)

    def _end(self, state: _Stream) -> None:
        state.done.set()
        state.ready.set()
        if state.sink is not None:
            with contextlib.suppress(OSError):
                state.sink.shutdown(socket.SHUT_WR)  # the host end reads to its end
