"""A private OCI registry on 127.0.0.1 for tests and the bench: Debian's `docker-registry`
(distribution 2.8) on a free port, its own config file and storage folder, optionally with
authentication: htpasswd (Basic) or a token service (Bearer, as Docker Hub, GHCR and
Harbor do: a small one here, RS256 JWTs from a self-signed key the registry trusts);
stopped by `stop()`, and killed with its parent."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
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
                 auth: str = "htpasswd", log_level: str = "info") -> None:
        self.directory = directory
        self.users = users or {}
        self.auth = auth  # with users: "htpasswd" or "token"
        self.log_level = log_level
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._tokens: TokenService | None = None  # with auth="token"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def tokens(self) -> TokenService | None:
        return self._tokens

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
            # Debian's default configuration keeps blob descriptors in memory, as a real
            # registry keeps them in redis: a HEAD is then a lookup, not a walk of the folder.
            "storage": {"filesystem": {"rootdirectory": str(self.storage)},
                        "cache": {"blobdescriptor": "inmemory"},
                        "delete": {"enabled": True}},
            "http": {"addr": self.address},
        }
        if self.users and self.auth == "token":
            if self._tokens is None:
                self._tokens = TokenService(self.directory / "token", self.users)
            config["auth"] = {"token": {
                "realm": f"http://{self._tokens.address}/token", "service": TokenService.SERVICE,
                "issuer": TokenService.ISSUER, "rootcertbundle": str(self._tokens.certificate)}}
        elif self.users:
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
        if self._tokens is not None:
            self._tokens.close()
            self._tokens = None
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


class TokenService:
    """The token endpoint of distribution's token auth: GET /token?service=&scope=... with
    Basic credentials of a known user grants the scopes asked for; without credentials
    (or with wrong ones: 401) nothing. Tokens are RS256 JWTs whose x5c header carries the
    self-signed certificate the registry has as its root bundle."""

    SERVICE = "cimages-test-registry"
    ISSUER = "cimages-test-token-service"

    def __init__(self, directory: Path, users: dict[str, str]) -> None:
        import datetime
        import http.server
        import json
        import urllib.parse

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
        from cryptography.x509.oid import NameOID

        directory.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        self.certificate = directory / "root.pem"
        self.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.issued: list[dict[str, object]] = []  # the claims of every token, for tests

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        def token(subject: str, scopes: list[str]) -> str:
            access = []
            for scope in scopes:
                kind, _, rest = scope.partition(":")
                repository, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": repository,
                               "actions": actions.split(",") if subject else []})
            issued = int(time.time())
            claims = {"iss": self.ISSUER, "sub": subject, "aud": self.SERVICE,
                      "exp": issued + 300, "nbf": issued - 10, "iat": issued,
                      "jti": base64.b16encode(os.urandom(8)).decode(), "access": access}
            self.issued.append(claims)
            header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
            signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
            signature = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
            return f"{signing}.{b64(signature)}"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                subject = ""
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if users.get(user) != password:
                        self.send_response(401)
                        self.end_headers()
                        return
                    subject = user
                body = json.dumps({"token": token(subject, query.get("scope", [])),
                                   "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
