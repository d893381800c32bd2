"""The VM's agent: runs the host's commands and carries its connections to the VM's unix
sockets (dockerd's), over a virtio-serial port.

It runs inside the VM (python3 -I -S, standard library only), supervised by the Docker
host's s6 init (docker-host.yaml); framework/vm/agent.py is the host's side.

Why not SSH and curl: a restored VM must answer within a second, and an SSH login costs
about half of that under TCG (key exchange, OpenSSH 10's sshd-session and sshd-auth execs
for every connection), a curl start a quarter second (its thirty libraries). The port is a
character device of the new QEMU's, so the host writes to it at once after a restore, with
nothing to negotiate, to the agent from the snapshot, already running; an Engine API call is
a few frames to a process that is already there. Only this user's processes reach the
port's socket on the host (it lives in the Machine's private state folder).

The protocol: frames of a header (type, stream id, payload length) and a payload, both
ways. RUN starts `bash -c COMMAND` in a session of its own, output and errors merged;
CONNECT connects to the unix socket at the path given, answered by READY. INPUT and
INPUT_END carry the host's bytes (a command's standard input, what the socket is sent) and
their end; OUTPUT frames what the command prints or the socket answers; KILL ends a
command's process group or a connection. EXIT ends a stream, with the command's status (a
connection: 0 when the socket closed, 1 when it could not connect). PING is answered by
READY; CLOCK sets the wall clock (a restored VM's still says when it was saved).
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import socket
import struct
import subprocess
import time

HEADER = struct.Struct(">BII")  # frame type, stream id, payload length
MAX_PAYLOAD = 1 << 20
# Host to guest.
RUN, CONNECT, INPUT, INPUT_END, KILL, PING, CLOCK = 1, 2, 3, 4, 5, 6, 7
# Guest to host.
OUTPUT, EXIT, READY = 11, 12, 13
PORT_NAME = "org.cimages.agent"
# Output a command's left-behind children still write after it exited is awaited this long
# (they may hold its output open for ever: `nginx &`).
DRAIN_AFTER_EXIT_S = 0.2
ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash", "LANG": "C.UTF-8",
}


def frame(kind: int, stream: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, stream, len(payload)) + payload


def port_device() -> str:
    """The port's device node: without udev there is no /dev/virtio-ports/NAME link, so the
    port is found by the name sysfs gives it."""
    base = "/sys/class/virtio-ports"
    while True:
        with contextlib.suppress(OSError):
            for port in sorted(os.listdir(base)):
                with open(f"{base}/{port}/name") as name:
                    if name.read().strip() == PORT_NAME:
                        return f"/dev/{port}"
        time.sleep(0.1)  # the driver is still probing


class Stream:
    """What one stream id names: bytes from the host go to `sink`, bytes read from `source`
    go to the host."""

    def __init__(self, stream: int, source: int, sink: int) -> None:
        self.stream = stream
        self.source: int | None = source
        self.sink: int | None = sink
        self.pending = bytearray()  # from the host, not yet taken by the sink
        self.input_ended = False

    def end_input(self) -> None:
        """The host's bytes are all there and written."""

    def kill(self) -> None:
        """The host gave up on the stream."""

    def status(self, now: float) -> int | None:
        """The stream's exit status once it is over, else None."""
        raise NotImplementedError

    def close(self) -> None:
        for fd in {self.source, self.sink} - {None}:
            assert fd is not None
            with contextlib.suppress(OSError):
                os.close(fd)
        self.source = self.sink = None


class Job(Stream):
    def __init__(self, stream: int, command: str) -> None:
        # Plain pipes rather than Popen's file objects: the agent closes each end itself.
        input_read, input_write = os.pipe()
        output_read, output_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                ["/bin/bash", "-c", command], stdin=input_read, stdout=output_write,
                stderr=output_write, start_new_session=True, cwd="/root", env=ENVIRONMENT)
        except OSError:
            os.close(input_write)
            os.close(output_read)
            raise
        finally:
            os.close(input_read)
            os.close(output_write)
        os.set_blocking(input_write, False)
        super().__init__(stream, output_read, input_write)
        self.exited_at: float | None = None

    def end_input(self) -> None:
        if self.sink is not None:
            os.close(self.sink)
            self.sink = None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def status(self, now: float) -> int | None:
        if self.exited_at is None and self.process.poll() is not None:
            self.exited_at = now
        if self.exited_at is None or (self.source is not None
                                      and now - self.exited_at < DRAIN_AFTER_EXIT_S):
            return None
        code = self.process.returncode  # as a shell says it: 128 + N for signal N
        return 128 - code if code < 0 else code


class Connection(Stream):
    def __init__(self, stream: int, path: str) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.socket.connect(path)
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        super().__init__(stream, self.socket.fileno(), self.socket.fileno())
        self.over = False

    def end_input(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_WR)

    def kill(self) -> None:
        self.over = True

    def status(self, now: float) -> int | None:
        return 0 if self.over or self.source is None else None

    def close(self) -> None:
        self.source = self.sink = None
        self.socket.close()


