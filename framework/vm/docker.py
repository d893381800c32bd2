"""`Machine`: a VM of the docker-host root with the Docker helpers of SPEC section 6.

Helpers talk to the Engine API over the VM's agent (agent.py): a request is a few frames
to a process already running in the VM, where a curl costs a quarter second and each
`docker` CLI call most of a second under TCG. Names (containers, networks) are checked
against Docker's rule and everything put into a VM shell command is quoted.

`docker_host` hands the VM's Docker to host-side clients (docker-py, testcontainers, the CLI)
through a unix socket on the host whose connections the agent carries to dockerd's.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import re
import select
import shlex
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from framework.cache import hold
from framework.target import (
    TIMEOUT,
    CheckFailed,
    CommandFailed,
    RequestRefused,
    WaitAbandoned,
    WaitTimeout,
    shorten,
)
from framework.vm.agent import AgentLost
from framework.vm.derived import Nearest, derived_path, nearest, record_of, save_record
from framework.vm.fileserver import served
from framework.vm.grouped import GroupedImage, grouped
from framework.vm.machine import QemuMachine

SOCKET = "/var/run/docker.sock"
LOAD = "/images/load?quiet=1"
# Up to this many bytes an archive goes through the agent (no curl starts: half a second
# under TCG); a bigger one over QEMU's network (curl), which carries ten times the agent's
# 10 MB/s from host to guest.
AGENT_LOAD_MAX = 4 << 20
# Docker's rule for container and network names (its RestrictedNameChars).
DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
TUNNEL_BUFFER = 1 << 16


class DaemonUnreachable(CheckFailed):
    """dockerd did not take or answer an Engine API request (not listening yet, gone)."""

    def __init__(self, doing: str, reason: str, context: str = "") -> None:
        self.reason = reason
        super().__init__(f"{doing} failed: dockerd did not answer on {SOCKET} ({reason})",
                         context)


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

    def wait_for_docker(self, timeout: float = TIMEOUT) -> None:
        last = ""

        def attempt() -> bool | None:
            nonlocal last
            try:
                status, answer = self._engine("GET", "/_ping", timeout=10, pristine=True)
            except DaemonUnreachable as err:
                last = err.reason
                return None
            last = f"/_ping answered {status}: {answer.decode(errors='replace')}"
            return True if status == 200 else None

        self.retry(attempt, f"dockerd to answer on {SOCKET}", timeout, last=lambda: last,
                   interval=(0.05, 0.2))

    def _engine(self, method: str, path: str, body: Any = None, *, timeout: float = TIMEOUT,
                pristine: bool = False) -> tuple[int, bytes]:
        """One Engine API request: (HTTP status, body). `path` is the URL path with its
        query, already URL-encoded; `body` is sent as JSON, or as a tar when it is bytes. A
        test's requests (not `pristine`) mark the VM as changed."""
        doing = f"calling the Engine API ({method} {path})"
        agent = self._agent_for(doing)
        if not pristine:
            self.pristine = False
        seconds = self.scaled(timeout)
        if isinstance(body, bytes):
            data, headers = body, {"Content-Type": "application/x-tar"}
        elif body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        else:
            data, headers = None, {}
        connection = agent.http(SOCKET, seconds)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except ConnectionRefusedError as err:
            raise DaemonUnreachable(doing, str(err), self._context()) from None
        except AgentLost as err:
            raise self._lost(doing, str(err)) from None
        except TimeoutError:
            raise WaitTimeout(f"dockerd to answer {method} {path}", seconds,
                              context=self._context()) from None
        except (OSError, http.client.HTTPException) as err:
            raise DaemonUnreachable(doing, f"{type(err).__name__}: {err}",
                                    self._context()) from None
        finally:
            connection.close()

    def _engine_ok(self, method: str, path: str, body: Any = None, *,
                   timeout: float = TIMEOUT, pristine: bool = False) -> bytes:
        """_engine's answer, or CheckFailed with the daemon's message for an error status."""
        status, answer = self._engine(method, path, body, timeout=timeout, pristine=pristine)
        if status >= 400:
            raise CheckFailed(f"the Engine API answered {method} {path} with {status}: "
                              f"{shorten(answer.decode(errors='replace'))}", self._context())
        return answer

    def api(self, method: str, path: str, timeout: float = TIMEOUT) -> Any:
        """One Engine API call; the decoded JSON reply (None when empty). `path` is the URL
        path with its query, already URL-encoded (`/containers/web/json`)."""
        answer = self._engine_ok(method, path, timeout=timeout)
        return json.loads(answer) if answer.strip() else None

    def create_network(self, name: str) -> str:
        """Creates the user-defined bridge network `name`; returns its id.

        Containers started with `run_container(..., name=..., network=name)` reach each other
        by their container names, which Docker's embedded DNS (127.0.0.11) resolves on
        user-defined networks (not on the default bridge)."""
        body = {"Name": docker_name("network", name), "Driver": "bridge",
                "CheckDuplicate": True}
        return str(json.loads(self._engine_ok("POST", "/networks/create", body))["Id"])

    @property
    def docker_host(self) -> str:
        """A URL for DOCKER_HOST that reaches this VM's dockerd from the host, e.g.
        `docker.DockerClient(base_url=vm.docker_host)` or `DOCKER_HOST=... docker ps`.

        It is `unix:///tmp/cimages-docker-XXXX/docker.sock`: a socket in a fresh 0700
        directory, served by a thread of this process; the VM's agent carries each
        connection to it to /var/run/docker.sock in the VM. Why not a TCP port: dockerd
        listening on TCP in the guest, forwarded to the host's 127.0.0.1, would be
        unauthenticated root on the VM for every local user and, as QEMU's user networking
        maps 10.0.2.2 to the host's loopback, for every other VM of this host and their
        containers (parallel workers' VMs included); containers in this VM would reach it
        too. The socket is reachable only by this user, the guest gets no listener, and the
        VM root and its snapshots stay as they are (an unauthenticated TCP listener also
        costs dockerd a deliberate one-second sleep at start).

        Valid, at the same URL, across restores of this Machine (load_image restoring a
        derived snapshot, restore()) until crash() or shutdown(). The first connection
        through it marks the VM as changed, so load_image no longer derives snapshots from
        it: load images before driving Docker from outside. Ports of containers started
        this way are published inside the VM; forward_port makes one reachable from the
        host.
        """
        if self._docker_tunnel is None:
            self._ensure_started()
            self._docker_tunnel = DockerTunnel(self._docker_connection)
        return self._docker_tunnel.url

    def _docker_connection(self) -> socket.socket:
        """A connection to dockerd's socket in the VM, for one tunnel connection (called
        by the tunnel's threads)."""
        agent = self._agent_for("opening a docker_host connection")
        self.pristine = False  # a client may change anything now
        return agent.connect(SOCKET, self.scaled(30))

    def crash(self) -> None:
        super().crash()
        if self._docker_tunnel is not None:
            self._docker_tunnel.close()
            self._docker_tunnel = None

    def load_image(self, image: Any, timeout: float = 120) -> str:
        """Loads a docker-archive (a BuildResult or a path) into dockerd; returns its
        name:tag.

        The image goes in as a few merged layers (grouped.py). On a VM still exactly as
        restored, the result is itself snapshotted (derived.py), so the next test loading it
        restores that instead: under TCG, dockerd needs many seconds to unpack an image and
        a restore well under two. After an edit, the snapshot of the image's nearest earlier
        load is restored and only the layers it lacks are sent.
        """
        archive = Path(getattr(image, "archive", image))
        parent = self.snapshot
        if not self.is_up() and parent is not None:
            self.pristine = True  # it starts as the snapshot, untouched
        if not self.pristine or parent is None:
            return self._load(grouped(archive), timeout)
        derived = derived_path(parent, str(getattr(image, "digest", "") or _file_key(archive)))
        hold(derived)  # in use until this process ends: `cimages cache --gc` leaves it
        record = record_of(derived)
        if record is not None:
            self.restore(derived)
            return record.ref
        vm_image = grouped(archive)
        near = nearest(parent, vm_image)
        if near is not None:
            self.restore(near.snapshot)
        ref = self._load(vm_image, timeout, near)
        self.take_snapshot(derived, resume=True)
        save_record(derived, parent, ref, vm_image)
        self.snapshot, self.pristine = derived, True
        return ref

    def _load(self, image: GroupedImage, timeout: float, near: Nearest | None = None) -> str:
        """docker load of `image`, leaving out the groups the VM restored from `near` has;
        the image `near` loaded is removed once the new one took its tags."""
        skip = near.shared if near is not None else 0
        if sum(g.size for g in image.groups[skip:]) <= AGENT_LOAD_MAX:
            archive = io.BytesIO()
            image.write_archive(archive, skip)
            code, answer = self._engine("POST", LOAD, archive.getvalue(), timeout=timeout,
                                        pristine=True)
            status, out = (0 if code == 200 else code), answer.decode(errors="replace")
        else:
            script = (f"set -o pipefail; curl -sSf {{url}} | curl -sS --fail-with-body "
                      f"--unix-socket {SOCKET} http://docker{LOAD} -X POST "
                      "-H 'Content-Type: application/x-tar' -T -")
            with served(lambda out: image.write_archive(out, skip)) as url:
                status, out = self._run(script.format(url=url), self.scaled(timeout))
        if status != 0 or "errorDetail" in out or "Loaded image" not in out:
            raise CheckFailed(f"docker load of {image.repo_tags or image.image_id} failed "
                              f"(exit {status}): {shorten(out)}", self._context())
        if near is not None and near.record.image_id != image.image_id:
            self._engine_ok("DELETE", f"/images/{near.record.image_id}", timeout=timeout,
                            pristine=True)
        messages = [json.loads(line) for line in out.splitlines() if line.strip()]
        loaded = [m["stream"] for m in messages if "Loaded image" in m.get("stream", "")]
        return str(loaded[-1].split(":", 1)[1].strip())

    def run_container(self, image: str, *command: str, name: str | None = None,
                      ports: dict[int, int] | None = None, env: dict[str, str] | None = None,
                      network: str | None = None, detach: bool = True, options: str = "",
                      timeout: float = 120) -> str:
        """`docker run`: the container id when detached, else the container's output (and
        CommandFailed if it exits non-zero), the container removed once it exited. `network`: a
        network from create_network (the container joins it instead of the default bridge
        and is found there by `name`). `options` is extra docker CLI text, passed as is to
        the CLI; without it this is Engine API calls (create, start; then wait, logs,
        remove when not detached), not the CLI, whose start-up alone costs most of a second
        under TCG."""
        if name is not None:
            docker_name("container", name)
        if network is not None:
            docker_name("network", network)
        if options:
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
        created = self._engine_ok("POST", f"/containers/create{query}", body, timeout=timeout)
        container = str(json.loads(created)["Id"])
        self._engine_ok("POST", f"/containers/{container}/start", timeout=timeout)
        if detach:
            return container
        status = self._wait_exit(container, container[:12], timeout)
        output = self._logs(container)
        self._engine_ok("DELETE", f"/containers/{container}", timeout=timeout)
        if status != 0:
            raise CommandFailed(f"docker run {image} {shlex.join(command)}".strip(), status,
                                output, self._context())
        return output

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
        and logs shown) if container `name` stops.

        The loop runs in the VM (wait_in_vm); after each miss it checks the container's
        main process, looked up once, with a builtin: an API call per attempt cost the one
        vCPU 390 ms under TCG, taken from the container starting. A container restarted by
        its restart policy has a new process, and so counts as stopped."""
        pid = int(self.container_state(name).get("Pid") or 0)
        try:
            return self.wait_in_vm(command, succeed=True, timeout=timeout,
                                   give_up_if=f"[ ! -d /proc/{pid} ]",
                                   gave_up=f"container {name} stopped")
        except WaitAbandoned as err:
            raise self._stopped(name, err.what, err.last) from None

    def wait_for_container_log(self, name: str, regex: str, timeout: float = TIMEOUT) -> None:
        """Waits until the running container `name` has logged a line matching `regex`
        (Python's re, multi-line), failing at once if it stops. Engine API calls only: no
        process in the VM per attempt."""
        pattern = re.compile(regex, re.MULTILINE)
        what = f"container {name} to log /{regex}/"
        last = ""

        def attempt() -> bool | None:
            nonlocal last
            last = self.container_logs(name)
            if pattern.search(last):
                return True
            if not self.container_state(name)["Running"]:
                raise self._stopped(name, what, last)
            return None

        self.retry(attempt, what, timeout, last=lambda: last, interval=(0.05, 0.2))

    def _stopped(self, name: str, what: str, last: str) -> WaitAbandoned:
        state = self.container_state(name)
        return WaitAbandoned(what, f"container {name} stopped", last,
                             f"It exited with code {state['ExitCode']}; its logs:\n"
                             f"{shorten(self.container_logs(name))}")

    def container_state(self, name: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/containers/{quote(name, safe='')}/json")["State"])

    def wait_for_container_exit(self, name: str, timeout: float = TIMEOUT) -> int:
        """The exit code of a container once it stopped (one blocking Engine API call)."""
        return self._wait_exit(quote(name, safe=""), name, timeout)

    def _wait_exit(self, container: str, name: str, timeout: float) -> int:
        try:
            answer = self._engine_ok("POST", f"/containers/{container}/wait", timeout=timeout)
        except WaitTimeout:
            raise WaitTimeout(f"container {name} to exit", self.scaled(timeout),
                              f"state {self.container_state(container)}",
                              f"its logs:\n{shorten(self._logs(container))}") from None
        return int(json.loads(answer)["StatusCode"])

    def container_logs(self, name: str) -> str:
        """stdout and stderr of a container, interleaved as written."""
        return self._logs(quote(name, safe=""))

    def _logs(self, container: str) -> str:
        return demux_logs(self._engine_ok("GET", f"/containers/{container}/logs"
                                          "?stdout=1&stderr=1"))

    def container_exec(self, name: str, *command: str, timeout: float = 120) -> str:
        """`docker exec`: runs `command` in the running container `name` and returns its
        output (stdout and stderr), or raises CommandFailed if it exits non-zero. Engine API
        calls (create, start until it ends, inspect), not the CLI."""
        if not command:
            raise RequestRefused("container_exec needs a command to run in the container")
        container = quote(name, safe="")
        created = self._engine_ok("POST", f"/containers/{container}/exec",
                                  {"Cmd": list(command), "AttachStdout": True,
                                   "AttachStderr": True}, timeout=timeout)
        exec_id = quote(str(json.loads(created)["Id"]), safe="")
        output = demux_logs(self._engine_ok("POST", f"/exec/{exec_id}/start",
                                            {"Detach": False, "Tty": False},
                                            timeout=timeout))
        status = int(self.api("GET", f"/exec/{exec_id}/json", timeout)["ExitCode"])
        if status != 0:
            raise CommandFailed(f"docker exec {name} {shlex.join(command)}", status, output,
                                self._context())
        return output

    def containers(self, timeout: float = TIMEOUT) -> list[str]:
        """Names of all containers, running or not."""
        listed = self.api("GET", "/containers/json?all=1", timeout)
        return [c["Names"][0].lstrip("/") for c in listed]

    def dockerd_log(self) -> str:
        return self.execute("cat /var/log/dockerd.log")[1]


class DockerTunnel:
    """A host unix socket whose every connection is carried to dockerd in the VM by a
    connection from `connect` (see Machine.docker_host for why)."""

    def __init__(self, connect: Callable[[], socket.socket]) -> None:
        self._connect = connect
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
            # Any failure (the VM gone or restarting, its agent's connection cut) ends this
            # connection only: the client sees its socket closed, as from a daemon that went
            # away.
            with contextlib.suppress(Exception):
                pump(client, self._connect())
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


def pump(client: socket.socket, remote: socket.socket) -> None:
    """Copies bytes both ways between `client` and `remote` until `remote` ends. The client's
    end of input is passed on as a half-close, so a request still gets its whole reply; the
    remote's end ends the connection. Both are closed on return."""
    sources = [client, remote]
    try:
        while True:
            ready, _, _ = select.select(sources, [], [])
            if client in ready:
                data = client.recv(TUNNEL_BUFFER)
                if data:
                    remote.sendall(data)
                else:
                    remote.shutdown(socket.SHUT_WR)
                    sources.remove(client)
            if remote in ready:
                data = remote.recv(TUNNEL_BUFFER)
                if not data:
                    return
                client.sendall(data)
    except OSError:  # a side went away
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


def _file_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
                          ).hexdigest()
