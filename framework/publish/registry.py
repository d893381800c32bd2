"""A client of the OCI distribution API (what `docker push` speaks), for what a push needs:
ping and authentication (Basic, or Bearer tokens from the registry's token service), blob
HEAD, cross-repository mount, monolithic blob upload, manifest PUT; and for a base image
(`image.from`), manifest and blob GET.

One keep-alive connection per thread (the push runs a few threads), so a push of an image
whose blobs are all there costs one round trip per blob on open connections. Every network
wait has a timeout; every failure a user can fix is a UserError naming cause and fix, and no
message holds a credential."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from framework.errors import UserError
from framework.publish.auth import Credentials, searched
from framework.publish.reference import Reference

TIMEOUT = 60.0  # seconds without progress on one request
BLOCK = 1 << 20  # bytes per socket write of an upload
USER_AGENT = "cimages"


class Stream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


Body = bytes | Callable[[], Stream] | None  # a callable gives a fresh stream per attempt
Sink = Callable[[Stream], None]  # reads a whole answer body


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


class Aborted(Exception):
    """Raised inside a worker when the push is being abandoned (Ctrl-C, another failure)."""


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {realm, service, ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    while rest:
        key, _, rest = rest.strip().lstrip(",").strip().partition("=")
        if rest.startswith('"'):
            value, _, rest = rest[1:].partition('"')
        else:
            value, _, rest = rest.partition(",")
        if key:
            params[key.strip().lower()] = value
    return scheme.lower(), params


def registry_errors(body: bytes) -> str:
    """The codes and messages of an error answer, short (registries echo no secrets here)."""
    try:
        errors = json.loads(body).get("errors") or []
        text = "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".strip()
                         for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        text = body.decode(errors="replace").strip()
    return text[:300]


class Registry:
    """One repository of one registry, as the push sees it."""

    def __init__(self, ref: Reference, credentials: Credentials | None, *,
                 tls_verify: bool = True, authfile_hint: str = "",
                 actions: str = "pull,push") -> None:
        self.ref = ref
        self.credentials = credentials
        self.tls_verify = tls_verify
        self.scheme = "https"
        self._auth_hint = authfile_hint or searched()
        self._scopes = [f"repository:{ref.repository}:{actions}"]
        self._doing = "pushing to" if "push" in actions else "pulling from"
        self._bearer: dict[str, str] | None = None  # the token service's challenge
        self._authorization: str | None = None
        self._auth_lock = threading.Lock()
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._all_lock = threading.Lock()
        self.abort = threading.Event()
        self._ssl: ssl.SSLContext | None = None
        self.ping_seconds = 0.0

    # Connections -------------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        """One per push: loading the system's CAs takes ~20 ms, and without verification
        nothing needs them."""
        if self._ssl is None:
            if self.tls_verify:
                self._ssl = ssl.create_default_context()
            else:
                self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        return self._ssl

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and not fresh:
            return conn
        if conn is not None:
            conn.close()
        if self.scheme == "https":
            conn = http.client.HTTPSConnection(self.ref.endpoint, timeout=TIMEOUT,
                                               context=self._context(), blocksize=BLOCK)
        else:
            conn = http.client.HTTPConnection(self.ref.endpoint, timeout=TIMEOUT,
                                              blocksize=BLOCK)
        self._local.conn = conn
        with self._all_lock:
            self._all.append(conn)
        return conn

    def close(self) -> None:
        """Closes every thread's connection (an upload in flight then fails at once)."""
        with self._all_lock:
            for conn in self._all:
                if conn.sock is not None:
                    with contextlib.suppress(OSError):
                        conn.sock.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._all.clear()

    def _unreachable(self, err: BaseException) -> UserError:
        where = f"{self.scheme}://{self.ref.endpoint}"
        if isinstance(err, ssl.SSLCertVerificationError):
            return UserError(f"the registry {where} has a TLS certificate that is not trusted "
                             f"({err.verify_message}): install its CA, or pass "
                             "--tls-verify=false for a registry you trust")
        if isinstance(err, ssl.SSLError):
            return UserError(f"the registry {where} did not speak TLS ({err.reason}): for a "
                             "registry that serves plain HTTP (e.g. a local one) pass "
                             "--tls-verify=false")
        if isinstance(err, socket.gaierror):
            return UserError(f"the registry host `{self.ref.endpoint}` is unknown "
                             f"({err.strerror}): check the host in the reference")
        if isinstance(err, TimeoutError):
            return UserError(f"the registry {where} did not answer in {TIMEOUT:.0f} s: check "
                             "that it is running and reachable")
        reason = getattr(err, "strerror", None) or type(err).__name__
        return UserError(f"the registry {where} is not reachable ({reason}): start it, or "
                         "check the host and port in the reference")

    # Requests ----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"/v2/{self.ref.repository}/{path}"

    def _once(self, method: str, target: str, body: Body,
              headers: dict[str, str], sink: Sink | None = None) -> Response:
        """One request on this thread's connection; a kept-alive connection the server
        closed meanwhile is opened again once. `sink` reads a 200 answer's body itself
        (from its start again when the request is repeated)."""
        headers = {"User-Agent": USER_AGENT, **headers}
        for attempt in (0, 1):
            conn = self._connection(fresh=attempt == 1)
            reused = conn.sock is not None
            stream = body() if callable(body) else body
            try:
                conn.request(method, target, body=stream, headers=headers)
                answer = conn.getresponse()
                if sink is not None and answer.status == 200:
                    sink(answer)
                    data = b""
                else:
                    data = answer.read(1 << 20)  # for a HEAD: b"", and the answer is done
                if answer.will_close or not answer.isclosed():
                    # A body we did not read fully, or a server that closes: start anew.
                    conn.close()
                return Response(answer.status, answer.headers, data)
            except Aborted:
                conn.close()
                raise
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as err:
                conn.close()
                if self.abort.is_set():
                    raise Aborted() from None
                if not reused or attempt == 1:
                    raise self._unreachable(err) from None
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                if self.abort.is_set():
                    raise Aborted() from None
                if isinstance(err, http.client.HTTPException):
                    raise UserError(f"the registry {self.scheme}://{self.ref.endpoint} gave "
                                    f"an answer that is not HTTP ({type(err).__name__}): "
                                    "check the port in the reference") from None
                raise self._unreachable(err) from None
            finally:
                if stream is not None and not isinstance(stream, bytes):
                    stream.close()
        raise AssertionError("unreachable")

    def request(self, method: str, target: str, body: Body = None,
                headers: dict[str, str] | None = None, sink: Sink | None = None) -> Response:
        """A request with authentication: a 401 is answered (Basic credentials, or a token
        for this push's scopes) and the request sent once more; a second 401 is a refusal."""
        headers = dict(headers or {})
        for answered in (False, True):
            with self._auth_lock:
                authorization = self._authorization
            if authorization:
                headers["Authorization"] = authorization
            response = self._once(method, target, body, headers, sink)
            if response.status != 401:
                return response
            if answered:
                break
            self._answer(response.header("WWW-Authenticate"), authorization)
        raise self._refused()

    # Authentication ----------------------------------------------------------------------

    def _needs_credentials(self) -> UserError:
        return UserError(f"the registry {self.ref.endpoint} asks for credentials and none "
                         f"for it were found (searched {self._auth_hint}): log in with "
                         f"`podman login {self.ref.endpoint}` or `docker login "
                         f"{self.ref.endpoint}`, or give --authfile / REGISTRY_AUTH_FILE")

    def _refused(self) -> UserError:
        if self.credentials is None:
            return self._needs_credentials()
        return UserError(f"the registry {self.ref.endpoint} refused the credentials of user "
                         f"`{self.credentials.username}` from {self.credentials.source} for "
                         f"{self._doing} {self.ref.repository}: log in again (`podman login "
                         f"{self.ref.endpoint}`), or check that the user may "
                         f"{'push there' if 'push' in self._scopes[0] else 'pull from it'}")

    def _answer(self, header: str, authorization: str | None) -> None:
        """Answers a challenge to a request sent with `authorization`."""
        scheme, params = _challenge(header)
        with self._auth_lock:
            if self._authorization != authorization:
                return  # another thread has answered it meanwhile
            if scheme == "basic":
                if self.credentials is None:
                    raise self._needs_credentials()
                self._authorization = self.credentials.basic()
            elif scheme == "bearer" and params.get("realm"):
                self._bearer = params
                self._authorization = "Bearer " + self._token(params)
            else:
                raise UserError(f"the registry {self.ref.endpoint} asks for an authentication "
                                f"scheme cimages does not speak (`{scheme or 'none'}`): push "
                                "with skopeo instead")

    def want_pull(self, repositories: Iterable[str]) -> None:
        """Adds pull access to `repositories` (the sources of mounts) to the token's scopes;
        with a token already, gets one that has them."""
        new = [f"repository:{r}:pull" for r in sorted(set(repositories))
               if r != self.ref.repository and f"repository:{r}:pull" not in self._scopes]
        if not new:
            return
        with self._auth_lock:
            self._scopes += new
            if self._bearer is not None:
                self._authorization = "Bearer " + self._token(self._bearer)

    def _token(self, params: dict[str, str]) -> str:
        """A token from the registry's token service for the scopes of this push."""
        query = [("scope", scope) for scope in self._scopes]
        if params.get("service"):
            query.insert(0, ("service", params["service"]))
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + \
            urllib.parse.urlencode(query)
        request = urllib.request.Request(url)
        if self.credentials is not None:
            request.add_header("Authorization", self.credentials.basic())
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT,
                                        context=self._context()) as answer:
                data = json.loads(answer.read(1 << 20))
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise self._refused() from None
            raise UserError(f"the token service of {self.ref.endpoint} answered {err.code}: "
                            "try again later, or check the registry") from None
        except (OSError, ValueError) as err:
            raise UserError(f"the token service of {self.ref.endpoint} "
                            f"({urllib.parse.urlsplit(url).netloc}) gave no token "
                            f"({type(err).__name__}): check that it is reachable") from None
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) \
            else None
        if not isinstance(token, str) or not token:
            raise UserError(f"the token service of {self.ref.endpoint} gave no token: check "
                            "the registry's configuration")
        return token

    # The API -----------------------------------------------------------------------------

    def ping(self) -> None:
        """Finds the scheme (https; http too when TLS is not verified, as skopeo does) and
        answers the registry's challenge, so that uploads go out authenticated."""
        started = time.monotonic()
        try:
            response = self._once("GET", "/v2/", None, {})
        except UserError:
            if self.tls_verify or self.scheme == "http":
                raise
            self.close()
            self._local = threading.local()
            self.scheme = "http"
            response = self._once("GET", "/v2/", None, {})
        if response.status == 401:
            self._answer(response.header("WWW-Authenticate"), None)
            response = self.request("GET", "/v2/")
        if response.status != 200:
            raise self.failure("answered the API check (GET /v2/)", response)
        if not response.header("Docker-Distribution-Api-Version") and not \
                response.header("Content-Type").startswith("application/json"):
            raise UserError(f"{self.scheme}://{self.ref.endpoint} answered GET /v2/ but is not "
                            "an OCI distribution registry: check the host and port")
        self.ping_seconds = time.monotonic() - started

    def failure(self, what: str, response: Response) -> UserError:
        if response.status == 401:
            return self._refused()
        if response.status == 403:
            return UserError(f"the registry {self.ref.endpoint} denied {what} for "
                             f"{self.ref.repository} (403 {registry_errors(response.body)}): "
                             "check that your user may push to this repository")
        return UserError(f"the registry {self.ref.endpoint} {what} with "
                         f"{response.status} ({registry_errors(response.body)}): see the "
                         "registry's log; a retry resumes where this push stopped")

    def has_blob(self, digest: str) -> bool:
        response = self.request("HEAD", self._url(f"blobs/{digest}"))
        if response.status == 200 or 300 <= response.status < 400:
            return True  # a redirect goes to the storage that holds it
        if response.status == 404:
            return False
        raise self.failure(f"answered HEAD of blob {digest}", response)

    def _location(self, response: Response) -> str:
        location = response.header("Location")
        if not location:
            raise self.failure("started an upload without a Location", response)
        parts = urllib.parse.urlsplit(location)
        if parts.netloc and parts.netloc != self.ref.endpoint:
            raise UserError(f"the registry {self.ref.endpoint} sends uploads to another host "
                            f"({parts.netloc}), which cimages does not follow: push with "
                            "skopeo instead")
        return urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))

    def mount(self, digest: str, source: str) -> str | None:
        """Mounts a blob from another repository of this registry: None when it is mounted,
        else the upload session the registry opened instead."""
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        response = self.request("POST", self._url(f"blobs/uploads/?{query}"),
                                headers={"Content-Length": "0"})
        if response.status == 201:
            return None
        if response.status == 202:
            return self._location(response)
        raise self.failure(f"refused to mount blob {digest} from {source}", response)

    def upload(self, digest: str, size: int, stream: Callable[[], Stream],
               location: str | None = None) -> None:
        """One PUT of the whole blob (the registry checks the digest before it keeps it)."""
        if location is None:
            response = self.request("POST", self._url("blobs/uploads/"),
                                    headers={"Content-Length": "0"})
            if response.status != 202:
                raise self.failure("refused to start a blob upload", response)
            location = self._location(response)
        target = location + ("&" if "?" in location else "?") + \
            urllib.parse.urlencode({"digest": digest})
        response = self.request("PUT", target, body=stream, headers={
            "Content-Type": "application/octet-stream", "Content-Length": str(size)})
        if response.status != 201:
            if b"DIGEST_INVALID" in response.body:
                raise UserError(f"the registry found that blob {digest} of the build output "
                                "does not match its digest (a damaged file): rebuild "
                                "(cimages build) and push again")
            raise self.failure(f"refused blob {digest}", response)

    def tagged(self, accept: Iterable[str]) -> str:
        """The digest the tag names now ("" when it names none)."""
        response = self.request("HEAD", self._url(f"manifests/{self.ref.tag}"),
                                headers={"Accept": ", ".join(accept)})
        if response.status == 200:
            return response.header("Docker-Content-Digest")
        if response.status == 404:
            return ""
        raise self.failure(f"answered HEAD of the manifest {self.ref.tag}", response)

    def put_manifest(self, media_type: str, manifest: bytes) -> str:
        response = self.request("PUT", self._url(f"manifests/{self.ref.tag}"), body=manifest,
                                headers={"Content-Type": media_type,
                                         "Content-Length": str(len(manifest))})
        if response.status not in (200, 201):
            raise self.failure("refused the manifest", response)
        return response.header("Docker-Content-Digest")

    # Pulling (a base image) ----------------------------------------------------------------

    def get_manifest(self, reference: str, accept: Iterable[str]) -> tuple[str, bytes]:
        """The media type and bytes of the manifest a tag or digest names; a missing one is
        a UserError saying which."""
        response = self.request("GET", self._url(f"manifests/{reference}"),
                                headers={"Accept": ", ".join(accept)})
        if response.status == 404:
            raise UserError(f"the registry {self.ref.endpoint} has no manifest {reference} in "
                            f"{self.ref.repository} (404 {registry_errors(response.body)})")
        if response.status != 200:
            raise self.failure(f"answered GET of the manifest {reference}", response)
        media_type = response.header("Content-Type").split(";", 1)[0].strip()
        return media_type, response.body

    def get_blob(self, digest: str, sink: Sink) -> None:
        """Streams the blob into `sink` (which starts over when called again); a redirect
        to the registry's storage is followed without the registry's credentials."""
        response = self.request("GET", self._url(f"blobs/{digest}"), sink=sink)
        if response.status == 200:
            return
        if response.status in (301, 302, 303, 307, 308) and response.header("Location"):
            location = urllib.parse.urljoin(f"{self.scheme}://{self.ref.endpoint}/",
                                            response.header("Location"))
            try:
                with urllib.request.urlopen(
                        urllib.request.Request(location, headers={"User-Agent": USER_AGENT}),
                        timeout=TIMEOUT, context=self._context()) as answer:
                    sink(answer)
            except (OSError, http.client.HTTPException) as err:
                raise UserError(f"the storage of {self.ref.endpoint} "
                                f"({urllib.parse.urlsplit(location).netloc}) did not give blob "
                                f"{digest} ({type(err).__name__}): try again later") from None
            return
        if response.status == 404:
            raise UserError(f"the registry {self.ref.endpoint} has no blob {digest} in "
                            f"{self.ref.repository}: the image was deleted or is incomplete "
                            "there; push it again, or re-pin with `cimages lock --update`")
        raise self.failure(f"answered GET of blob {digest}", response)
