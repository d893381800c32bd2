"""`Machine`: a VM of the docker-host root with the Docker helpers of SPEC section 6.

Helpers talk to the Engine API with curl over the unix socket where they can: each `docker`
CLI call costs most of a second under TCG. Names (containers, networks) are checked against
Docker's rule and everything put into a VM shell command is quoted.

`docker_host` hands the VM's Docker to host-side clients (docker-py, testcontainers, the CLI)
through a unix socket on the host tunnelled over the Machine's SSH connection.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import select
import shlex
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import paramiko

from framework.atomic import write_atomic
from framework.cache import hold
from framework.target import (
    TIMEOUT,
    CheckFailed,
    RequestRefused,
    TargetUnusable,
    WaitAbandoned,
    WaitTimeout,
    shorten,
)
from framework.vm import ssh
from framework.vm.cache import cache_dir
from framework.vm.fileserver import served
from framework.vm.flatten import flattened
from framework.vm.machine import QemuMachine

# Bumped when what load_image does to an image changes, so derived snapshots are remade.
DERIVED_RECIPE = "flat1"
SOCKET = "/var/run/docker.sock"
# --fail-with-body: a refused call exits non-zero and still prints the daemon's message.
CURL = f"curl -sS --fail-with-body --unix-socket {SOCKET}"
API = f"{CURL} http://docker"
# Docker's rule for container and network names (its RestrictedNameChars).
DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
TUNNEL_BUFFER = 1 << 16
SSHD_MAX_SESSIONS = 10  # sshd's default MaxSessions: sessions per SSH connection


def docker_name(kind: str, name: str) -> str:
    """`name` if Docker accepts it as a `kind` (container, network) name, else
    RequestRefused (a UserError)."""
    if not isinstance(name, str) or not DOCKER_NAME.fullmatch(name):
        raise RequestRefused(f"invalid {kind} name {name!r}: Docker {kind} names are a letter "
                             "or digit followed by letters, digits, `_`, `.` or `-`")
    return name


class Machine(QemuMachine):
    """The VM tier's machine: QemuMachine plus Docker helpers.

    Besides load_image, run_container and the container waits:
    `create_network(name)` makes a user-defined bridge network; containers run with
    `run_container(..., name=..., network=name)` reach each other by container name through
    Docker's embedded DNS. `docker_host` is a `unix://` URL for DOCKER_HOST (or
    `docker.DockerClient(base_url=vm.docker_host)`) that reaches this VM's dockerd.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._docker_tunnel: DockerTunnel | None = None
        self._tunnel_ssh: list[paramiko.SSHClient] = []
        self._tunnel_sessions: dict[int, list[paramiko.Channel]] = {}  # by id(transport)
        self._tunnel_lock = threading.Lock()

    def wait_for_docker(self, timeout: float = TIMEOUT) -> None:
        self.wait_until_succeeds(f"{API}/_ping", timeout)

    def api(self, method: str, path: str, timeout: float = TIMEOUT) -> Any:
        """One Engine API call; the decoded JSON reply (None when empty). `path` is the URL
        path with its query, already URL-encoded (`/containers/web/json`)."""
        url = shlex.quote(f"http://docker{path}")
        out = self.succeed(f"{CURL} -X {shlex.quote(method)} {url}", timeout=timeout)
        return json.loads(out) if out.strip() else None

    def create_network(self, name: str) -> str:
        """Creates the user-defined bridge network `name` (Engine API, no CLI); returns its id.

        Containers started with `run_container(..., name=..., network=name)` reach each other
        by their container names, which Docker's embedded DNS (127.0.0.11) resolves on
        user-defined networks (not on the default bridge)."""
        body = {"Name": docker_name("network", name), "Driver": "bridge",
                "CheckDuplicate": True}
        out = self.succeed(f"{CURL} -X POST -H 'Content-Type: application/json' "
                           f"--data-binary {shlex.quote(json.dumps(body))} "
                           "http://docker/networks/create")
        return str(json.loads(out)["Id"])

    @property
    def docker_host(self) -> str:
        """A URL for DOCKER_HOST that reaches this VM's dockerd from the host, e.g.
        `docker.DockerClient(base_url=vm.docker_host)` or `DOCKER_HOST=... docker ps`.

        It is `unix:///tmp/cimages-docker-XXXX/docker.sock`: a socket in a fresh 0700
        directory, served by a thread of this process; each connection to it is carried by
        an SSH channel (on SSH connections of the tunnel's own, with the Machine's key) to
        `nc -U /var/run/docker.sock` in the VM. Why not a TCP port: dockerd listening on TCP
        in the guest, forwarded to the host's 127.0.0.1, would be unauthenticated root on the
        VM for every local user and, as QEMU's user networking maps 10.0.2.2 to the host's
        loopback, for every other VM of this host and their containers (parallel workers'
        VMs included); containers in this VM would reach it too. The socket is reachable only
        by this user, the guest gets no listener, and the VM root and its snapshots stay as
        they are (an unauthenticated TCP listener also costs dockerd a deliberate one-second
        sleep at start).

        Valid, at the same URL, across restores of this Machine (load_image restoring a
        derived snapshot, restore()) until crash() or shutdown(). The first connection
        through it marks the VM as changed, so load_image no longer derives snapshots from
        it: load images before driving Docker from outside. Ports of containers started
        this way are published inside the VM; forward_port makes one reachable from the
        host.
        """
        if self._docker_tunnel is None:
            self._ensure_started()
            self._docker_tunnel = DockerTunnel(self._docker_channel)
        return self._docker_tunnel.url

    def _docker_channel(self) -> paramiko.Channel:
        """An SSH channel connected to dockerd's socket in the VM, for one tunnel connection
        (called by the tunnel's threads).

        Tunnel channels use SSH connections of their own: sshd allows 10 sessions per
        connection (MaxSessions), a docker-py client alone keeps up to 10 connections open,
        and the Machine's own commands must never be starved. A connection that refuses a
        session is passed over and a new one logged into (under half a second)."""
        with self._tunnel_lock:
            if not self.is_up():
                raise self._died("opening a docker_host connection")
            self.pristine = False  # a client may change anything now
            command = f"exec nc -N -U {SOCKET}"
            if self._clock_stale:  # as _run does: the first command after a restore sets it
                self._clock_stale = False
                command = f"date -u -s @{time.time():.3f} >/dev/null 2>&1; {command}"
            self._tunnel_ssh = [c for c in self._tunnel_ssh if _active(c)]
            for client in [*self._tunnel_ssh, None]:
                if client is None:
                    client = self._tunnel_login()
                    self._tunnel_ssh.append(client)
                transport = client.get_transport()
                assert transport is not None
                # Counted here rather than learnt from refusals, which paramiko logs as errors.
                sessions = self._tunnel_sessions.setdefault(id(transport), [])
                sessions[:] = [channel for channel in sessions if not channel.closed]
                if len(sessions) >= SSHD_MAX_SESSIONS:
                    continue
                try:
                    channel = transport.open_session(timeout=30)
                except paramiko.ChannelException:
                    continue  # full after all (sessions still closing on sshd's side)
                sessions.append(channel)
                channel.exec_command(command)
                return channel
            raise TargetUnusable("sshd in the VM refused a session on a new connection")

    def _tunnel_login(self) -> paramiko.SSHClient:
        sock = ssh.sshd_socket(self.ssh_port, timeout=5)
        if sock is None:
            raise TargetUnusable(f"SSH on port {self.ssh_port} did not answer")
        return ssh.connect(sock, self.root.user_key, self.root.host_key, timeout=30)

    def _kill(self) -> None:
        # The tunnel's SSH connections end with this QEMU; the tunnel itself stays (restore).
        with self._tunnel_lock:
            clients, self._tunnel_ssh = self._tunnel_ssh, []
            self._tunnel_sessions.clear()
        for client in clients:
            client.close()
        super()._kill()

    def crash(self) -> None:
        super().crash()
        if self._docker_tunnel is not None:
            self._docker_tunnel.close()
            self._docker_tunnel = None

    def load_image(self, image: Any, timeout: float = 120) -> str:
        """Loads a docker-archive (a BuildResult or a path) into dockerd; returns its
        name:tag.

        On a VM still exactly as restored, the result is itself snapshotted (keyed by the
        snapshot and the image), so the next test loading it restores that instead: under
        TCG, dockerd needs many seconds to unpack an image and a restore well under two.
        """
        archive = Path(getattr(image, "archive", image))
        digest = str(getattr(image, "digest", "") or _file_key(archive))
        derived = None
        if not self.is_up() and self.snapshot is not None:
            self.pristine = True  # it starts as the snapshot, untouched
        if self.pristine and self.snapshot is not None:
            key = hashlib.sha256(f"{self.snapshot.stem}|{digest}|{DERIVED_RECIPE}".encode())
            derived = cache_dir("snapshots") / f"{key.hexdigest()[:24]}.state"
            hold(derived)  # in use until this process ends: `cimages cache --gc` leaves it
            ref_file = derived.with_suffix(".ref")
            if derived.exists() and ref_file.exists():
                self.restore(derived)
                return ref_file.read_text()
        flat = flattened(archive, digest)
        with served(flat) as url:
            status, out = self._run(
                f"set -o pipefail; curl -sSf {url} | {API}/images/load?quiet=1 -X POST "
                "-H 'Content-Type: application/x-tar' -T -", self.scaled(timeout))
        if status != 0 or "errorDetail" in out or "Loaded image" not in out:
            raise CheckFailed(f"docker load of {archive} failed (exit {status}): "
                              f"{shorten(out)}", self._context())
        messages = [json.loads(line) for line in out.splitlines() if line.strip()]
        loaded = [m["stream"] for m in messages if "Loaded image" in m.get("stream", "")]
        ref = loaded[-1].split(":", 1)[1].strip()
        if derived is not None:
            write_atomic(derived.with_suffix(".ref"), ref)
            self.take_snapshot(derived, resume=True)
            self.snapshot, self.pristine = derived, True
        return ref

    def run_container(self, image: str, *command: str, name: str | None = None,
                      ports: dict[int, int] | None = None, env: dict[str, str] | None = None,
                      network: str | None = None, detach: bool = True, options: str = "",
                      timeout: float = 120) -> str:
        """`docker run`: the container id when detached, else the container's output (and
        CommandFailed if it exits non-zero). `network`: a network from create_network (the
        container joins it instead of the default bridge and is found there by `name`).
        `options` is extra docker CLI text, passed as is. Detached and without `options` this
        is one SSH command of Engine API calls (create, start), not the docker CLI, whose
        start-up alone costs most of a second under TCG. Not detached, the CLI is kept:
        create, start, wait, logs and remove through the API were measured slower (8 s
        against 5.7 s for hello), as the CLI attaches before starting and dockerd removes the
        container on its own."""
        if name is not None:
            docker_name("container", name)
        if network is not None:
            docker_name("network", network)
        if options or not detach:
            return self._run_container_cli(image, *command, name=name, ports=ports, env=env,
                                           network=network, detach=detach, options=options,
                                           timeout=timeout)
        body: dict[str, Any] = {"Image": image, "Env": [f"{k}={v}" for k, v in
                                                        (env or {}).items()]}
        if command:
            body["Cmd"] = list(command)
        host_config: dict[str, Any] = {}
        if ports:
            body["ExposedPorts"] = {f"{int(c)}/tcp": {} for c in ports.values()}
            host_config["PortBindings"] = {f"{int(c)}/tcp": [{"HostPort": str(int(h))}]
                                           for h, c in ports.items()}
        if network:
            host_config["NetworkMode"] = network
        if host_config:
            body["HostConfig"] = host_config
        query = f"?name={quote(name, safe='')}" if name else ""
        create = shlex.quote(f"http://docker/containers/create{query}")
        # Plain bash: the VM has no sed or jq.
        failed = '|| { echo "$out"; exit 1; }'
        script = [
            "set -eo pipefail",
            f"out=$({CURL} -X POST -H 'Content-Type: application/json' --data-binary @- "
            f"{create} <<'CIMAGES_JSON'",
            json.dumps(body),
            "CIMAGES_JSON",
            f") {failed}",
            'id=${out#*\\"Id\\":\\"}; id=${id%%\\"*}',
            f"{CURL} -X POST http://docker/containers/$id/start",
            "echo $id",
        ]
        return self.succeed("\n".join(script), timeout=timeout).strip()

    def _run_container_cli(self, image: str, *command: str, name: str | None,
                           ports: dict[int, int] | None, env: dict[str, str] | None,
                           network: str | None, detach: bool, options: str,
                           timeout: float) -> str:
        args = ["docker", "run"] + (["-d"] if detach else ["--rm"])
        if name:
            args += ["--name", name]
        if network:
            args += ["--network", network]
        for host, container in (ports or {}).items():
            args += ["-p", f"{host}:{container}"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        cmd = " ".join(map(shlex.quote, args)) + f" {options} " + " ".join(
            map(shlex.quote, [image, *command]))
        return self.succeed(cmd, timeout=timeout).strip()

    def wait_while_running(self, name: str, command: str, timeout: float = TIMEOUT) -> str:
        """wait_until_succeeds(command), ending at once with WaitAbandoned (its exit code
        and logs shown) if container `name` stops."""
        url = shlex.quote(f"http://docker/containers/{quote(name, safe='')}/json")
        # The container's main process is looked up once (its PID; 0 once stopped, nothing
        # for no such container), then checked with a builtin after each attempt: an API
        # call through curl and grep cost 390 ms of the one vCPU under TCG per attempt,
        # taken from the container starting. A container restarted by its restart policy
        # has a new PID, and so counts as stopped.
        pid = f"{CURL} {url} | grep -o '\"Pid\":[0-9]*'"
        running = (f'{{ : "${{cimages_pid:=$({pid})}}"; '
                   '[ -n "$cimages_pid" ] && [ -d "/proc/${cimages_pid#*:}" ]; }')
        try:
            return self.wait_in_vm(command, succeed=True, timeout=timeout,
                                   give_up_if=f"! {running}",
                                   gave_up=f"container {name} stopped")
        except WaitAbandoned as err:
            state = self.container_state(name)
            raise WaitAbandoned(err.what, err.reason, err.last,
                                f"It exited with code {state['ExitCode']}; its logs:\n"
                                f"{shorten(self.container_logs(name))}") from None

    def wait_for_container_log(self, name: str, regex: str, timeout: float = TIMEOUT) -> None:
        """Waits until the running container `name` has logged a line matching `regex`
        (grep -E), failing at once if it stops. Engine API, so no Go CLI start per attempt."""
        url = shlex.quote(f"http://docker/containers/{quote(name, safe='')}/logs"
                          "?stdout=1&stderr=1")
        self.wait_while_running(name, f"{CURL} {url} | grep -aqE {shlex.quote(regex)}",
                                timeout)

    def container_state(self, name: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/containers/{quote(name, safe='')}/json")["State"])

    def wait_for_container_exit(self, name: str, timeout: float = TIMEOUT) -> int:
        """The exit code of a container once it stopped (one blocking Engine API call)."""
        seconds = self.scaled(timeout)
        url = shlex.quote(f"http://docker/containers/{quote(name, safe='')}/wait")
        what = f"container {name} to exit"
        status, out = self.execute(f"{CURL} --max-time {seconds:.0f} -X POST {url}", timeout + 30)
        if status == 0:
            return int(json.loads(out)["StatusCode"])
        if status != 28:  # curl's "operation timed out"
            raise CheckFailed(f"waiting for {what} failed: {shorten(out)}", self._context())
        raise WaitTimeout(what, seconds, f"state {self.container_state(name)}",
                          f"its logs:\n{shorten(self.container_logs(name))}")

    def container_logs(self, name: str) -> str:
        """stdout and stderr of a container, interleaved as written (Engine API, no CLI)."""
        url = shlex.quote(f"http://docker/containers/{quote(name, safe='')}/logs"
                          "?stdout=1&stderr=1")
        out = self.succeed(f"set -o pipefail; {CURL} {url} | base64 -w0")
        return demux_logs(base64.b64decode(out.strip()))

    def containers(self, timeout: float = TIMEOUT) -> list[str]:
        """Names of all containers, running or not."""
        listed = self.api("GET", "/containers/json?all=1", timeout)
        return [c["Names"][0].lstrip("/") for c in listed]

    def dockerd_log(self) -> str:
        return self.execute("cat /var/log/dockerd.log")[1]


class _Stream(Protocol):
    def recv(self, size: int) -> bytes: ...
    def sendall(self, data: bytes) -> Any: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class DockerTunnel:
    """A host unix socket whose every connection is carried to dockerd in the VM by a
    channel from `open_channel` (see Machine.docker_host for why)."""

    def __init__(self, open_channel: Callable[[], Any]) -> None:
        self._open_channel = open_channel
        # mkdtemp makes the directory 0700: only this user can reach the socket. A short
        # path under /tmp, as unix socket paths are limited to 107 bytes.
        self.folder = Path(tempfile.mkdtemp(prefix="cimages-docker-"))
        self.path = self.folder / "docker.sock"
        self.url = f"unix://{self.path}"
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self._server.listen(64)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, name="vm-docker-tunnel", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed:
                    client.close()
                    return
                self._open.add(client)
            threading.Thread(target=self._carry, args=(client,), name="vm-docker-tunnel-conn",
                             daemon=True).start()

    def _carry(self, client: socket.socket) -> None:
        try:
            # Any failure (the VM gone or restarting, an SSH error) ends this connection
            # only: the client sees its socket closed, as from a daemon that went away.
            with contextlib.suppress(Exception):
                channel = self._open_channel()
                pump(client, channel, channel.shutdown_write)
        finally:
            with self._lock:
                self._open.discard(client)
            client.close()

    def close(self) -> None:
        """Stops serving: the socket goes and open connections are cut."""
        with self._lock:
            self._closed = True
            clients = list(self._open)
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        shutil.rmtree(self.folder, ignore_errors=True)


def pump(client: _Stream, remote: _Stream, half_close_remote: Callable[[], Any]) -> None:
    """Copies bytes both ways between `client` and `remote` until `remote` ends. The client's
    end of input is passed on as a half-close, so a request still gets its whole reply; the
    remote's end ends the connection. Both are closed on return."""
    sources: list[_Stream] = [client, remote]
    try:
        while True:
            ready, _, _ = select.select(sources, [], [])
            if client in ready:
                data = client.recv(TUNNEL_BUFFER)
                if data:
                    remote.sendall(data)
                else:
                    half_close_remote()
                    sources.remove(client)
            if remote in ready:
                data = remote.recv(TUNNEL_BUFFER)
                if not data:
                    return
                client.sendall(data)
    except (OSError, EOFError):  # a side went away (paramiko raises EOFError, too)
        return
    finally:
        for end in (remote, client):
            with contextlib.suppress(OSError):
                end.close()


def demux_logs(data: bytes) -> str:
    """The text of an Engine API log stream: frames of an 8-byte header (stream, 0, 0, 0,
    big-endian size) and payload for containers without a TTY, raw bytes with one."""
    out = bytearray()
    at = 0
    while at + 8 <= len(data) and data[at] in (0, 1, 2) and data[at + 1:at + 4] == b"\0\0\0":
        size = int.from_bytes(data[at + 4:at + 8], "big")
        out += data[at + 8:at + 8 + size]
        at += 8 + size
    if at != len(data):  # not framed: a TTY container's log
        return data.decode(errors="replace")
    return out.decode(errors="replace")


def _active(client: paramiko.SSHClient) -> bool:
    transport = client.get_transport()
    return transport is not None and transport.is_active()


def _file_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
                          ).hexdigest()
