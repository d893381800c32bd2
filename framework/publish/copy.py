"""`cimages copy`: a built image into a Docker daemon, Podman's store or an archive, as
nix2container's copyToDockerDaemon / copyToPodman do, through skopeo (these destinations
take the whole image anyway: there is nothing to skip, so nothing to gain by hand), except a
Docker daemon: that is one Engine API call (framework.publish.daemon), because Debian 12's
skopeo speaks an API version Docker 25 and later refuse.

Destinations (skopeo's transport syntax):
- `docker-daemon:NAME[:TAG]`: the daemon of $DOCKER_HOST (unix:// or tcp://), else
  /var/run/docker.sock; the VM tier's `vm.docker_host` is such a URL;
- `containers-storage:[DRIVER@ROOT+RUNROOT]NAME[:TAG]`: Podman's (and Buildah's) store;
- `oci-archive:PATH[:REF]`, `docker-archive:PATH[:NAME:TAG]`: one tar file, written beside
  PATH and renamed over it, so a failed copy leaves what was there;
- `docker://REF`: the registry push (framework.publish.push).
A missing TAG is the image's own tag."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from framework.errors import UserError
from framework.publish import daemon
from framework.publish.reference import COPY_TRANSPORTS, parse

SKOPEO_TIMEOUT = 900  # seconds: a big image into a slow store
_STORAGE_SPEC = re.compile(r"\[(?:(?P<driver>[a-z0-9_]+)@)?(?P<root>[^+\]]+)"
                           r"(?:\+(?P<runroot>[^:\]]+))?(?::[^\]]*)?\]")
_FIXES = {
    "containers-storage": "check the store (`podman info`; as a user, run rootless podman "
                          "once), or name another with containers-storage:[DRIVER@ROOT+RUNROOT]",
    "oci-archive": "check that the folder is writable and has room",
    "docker-archive": "check that the folder is writable and has room",
}


@dataclass(frozen=True)
class Destination:
    transport: str  # one of COPY_TRANSPORTS, or "docker" (a registry)
    target: str  # what follows the transport, completed with the image's tag
    path: Path | None = None  # the archive file, for the archive transports

    def __str__(self) -> str:
        return f"{self.transport}:{self.target}" if self.transport != "docker" \
            else f"docker://{self.target}"


def _unknown(text: str) -> UserError:
    return UserError(f"`{text}` names no destination cimages copies to: write one of "
                     "docker-daemon:NAME:TAG, containers-storage:NAME:TAG, oci-archive:PATH, "
                     "docker-archive:PATH, or docker://REGISTRY/NAME:TAG (as `cimages push`)")


def _name(text: str, name: str, image: str, tag: str) -> str:
    """NAME[:TAG] checked as a reference, completed with the image's tag."""
    if not name:
        raise UserError(f"`{text}` names no image: add NAME[:TAG], e.g. {image}:{tag}")
    if "@" in name:
        raise UserError(f"`{text}` names a digest: name a tag instead, e.g. {image}:{tag}")
    ref = parse(name, tag)  # refuses what is not a reference, with the syntax
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:{ref.tag}"


def parse_destination(text: str, image: str, tag: str) -> Destination:
    """`text` as a destination of the image `image`:`tag`."""
    if text.startswith("docker://"):
        return Destination("docker", text[len("docker://"):])
    transport, colon, rest = text.partition(":")
    if not colon or transport not in COPY_TRANSPORTS:
        raise _unknown(text)
    if transport == "docker-daemon":
        return Destination(transport, _name(text, rest, image, tag))
    if transport == "containers-storage":
        spec = ""
        if rest.startswith("["):
            match = _STORAGE_SPEC.match(rest)
            if not match:
                raise UserError(f"`{text}`: the store is written [DRIVER@ROOT+RUNROOT], e.g. "
                                f"containers-storage:[vfs@/tmp/root+/tmp/run]{image}:{tag}")
            spec, rest = match.group(0), rest[match.end():]
        return Destination(transport, spec + _name(text, rest, image, tag))
    path_text, _, reference = rest.partition(":")
    if not path_text:
        raise UserError(f"`{text}` names no file: write {transport}:PATH, e.g. "
                        f"{transport}:{image}.tar")
    if transport == "docker-archive":
        reference = _name(text, reference, image, tag) if reference else f"{image}:{tag}"
    elif not reference:
        reference = tag
    return Destination(transport, f"{path_text}:{reference}", Path(path_text))


