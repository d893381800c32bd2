"""A private OCI registry on 127.0.0.1 for tests and the bench: Debian's `docker-registry`
(distribution 2.8) on a free port, its own config file and storage folder, optionally with
htpasswd (bcrypt) authentication; stopped by `stop()`, and killed with its parent."""

from __future__ import annotations

import contextlib
import http.client
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import yaml

from framework.errors import UserError
from framework.net import free_port
from framework.processes import die_with_parent

START_TIMEOUT = 20.0
PROGRAM = "docker-registry"


def htpasswd_line(user: str, password: str) -> str:
    """One bcrypt htpasswd line (distribution reads only bcrypt). bcrypt comes with paramiko,
    a dependency already; Apache's htpasswd is the fallback."""
    try:
        import bcrypt
    except ImportError:
        if not shutil.which("htpasswd"):
            raise UserError("neither the bcrypt module nor htpasswd is installed: "
                            "`apt-get install apache2-utils`") from None
        done = subprocess.run(["htpasswd", "-nbB", user, password], capture_output=True,
                              text=True, check=True, timeout=30)
        return done.stdout.strip()
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    return f"{user}:{hashed}"


class LocalRegistry:
    """`with LocalRegistry(folder) as registry:` ... `registry.address` is host:port."""

    def __init__(self, directory: Path, *, users: dict[str, str] | None = None,
                 log_level: str = "info") -> None:
        self.directory = directory
        self.users = users or {}
        self.log_level = log_level
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.directory / "storage"

    @property
    def log(self) -> Path:
        return self.directory / "registry.log"

    def _config(self) -> Path:
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": self.log_level, "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)},
                        "delete": {"enabled": True}},
            "http": {"addr": self.address},
        }
        if self.users:
            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text("".join(htpasswd_line(u, p) + "\n"
                                        for u, p in self.users.items()))
            config["auth"] = {"htpasswd": {"realm": "cimages-test", "path": str(htpasswd)}}
        path = self.directory / "config.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self) -> LocalRegistry:
        if shutil.which(PROGRAM) is None:
            raise UserError(f"{PROGRAM} is not installed: `apt-get install docker-registry` "
                            "(make setup installs it)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        for _ in range(5):  # another process may take the free port first
            self.port = free_port()
            with self.log.open("ab") as log:
                self._process = subprocess.Popen(
                    [PROGRAM, "serve", str(self._config())], stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
            if self._wait_ready():
                return self
        self.stop()
        raise RuntimeError(f"{PROGRAM} did not start; its log: {self.log}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", "/v2/")
                if conn.getresponse().status in (200, 401):
                    return True
            except OSError:
                time.sleep(0.05)
            finally:
                conn.close()
        self.stop()
        raise RuntimeError(f"{PROGRAM} did not answer in {START_TIMEOUT} s; log: {self.log}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stored_blobs(self) -> dict[str, int]:
        """digest -> size of every blob in the storage (what was uploaded, once each)."""
        root = self.storage / "docker/registry/v2/blobs/sha256"
        return {f"sha256:{p.parent.name}": p.stat().st_size
                for p in root.glob("*/*/data")} if root.is_dir() else {}


class CountingProxy:
    """A TCP relay to `port` on 127.0.0.1 that counts the bytes clients send through it: the
    bytes a push really put on the wire (bodies, headers and all), whichever tool pushed."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.sent = 0  # client -> server bytes, every connection
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> int:
        with self._lock:
            sent, self.sent = self.sent, 0
        return sent

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for source, sink, counted in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, counted),
                                 daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(1 << 20):
                if counted:
                    with self._lock:
                        self.sent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._server.close()
        with self._lock:
            for end in self._open:
                end.close()
            self._open.clear()

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
