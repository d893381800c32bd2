"""`cimages copy FILE docker-daemon:NAME:TAG` through Docker's Engine API: the docker-archive
streamed to `POST /images/load`, then tagged as asked.

Not through skopeo: Debian 12's skopeo 1.9 speaks Engine API 1.22, which Docker 25 and later
refuse ("client version 1.22 is too old"), and the daemon does the whole load itself anyway.
Unversioned paths take the daemon's own API version, so any Docker answers.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import urllib.parse
from pathlib import Path

from framework.errors import UserError, shorten

LOAD_TIMEOUT = 900  # seconds: a big image into a slow daemon (a VM under TCG)
CONNECT_TIMEOUT = 5
DEFAULT_HOST = "unix:///var/run/docker.sock"


def daemon_host() -> str:
    """The daemon the Docker tools would use: $DOCKER_HOST, else the local socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def answering(host: str) -> None:
    """Checks that a daemon answers at `host`, so that a missing one is said plainly, before
    a build."""
    parts = urllib.parse.urlsplit(host)
    fix = ("start dockerd, or set DOCKER_HOST to the daemon's URL (unix:///PATH or "
           "tcp://HOST:PORT; the VM tier's vm.docker_host is one)")
    try:
        if parts.scheme == "unix":
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(CONNECT_TIMEOUT)
                sock.connect(parts.path)
        elif parts.scheme in ("tcp", "http", "https"):
            socket.create_connection((parts.hostname or "", parts.port or 2375),
                                     timeout=CONNECT_TIMEOUT).close()
        else:
            raise UserError(f"DOCKER_HOST `{host}` is not a unix:// or tcp:// URL: {fix}")
    except OSError as err:
        raise UserError(f"no Docker daemon answers at {host} "
                        f"({err.strerror or type(err).__name__}): {fix}") from None




class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def _connection(host: str) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(host)
    if parts.scheme == "unix":
        return _UnixConnection(parts.path, LOAD_TIMEOUT)
    certs = os.environ.get("DOCKER_CERT_PATH")
    if certs:  # a TLS daemon, as the docker CLI reaches it: ca.pem, cert.pem, key.pem there
        context = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
        context.load_cert_chain(os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem"))
        return http.client.HTTPSConnection(parts.hostname or "localhost", parts.port or 2376,
                                           timeout=LOAD_TIMEOUT, context=context)
    return http.client.HTTPConnection(parts.hostname or "localhost", parts.port or 2375,
                                      timeout=LOAD_TIMEOUT)


def _request(host: str, method: str, path: str, body: object = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = _connection(host)
    try:
        connection.request(method, path, body=body, headers=headers or {})  # type: ignore[arg-type]
        response = connection.getresponse()
        return response.status, response.read()
    except OSError as err:
        raise UserError(f"the Docker daemon at {host} broke off ({err}); check that dockerd "
                        "runs and has room for the image") from err
    finally:
        connection.close()


def load(archive: Path, source: str, reference: str) -> None:
    """Loads the docker-archive (whose image is named `source`) into the daemon of
    $DOCKER_HOST and names it `reference` (NAME:TAG)."""
    host = daemon_host()
    with archive.open("rb") as data:
        status, answer = _request(host, "POST", "/images/load?quiet=1", data, {
            "Content-Type": "application/x-tar",
            "Content-Length": str(archive.stat().st_size)})
    errors = [json.loads(line).get("errorDetail", {}).get("message", "")
              for line in answer.splitlines() if b"errorDetail" in line]
    if status != 200 or errors:
        raise UserError(f"the Docker daemon at {host} refused the image (HTTP {status}: "
                        f"{shorten('; '.join(errors) or answer.decode(errors='replace'))}); "
                        "check that dockerd runs and has room for it")
    if reference != source:
        name, _, tag = reference.rpartition(":")
        query = urllib.parse.urlencode({"repo": name, "tag": tag})
        status, answer = _request(host, "POST",
                                  f"/images/{urllib.parse.quote(source, safe='')}/tag?{query}")
        if status != 201:
            raise UserError(f"the Docker daemon at {host} could not tag the image "
                            f"{reference} (HTTP {status}: {shorten(answer.decode())}); "
                            "check the name")
