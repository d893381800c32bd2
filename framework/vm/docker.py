"""`Machine`: a VM of the docker-host root with the Docker helpers of SPEC section 6.

Helpers talk to the Engine API with curl over the unix socket where they can: each `docker`
CLI call costs most of a second under TCG.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import quote

from framework.atomic import write_atomic
from framework.vm.cache import cache_dir
from framework.vm.fileserver import served
from framework.vm.flatten import flattened
from framework.vm.machine import MachineError, QemuMachine, WaitAbandoned

# Bumped when what load_image does to an image changes, so derived snapshots are remade.
DERIVED_RECIPE = "flat1"
SOCKET = "/var/run/docker.sock"
# --fail-with-body: a refused call exits non-zero and still prints the daemon's message.
CURL = f"curl -sS --fail-with-body --unix-socket {SOCKET}"
API = f"{CURL} http://docker"


class Machine(QemuMachine):
    def wait_for_docker(self, timeout: float = 60) -> None:
        self.wait_until_succeeds(f"{API}/_ping", timeout)

    def api(self, method: str, path: str, timeout: float = 60) -> Any:
        """One Engine API call; the decoded JSON reply (None when empty)."""
        out = self.succeed(f"{API}{path} -X {method}", timeout=timeout)
        return json.loads(out) if out.strip() else None

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
            ref_file = derived.with_suffix(".ref")
            if derived.exists() and ref_file.exists():
                self.restore(derived)
                return ref_file.read_text()
        flat = flattened(archive, digest)
        with served(flat) as url:
            status, out = self._run(
                f"set -o pipefail; curl -sSf {url} | {API}/images/load?quiet=1 -X POST "
                "-H 'Content-Type: application/x-tar' -T -", timeout)
        if status != 0 or "errorDetail" in out or "Loaded image" not in out:
            raise MachineError(f"docker load of {archive} failed (exit {status}): {out[-2000:]}")
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
                      detach: bool = True, options: str = "", timeout: float = 120) -> str:
        """`docker run`: the container id when detached, else the container's output (and a
        MachineError if it exits non-zero). Detached and without `options` this is one SSH
        command of Engine API calls (create, start), not the docker CLI, whose start-up alone
        costs most of a second under TCG. Not detached, the CLI is kept: create, start, wait,
        logs and remove through the API were measured slower (8 s against 5.7 s for hello),
        as the CLI attaches before starting and dockerd removes the container on its own."""
        if options or not detach:
            return self._run_container_cli(image, *command, name=name, ports=ports, env=env,
                                           detach=detach, options=options, timeout=timeout)
        body: dict[str, Any] = {"Image": image, "Env": [f"{k}={v}" for k, v in
                                                        (env or {}).items()]}
        if command:
            body["Cmd"] = list(command)
        if ports:
            body["ExposedPorts"] = {f"{c}/tcp": {} for c in ports.values()}
            body["HostConfig"] = {"PortBindings": {f"{c}/tcp": [{"HostPort": str(h)}]
                                                   for h, c in ports.items()}}
        query = f"?name={quote(name, safe='')}" if name else ""
        # Plain bash: the VM has no sed or jq.
        failed = '|| { echo "$out"; exit 1; }'
        script = [
            "set -eo pipefail",
            f"out=$({CURL} -X POST -H 'Content-Type: application/json' --data-binary @- "
            f"http://docker/containers/create{query} <<'CIMAGES_JSON'",
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
                           detach: bool, options: str, timeout: float) -> str:
        args = ["docker", "run"] + (["-d"] if detach else ["--rm"])
        if name:
            args += ["--name", name]
        for host, container in (ports or {}).items():
            args += ["-p", f"{host}:{container}"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        cmd = " ".join(map(shlex.quote, args)) + f" {options} " + " ".join(
            map(shlex.quote, [image, *command]))
        return self.succeed(cmd, timeout=timeout).strip()

    def wait_while_running(self, name: str, command: str, timeout: float = 60) -> str:
        """wait_until_succeeds(command), failing at once if container `name` stops."""
        url = shlex.quote(f"http://docker/containers/{quote(name, safe='')}/json")
        running = f"{CURL} {url} | grep -q '\"Running\":true'"
        try:
            return self.wait_in_vm(command, succeed=True, timeout=timeout,
                                   give_up_if=f"! {running}",
                                   gave_up=f"container {name} stopped")
        except WaitAbandoned as err:
            state = self.container_state(name)
            raise MachineError(f"{err}\nIt exited with code {state['ExitCode']}; its logs:\n"
                               f"{self.container_logs(name)[-2000:]}") from None

    def wait_for_container_log(self, name: str, regex: str, timeout: float = 60) -> None:
        """Waits until the running container `name` has logged a line matching `regex`
        (grep -E), failing at once if it stops. Engine API, so no Go CLI start per attempt."""
        url = shlex.quote(f"http://docker/containers/{quote(name, safe='')}/logs"
                          "?stdout=1&stderr=1")
        self.wait_while_running(name, f"{CURL} {url} | grep -aqE {shlex.quote(regex)}",
                                timeout)

    def container_state(self, name: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/containers/{name}/json")["State"])

    def wait_for_container_exit(self, name: str, timeout: float = 60) -> int:
        """The exit code of a container once it stopped (one blocking Engine API call)."""
        seconds = self.timeout(timeout)
        url = shlex.quote(f"http://docker/containers/{quote(name, safe='')}/wait")
        status, out = self.execute(f"{CURL} --max-time {seconds:.0f} -X POST {url}", timeout + 30)
        if status == 0:
            return int(json.loads(out)["StatusCode"])
        if status != 28:  # curl's "operation timed out"
            raise MachineError(f"waiting for container {name} to exit failed: {out[-2000:]}")
        raise MachineError(f"container {name} still running after {seconds:.0f} s; last state "
                           f"{self.container_state(name)}; logs:\n"
                           f"{self.container_logs(name)[-2000:]}")

    def container_logs(self, name: str) -> str:
        """stdout and stderr of a container, interleaved as written (Engine API, no CLI)."""
        url = shlex.quote(f"http://docker/containers/{quote(name, safe='')}/logs"
                          "?stdout=1&stderr=1")
        out = self.succeed(f"set -o pipefail; {CURL} {url} | base64 -w0")
        return demux_logs(base64.b64decode(out.strip()))

    def containers(self, timeout: float = 60) -> list[str]:
        """Names of all containers, running or not."""
        listed = self.api("GET", "/containers/json?all=1", timeout)
        return [c["Names"][0].lstrip("/") for c in listed]

    def dockerd_log(self) -> str:
        return self.execute("cat /var/log/dockerd.log")[1]


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
