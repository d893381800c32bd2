"""Registry references (`[docker://]host[:port]/path[:tag]`), parsed as Docker and
containers/image do: a first component with a `.` or a `:`, or `localhost`, is the registry;
otherwise the registry is Docker Hub and a one-component name is under `library/`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from framework.errors import UserError

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
# Where `cimages copy` sends things (what skopeo calls transports); `push` takes only docker.
COPY_TRANSPORTS = ("docker-daemon", "containers-storage", "oci-archive", "docker-archive")

_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]{{1,5}})?")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
EXAMPLE = "localhost:5000/web:1.2"


@dataclass(frozen=True)
class Reference:
    registry: str  # as written (docker.io for Docker Hub), the key of auth files
    repository: str  # path inside the registry, e.g. library/nginx
    tag: str

    @property
    def endpoint(self) -> str:
        """host[:port] that answers the API."""
        return DOCKER_HUB_ENDPOINT if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def _bad(text: str, why: str) -> UserError:
    return UserError(f"`{text}` is not a registry reference: {why}; write "
                     f"[docker://]REGISTRY/NAME[:TAG], e.g. {EXAMPLE}")


def parse(text: str, default_tag: str) -> Reference:
    """The reference in `text` (`docker://` optional); `default_tag` when it names none."""
    original = text
    if text.startswith("docker://"):
        text = text[len("docker://"):]
    else:
        transport = text.split(":", 1)[0]
        if transport in (*COPY_TRANSPORTS, "oci", "dir"):
            raise UserError(f"`{original}` names the {transport}: transport, not a registry: "
                            f"use `cimages copy FILE {original}`, or give a registry "
                            f"reference such as {EXAMPLE}")
    if not text:
        raise _bad(original, "it is empty")
    if "@" in text:
        raise _bad(original, "a push destination names a tag, not a digest (the digest is "
                             "the image's own: --digestfile writes it); drop the @...")
    first, slash, rest = text.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"
                  or first != first.lower()):
        registry, remainder = first, rest
        if not _DOMAIN.fullmatch(registry):
            raise _bad(original, f"`{registry}` is not a host[:port]")
    else:
        registry, remainder = DOCKER_HUB, text
    name, tag = remainder, default_tag
    last = remainder.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = remainder.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise _bad(original, f"the tag `{tag}` is not 1-128 of letters, digits, _ . - "
                                 "(not starting with . or -)")
    components = name.split("/")
    for component in components:
        if not _COMPONENT.fullmatch(component):
            raise _bad(original, f"the name component `{component}` is not lowercase "
                                 "letters and digits joined by . _ __ or -")
    if registry == DOCKER_HUB and len(components) == 1:
        name = f"library/{name}"
    if len(registry) + 1 + len(name) > 255:
        raise _bad(original, "the name is longer than 255 characters")
    return Reference(registry, name, tag)


def check_digest(digest: str, what: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise UserError(f"{what} `{digest[:80]}` is not sha256: and 64 hex digits: rebuild "
                        "the image (cimages build)")
    return digest


def parse_pull(text: str) -> tuple[Reference, str | None]:
    """A reference to pull (`image.from`): `NAME[:TAG]`, `NAME@sha256:...` or both; the
    digest, when given, is what is pulled (the tag is kept for messages)."""
    name, at, digest = text.partition("@")
    if at:
        if not _DIGEST.fullmatch(digest):
            raise _bad(text, f"`{digest[:80]}` after @ is not sha256: and 64 hex digits")
        ref = parse(name, digest)
        return ref, digest
    return parse(text, "latest"), None
