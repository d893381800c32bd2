"""`image.from` a registry reference: the base image pinned by manifest digest in the lock
(nix2container's pullImageFromManifest, with the lock as its manifest file).

The first build (or `cimages lock --update`) asks the registry what the reference names and
records the manifest's digest (for linux/amd64 when it is an index, whose digest is kept
too); every later build pulls that digest, never the tag. Manifest, config and layers go to
the content-addressed blob cache, each checked against its digest, so a build whose blobs
are cached never opens a connection with `--frozen`. Without `--frozen` the tag is looked
at (one HEAD): a tag that moved is reported with both digests, and not followed.

The registry client is framework.publish.registry's (the one `cimages push` uses)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from framework.atomic import pending
from framework.builder.base import BaseImage, history_lines
from framework.builder.layercache import blob_dir
from framework.builder.lockfile import BaseLock, Lock, lock_path, write_lock
from framework.builder.oci import LAYER_GZIP, LAYER_TAR, OCI_MANIFEST, ImageLayer
from framework.digests import hex_of, is_digest
from framework.errors import UserError
from framework.options.image import REGISTRY_PREFIX
from framework.publish.auth import find, searched
from framework.publish.reference import Reference, parse_pull
from framework.publish.registry import Registry, Stream

PLATFORM = {"os": "linux", "architecture": "amd64"}
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
# Layer types as they are stored in the output (the bytes are the same).
LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": LAYER_GZIP,
    LAYER_GZIP: LAYER_GZIP,
    LAYER_TAR: LAYER_TAR,
    "application/vnd.oci.image.layer.v1.tar+zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


def is_registry(value: str | None) -> bool:
    return bool(value) and str(value).startswith(REGISTRY_PREFIX)


def reference_text(value: str) -> str:
    return value[len(REGISTRY_PREFIX):] if value.startswith(REGISTRY_PREFIX) else value


@dataclass
class _Client:
    """The registry of a reference, opened on first use (a cached build opens none)."""

    ref: Reference
    _registry: Registry | None = None

    def registry(self) -> Registry:
        if self._registry is None:
            host = self.ref.endpoint.rsplit(":", 1)[0] if not self.ref.endpoint.startswith(
                "[") else self.ref.endpoint.split("]")[0] + "]"
            # A registry on this machine speaks plain HTTP as a rule (skopeo's default for
            # localhost too); any other is TLS, verified.
            tls_verify = host not in LOOPBACK and os.environ.get(
                "CIMAGES_REGISTRY_TLS_VERIFY", "true") != "false"
            registry = Registry(self.ref, find(self.ref.registry, self.ref.repository, None),
                                tls_verify=tls_verify, authfile_hint=searched(None),
                                actions="pull")
            registry.ping()
            self._registry = registry
        return self._registry

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()


def _fetch(client: _Client, digest: str, where: str) -> Path:
    """The blob `digest` in the blob cache: there already, or pulled and checked."""
    directory = blob_dir()
    path = directory / hex_of(digest, where)
    if path.is_file():
        return path
    with pending(directory, ".pull-") as file:
        hashed = hashlib.sha256()

        def sink(answer: Stream) -> None:
            nonlocal hashed
            file.handle.seek(0)
            file.handle.truncate()
            hashed = hashlib.sha256()
            while chunk := answer.read(1 << 20):
                hashed.update(chunk)
                file.handle.write(chunk)

        client.registry().get_blob(digest, sink)
        if f"sha256:{hashed.hexdigest()}" != digest:
            raise UserError(f"{where}: the registry {client.ref.endpoint} sent other bytes for "
                            f"blob {digest} (sha256:{hashed.hexdigest()}); nothing was kept: "
                            "try again, or check the registry")
        file.commit(path, keep_existing=True)
    return path


def _manifest_bytes(client: _Client, digest: str, where: str) -> bytes:
    """The manifest `digest` from the blob cache, or from the registry (then cached)."""
    directory = blob_dir()
    path = directory / hex_of(digest, where)
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest[7:]:
        return path.read_bytes()
    try:
        _, body = client.registry().get_manifest(digest, ACCEPT)
    except UserError as err:
        if "has no manifest" not in str(err):
            raise
        raise UserError(f"{where}: the registry {client.ref.endpoint} no longer has the "
                        f"manifest {digest} the lock pins for {client.ref.repository}; push "
                        "that image again, or pin what the reference names now with "
                        "`cimages lock --update`") from None
    if f"sha256:{hashlib.sha256(body).hexdigest()}" != digest:
        raise UserError(f"{where}: the registry {client.ref.endpoint} answered manifest "
                        f"{digest} with other bytes; check the registry")
    with pending(directory, ".pull-") as file:
        file.handle.write(body)
        file.commit(path, keep_existing=True)
    return body


def _platform_manifest(index: dict[str, Any], where: str) -> str:
    for entry in index.get("manifests") or []:
        platform = entry.get("platform") or {}
        if all(platform.get(k) == v for k, v in PLATFORM.items()) and \
                is_digest(entry.get("digest")):
            return str(entry["digest"])
    found = sorted(f"{(e.get('platform') or {}).get('os')}/"
                   f"{(e.get('platform') or {}).get('architecture')}"
                   for e in index.get("manifests") or [])
    raise UserError(f"{where}: the index has no manifest for linux/amd64 (it has "
                    f"{', '.join(found) or 'none'}); give a reference to an amd64 image")


def resolve(client: _Client, digest: str | None, reference: str, where: str) -> BaseLock:
    """What the reference names now, as the lock records it."""
    media_type, body = client.registry().get_manifest(digest or client.ref.tag, ACCEPT)
    named = f"sha256:{hashlib.sha256(body).hexdigest()}"
    if digest and named != digest:
        raise UserError(f"{where}: the registry answered {digest} with other bytes; check "
                        "the registry")
    try:
        content = json.loads(body)
    except ValueError as err:
        raise UserError(f"{where}: the registry's manifest is not JSON ({err})") from None
    media_type = content.get("mediaType") or media_type
    if media_type in INDEXES or "manifests" in content:
        return BaseLock(reference, _platform_manifest(content, where), named, "linux/amd64")
    return BaseLock(reference, named)


def _load(client: _Client, base: BaseLock, where: str) -> BaseImage:
    manifest = json.loads(_manifest_bytes(client, base.digest, where))
    try:
        config_path = _fetch(client, manifest["config"]["digest"], where)
        config = json.loads(config_path.read_text())
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["layers"]) or not all(map(is_digest, diff_ids)):
            raise UserError(f"{where}: the config's rootfs.diff_ids do not match the "
                            "manifest's layers; the image in the registry is damaged")
        history = history_lines(config, len(diff_ids), base.reference)
        layers = []
        for i, d in enumerate(manifest["layers"]):
            kind = LAYER_TYPES.get(d["mediaType"])
            if kind is None:
                raise UserError(f"{where}: layer {d['digest']} is of type {d['mediaType']}, "
                                "which cimages does not take in a base image; use an image "
                                "of gzip or plain tar layers")
            layers.append(ImageLayer(d["digest"], diff_ids[i], int(d["size"]),
                                     _fetch(client, d["digest"], where), kind, history[i]))
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise UserError(f"{where}: the manifest {base.digest} is not an image manifest "
                        f"({type(err).__name__}: {err}); give a reference to an image") from err
    return BaseImage(layers, config)


def base_image(definition: Path, value: str, lock: Lock, *, frozen: bool,
               update: bool = False, load: bool = True
               ) -> tuple[Lock, BaseImage | None, list[str]]:
    """The pinned base image of `image.from` = `value` (a docker:// reference); the lock,
    with the pin recorded (and written) when it was made now; warnings. With `update`, the
    reference is resolved again (`cimages lock --update`); without `load`, nothing is
    pulled (and None is the image)."""
    text = reference_text(value)
    path = lock_path(definition)
    where = f"image.from {text}"
    ref, digest = parse_pull(text)
    client = _Client(ref)
    warnings: list[str] = []
    try:
        pinned = lock.base if lock.base and lock.base.reference == text else None
        if pinned is None or update:
            if frozen:
                raise UserError(f"{path} pins no base image for {where} and --frozen never "
                                f"resolves one; run `cimages lock {definition}` and commit "
                                "the lock file")
            fresh = resolve(client, digest, text, where)
            if pinned is not None and fresh != pinned:
                warnings.append(f"{where}: re-pinned from {pinned.index or pinned.digest} to "
                                f"{fresh.index or fresh.digest}")
            lock = replace(lock, base=fresh)
            write_lock(path, lock, definition)
            pinned = fresh
        elif not frozen and digest is None:
            warnings += _moved(client, pinned, where, definition)
        assert lock.base is not None
        return lock, _load(client, pinned, where) if load else None, warnings
    finally:
        client.close()


def _moved(client: _Client, pinned: BaseLock, where: str, definition: Path) -> list[str]:
    """A warning when the tag names another digest than the lock's (the lock wins)."""
    try:
        now = client.registry().tagged(ACCEPT)
    except UserError as err:
        return [f"{where}: could not check whether the tag moved ({err}); building the "
                f"locked {pinned.digest}"]
    locked = pinned.index or pinned.digest
    if now and now != locked:
        return [f"{where}: the tag now names {now}, but the lock pins {locked}; this build "
                f"uses the locked one: run `cimages lock --update {definition}` to re-pin"]
    return []


def drop_stale(definition: Path, lock: Lock, frozen: bool) -> Lock:
    """A lock whose `from:` no image.from asks for any more forgets it."""
    if lock.base is None:
        return lock
    lock = replace(lock, base=None)
    if not frozen:
        write_lock(lock_path(definition), lock, definition)
    return lock
