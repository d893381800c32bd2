"""`Machine`: a VM of the docker-host root with the Docker helpers of SPEC section 6.

Helpers talk to the Engine API with curl over the unix socket where they can: each `docker`
CLI call costs most of a second under TCG.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
from pathlib import Path
from typing import Any

from framework.vm.cache import cache_dir
from framework.vm.fileserver import served
from framework.vm.flatten import flattened
from framework.vm.machine import MachineError, QemuMachine

# Bumped when what load_image does to an image changes, so derived snapshots are remade.
DERIVED_RECIPE = "flat1"
SOCKET = "/var/run/docker.sock"
API = f"curl -sS --unix-socket {SOCKET} http://docker"


class Machine(QemuMachine):
    def wait_for_docker(self, timeout: float = 60) -> None:
        self.wait_until_succeeds(f"{API}/_ping", timeout)

    def api(self, method: str, path: str, timeout: float = 60) -> Any:
        """One Engine API call; the decoded JSON reply (None when empty)."""
        out = self.succeed(f"{API}{path} -X {method} -f", timeout=timeout)
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
            tmp = derived.with_name(f".{derived.stem}.{os.getpid()}.ref")
            tmp.write_text(ref)
            tmp.replace(derived.with_suffix(".ref"))
            self.take_snapshot(derived, resume=True)
            self.snapshot, self.pristine = derived, True
        return ref

    def run_container(self, image: str, *command: str, name: str | None = None,
                      ports: dict[int, int] | None = None, env: dict[str, str] | None = None,
                      detach: bool = True, options: str = "", timeout: float = 120) -> str:
        """`docker run`: the container id when detached, else the container's output."""
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
        deadline = time.monotonic() + self.timeout(timeout)
        out = ""
        while time.monotonic() < deadline:
            status, out = self.execute(command, timeout)
            if status == 0:
                return out
            state = self.container_state(name)
            if not state["Running"]:
                raise MachineError(
                    f"container {name} stopped (exit code {state['ExitCode']}) while waiting "
                    f"for `{command}`; its logs:\n{self.container_logs(name)[-2000:]}")
            time.sleep(0.2)
        raise MachineError(f"timed out after {self.timeout(timeout):.0f} s waiting for "
                           f"`{command}`; last output:\n{out[-2000:]}")

    def container_state(self, name: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/containers/{name}/json")["State"])

    def wait_for_container_exit(self, name: str, timeout: float = 60) -> int:
        """The exit code of a container once it stopped."""
        deadline = time.monotonic() + self.timeout(timeout)
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.container_state(name)
            if not state["Running"] and state["Status"] != "created":
                return int(state["ExitCode"])
            time.sleep(0.3)
        raise MachineError(f"container {name} still running after {self.timeout(timeout):.0f} s; "
                           f"last state {state}; logs:\n{self.container_logs(name)[-2000:]}")

    def container_logs(self, name: str) -> str:
        return self.succeed(f"docker logs {shlex.quote(name)} 2>&1")

    def containers(self, timeout: float = 60) -> list[str]:
        """Names of all containers, running or not."""
        listed = self.api("GET", "/containers/json?all=1", timeout)
        return [c["Names"][0].lstrip("/") for c in listed]

    def dockerd_log(self) -> str:
        return self.execute("cat /var/log/dockerd.log")[1]


def _file_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
                          ).hexdigest()