class Agent:
    def __init__(self, device: str) -> None:
        self.port = os.open(device, os.O_RDWR)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.port, selectors.EVENT_READ, None)
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        self.wake = wake_read
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select when a job ends
        self.selector.register(wake_read, selectors.EVENT_READ, None)
        self.streams: dict[int, Stream] = {}
        self.incoming = bytearray()

    def send(self, kind: int, stream: int, payload: bytes = b"") -> None:
        data = memoryview(frame(kind, stream, payload))
        while data:
            try:
                data = data[os.write(self.port, data):]
            except OSError as err:
                if err.errno == errno.EINTR:
                    continue
                return  # no host on the other side: what it asked for is abandoned

    def serve(self) -> None:
        while True:
            draining = any(isinstance(s, Job) and s.exited_at is not None
                           for s in self.streams.values())
            for key, events in self.selector.select(DRAIN_AFTER_EXIT_S / 2 if draining
                                                    else None):
                stream = key.data
                if key.fd == self.port:
                    self.read_port()
                elif key.fd == self.wake:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake, 4096)
                elif stream is not None:
                    if events & selectors.EVENT_WRITE and key.fd == stream.sink:
                        self.feed(stream)
                    if events & selectors.EVENT_READ and key.fd == stream.source:
                        self.read_source(stream)
            self.finish()

    def read_port(self) -> None:
        try:
            data = os.read(self.port, 1 << 16)
        except InterruptedError:
            return
        if not data:
            # The host went away (between two QEMU connections): what it half sent is void.
            self.incoming.clear()
            time.sleep(0.05)
            return
        self.incoming += data
        while len(self.incoming) >= HEADER.size:
            kind, stream, size = HEADER.unpack_from(self.incoming)
            if size > MAX_PAYLOAD:
                self.incoming.clear()  # not a frame of ours: start over
                return
            if len(self.incoming) < HEADER.size + size:
                return
            payload = bytes(self.incoming[HEADER.size:HEADER.size + size])
            del self.incoming[:HEADER.size + size]
            self.handle(kind, stream, payload)

    def handle(self, kind: int, stream: int, payload: bytes) -> None:
        known = self.streams.get(stream)
        if kind == PING:
            self.send(READY, stream)
        elif kind == CLOCK:
            with contextlib.suppress(ValueError, OSError):
                time.clock_settime(time.CLOCK_REALTIME, float(payload))
        elif kind in (RUN, CONNECT) and known is None:
            text = payload.decode("utf-8", "surrogateescape")
            try:
                started: Stream = Job(stream, text) if kind == RUN else Connection(stream, text)
            except OSError as err:
                what = "start bash" if kind == RUN else f"connect to {text}"
                self.send(OUTPUT, stream, f"cimages agent: cannot {what}: {err}\n".encode())
                self.send(EXIT, stream, b"127" if kind == RUN else b"1")
                return
            self.streams[stream] = started
            if kind == CONNECT:
                self.send(READY, stream)
            self.watch(started)
        elif kind == INPUT and known is not None and not known.input_ended:
            known.pending += payload
            self.feed(known)
        elif kind == INPUT_END and known is not None:
            known.input_ended = True
            self.feed(known)
        elif kind == KILL and known is not None:
            known.kill()

    def watch(self, stream: Stream) -> None:
        """Registers the stream's descriptors for what it waits for now."""
        wanted: dict[int, int] = {}
        if stream.source is not None:
            wanted[stream.source] = selectors.EVENT_READ
        if stream.sink is not None and stream.pending:
            wanted[stream.sink] = wanted.get(stream.sink, 0) | selectors.EVENT_WRITE
        for fd in {stream.source, stream.sink} - {None}:
            assert fd is not None
            registered = self.selector.get_map().get(fd)
            if fd not in wanted:
                if registered is not None:
                    self.selector.unregister(fd)
            elif registered is None:
                self.selector.register(fd, wanted[fd], stream)
            elif registered.events != wanted[fd]:
                self.selector.modify(fd, wanted[fd], stream)

    def feed(self, stream: Stream) -> None:
        """Writes what the host sent, as far as the sink takes it without blocking."""
        if stream.sink is None:
            stream.pending.clear()
            return
        try:
            while stream.pending:
                del stream.pending[:os.write(stream.sink, stream.pending)]
        except BlockingIOError:
            pass
        except OSError:  # the command closed its input, the socket its end: not wanted
            stream.pending.clear()
        if not stream.pending and stream.input_ended:
            self.unwatch(stream)  # before end_input may close the sink
            stream.end_input()
        self.watch(stream)

    def read_source(self, stream: Stream) -> None:
        assert stream.source is not None
        try:
            data = os.read(stream.source, MAX_PAYLOAD)
        except (InterruptedError, BlockingIOError):
            return
        except OSError:
            data = b""
        if data:
            self.send(OUTPUT, stream.stream, data)
            return
        self.unwatch(stream)
        if isinstance(stream, Connection):
            stream.close()
        else:
            os.close(stream.source)
            stream.source = None

    def unwatch(self, stream: Stream) -> None:
        for fd in {stream.source, stream.sink} - {None}:
            if fd is not None and fd in self.selector.get_map():
                self.selector.unregister(fd)

    def finish(self) -> None:
        now = time.monotonic()
        for stream in list(self.streams.values()):
            status = stream.status(now)
            if status is None:
                continue
            self.unwatch(stream)
            stream.close()
            self.send(EXIT, stream.stream, str(status).encode())
            del self.streams[stream.stream]


def main() -> None:
    Agent(port_device()).serve()


if __name__ == "__main__":
    main()