def _replaceable(path: Path, transport: str) -> None:
    """An archive is written over only an archive of the same kind (ours, or skopeo's)."""
    if path.is_dir() or path.is_symlink():
        raise UserError(f"{path} is a folder or a symlink: give {transport}: a file path")
    if not path.exists():
        if not path.parent.is_dir():
            raise UserError(f"the folder {path.parent} does not exist: create it, or give "
                            f"{transport}: a path in an existing folder")
        return
    member = "oci-layout" if transport == "oci-archive" else "manifest.json"
    try:
        with tarfile.open(path) as tar:
            tar.getmember(member)
    except (OSError, KeyError, tarfile.TarError):
        raise UserError(f"{path} exists and is not an {transport} (no {member} in it): "
                        "cimages writes over no file it could not have written; remove it "
                        "or choose another path") from None


def _skopeo_message(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "no message"
    match = re.search(r'level=fatal msg="(.*)"\s*$', last)
    return (match.group(1).replace('\\"', '"') if match else last)[:500]


def _policy_args() -> list[str]:
    """The host's signature policy when it has one; the source is this build's own output,
    so with none, accept it rather than fail on a missing /etc/containers/policy.json."""
    for policy in (Path.home() / ".config/containers/policy.json",
                   Path("/etc/containers/policy.json")):
        if policy.is_file():
            return []
    return ["--insecure-policy"]


def check_destination(destination: Destination) -> list[str]:
    """What can be checked before a build (skopeo there, the daemon answering, the archive
    path writable over), and skopeo's options for the destination."""
    if destination.transport == "docker":
        raise AssertionError("a registry destination is pushed, not copied by skopeo")
    if destination.transport == "docker-daemon":
        daemon.answering(daemon.daemon_host())  # loaded through the Engine API, not skopeo
        return []
    if shutil.which("skopeo") is None:
        raise UserError("skopeo is not installed: `apt-get install skopeo` (make setup "
                        "installs it)")
    options: list[str] = []
    if destination.path is not None:
        _replaceable(destination.path, destination.transport)
    return options


def skopeo_copy(oci_dir: Path, source_tag: str, destination: Destination,
                options: list[str] | None = None) -> None:
    """Copies the image tagged `source_tag` in the layout `oci_dir` to `destination`;
    `options` from check_destination (which runs here when not given)."""
    if options is None:
        options = check_destination(destination)
    args = ["skopeo", *_policy_args(), "copy", "--quiet", *options]
    with tempfile.TemporaryDirectory(prefix="cimages-copy-") as scratch:
        source = oci_dir
        if ":" in str(oci_dir):  # skopeo's oci:PATH:REF splits at the first colon
            source = Path(scratch) / "oci"
            source.symlink_to(oci_dir.resolve())
        target = destination.target
        staging: Path | None = None
        final = destination.path
        if final is not None:
            _replaceable(final, destination.transport)
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
            target = f"{staging / 'archive.tar'}:{target.split(':', 1)[1]}"
        try:
            try:
                done = subprocess.run([*args, f"oci:{source}:{source_tag}",
                                       f"{destination.transport}:{target}"],
                                      capture_output=True, text=True, timeout=SKOPEO_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise UserError(f"skopeo did not finish the copy to {destination} in "
                                f"{SKOPEO_TIMEOUT} s: {_FIXES[destination.transport]}"
                                ) from None
            if done.returncode != 0:
                raise UserError(f"skopeo could not copy the image to {destination} "
                                f"({_skopeo_message(done.stderr)}): "
                                f"{_FIXES[destination.transport]}")
            if staging is not None and final is not None:
                os.chmod(staging / "archive.tar", 0o644)
                os.replace(staging / "archive.tar", final)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)


def copy_built(oci_dir: Path, archive: Path | None, name: str, tag: str,
               destination: Destination, options: list[str]) -> None:
    """A build's image into `destination`: a Docker daemon loads the docker-archive, the
    other destinations get it from the OCI layout through skopeo."""
    if destination.transport == "docker-daemon":
        assert archive is not None, "a copy to a daemon builds the docker-archive"
        daemon.load(archive, f"{name}:{tag}", destination.target)
    else:
        skopeo_copy(oci_dir, tag, destination, options)
