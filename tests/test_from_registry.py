"""`image.from` a registry reference, against Debian's docker-registry on 127.0.0.1: hello is
pushed there, an image `from` it builds, its lock pins the digest, a --frozen rebuild with
the registry stopped gives the same digest, and the result runs in the sandbox tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from framework.builder import build
from framework.builder.lockfile import read_lock
from framework.errors import UserError
from framework.publish.local_registry import LocalRegistry
from framework.publish.push import push_layout
from framework.publish.reference import parse, parse_pull
from framework.sandbox.image import start_image

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "images" / "hello.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hello(tmp_path_factory):
    return build(HELLO, tmp_path_factory.mktemp("hello-out"), frozen=True)


@pytest.fixture
def registry(tmp_path, hello):
    with LocalRegistry(tmp_path / "registry") as running:
        push_layout(hello.oci_dir, hello.digest, parse(f"{running.address}/hello:1", "x"),
                    tls_verify=False)
        yield running


def definition_from(directory: Path, base: str, motd: str = "from the registry\n") -> Path:
    definition = directory / "child.yaml"
    definition.write_text(yaml.safe_dump({
        "image": {"name": "child", "from": base, "entryPoint": ["/usr/bin/hello"]},
        "environment": {"etc": {"motd": {"text": motd}}}}))
    return definition


def cimages(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "framework", *args], cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ), timeout=300)


def test_an_image_from_the_registry_is_pinned_rebuilt_frozen_offline_and_runs(
        registry, hello, tmp_path):
    definition = definition_from(tmp_path, f"{registry.address}/hello:1")
    first = build(definition, tmp_path / "out")
    lock = read_lock(definition.with_suffix(".lock"))
    assert lock is not None and lock.base is not None
    assert lock.base.reference == f"{registry.address}/hello:1"
    assert lock.base.digest == hello.digest and lock.base.index is None
    assert "from:" in definition.with_suffix(".lock").read_text()
    # hello's layers come first, then the child's generated layer.
    assert [p.name for p in first.layers[:len(hello.layers)]] == \
        [p.name for p in hello.layers]
    assert len(first.layers) == len(hello.layers) + 1
    registry.stop()
    again = build(definition, tmp_path / "again", frozen=True)
    assert again.digest == first.digest
    sandbox = start_image(again)
    try:
        assert sandbox.wait() == 0
        assert "Hello, world!" in sandbox.logs()
    finally:
        sandbox.cleanup()


def test_a_moved_tag_is_said_and_not_followed_until_lock_update(registry, hello, tmp_path):
    definition = definition_from(tmp_path, f"{registry.address}/hello:1")
    first = build(definition, tmp_path / "out")
    # The tag moves: another image (the child itself) is pushed under it.
    push_layout(first.oci_dir, first.digest, parse(f"{registry.address}/hello:1", "x"),
                tls_verify=False)
    again = build(definition, tmp_path / "out")
    assert again.digest == first.digest
    said = [w for w in again.warnings if "the tag now names" in w]
    assert said and first.digest in said[0] and hello.digest in said[0]
    done = cimages("lock", "--update", str(definition))
    assert done.returncode == 0, done.stderr
    lock = read_lock(definition.with_suffix(".lock"))
    assert lock is not None and lock.base is not None and lock.base.digest == first.digest


def test_a_digest_reference_and_a_digest_the_registry_lost(registry, hello, tmp_path):
    definition = definition_from(tmp_path, f"{registry.address}/hello@{hello.digest}")
    built = build(definition, tmp_path / "out")
    lock_file = definition.with_suffix(".lock")
    lock = read_lock(lock_file)
    assert lock is not None and lock.base is not None and lock.base.digest == hello.digest
    # A lock pinning a digest the registry does not have: one message, exit 2.
    gone = "sha256:" + "0" * 64
    lock_file.write_text(lock_file.read_text().replace(hello.digest, gone))
    definition.write_text(definition.read_text().replace(hello.digest, gone))
    with pytest.raises(UserError, match="no longer has the manifest"):
        build(definition, tmp_path / "out2")
    done = cimages("build", str(definition), "-o", str(tmp_path / "out3"))
    assert done.returncode == 2 and "no longer has the manifest" in done.stderr
    assert "Traceback" not in done.stderr
    assert built.digest


def test_frozen_without_a_pin_is_refused(registry, tmp_path):
    definition = definition_from(tmp_path, f"{registry.address}/hello:1")
    with pytest.raises(UserError, match="pins no base image"):
        build(definition, tmp_path / "out", frozen=True)


def test_a_lock_without_from_reads_and_writes_byte_identically(tmp_path):
    from framework.builder.lockfile import write_lock
    for lock_file in sorted((ROOT / "images").glob("*.lock")):
        copy = tmp_path / lock_file.name
        lock = read_lock(lock_file)
        assert lock is not None and lock.base is None
        write_lock(copy, lock, lock_file.with_suffix(".yaml"))
        assert copy.read_bytes() == lock_file.read_bytes(), lock_file.name


@pytest.mark.parametrize(("text", "repository", "tag", "digest"), [
    ("docker.io/library/debian:bookworm-slim", "library/debian", "bookworm-slim", None),
    ("localhost:5000/web@sha256:" + "a" * 64, "web", "sha256:" + "a" * 64, "sha256:" + "a" * 64),
    ("localhost:5000/web:1", "web", "1", None),
])
def test_pull_references_parse(text, repository, tag, digest):
    ref, named = parse_pull(text)
    assert (ref.repository, ref.tag, named) == (repository, tag, digest)


def test_image_from_tells_references_from_paths(tmp_path):
    from framework.options import evaluate
    (tmp_path / "hello.yaml").write_text(HELLO.read_text())
    for base, expected in [("localhost:5000/web:1", "docker://localhost:5000/web:1"),
                           ("docker://debian:bookworm", "docker://debian:bookworm"),
                           ("./hello.yaml", str(tmp_path / "hello.yaml")),
                           ("hello.yaml", str(tmp_path / "hello.yaml"))]:
        definition = definition_from(tmp_path, base)
        assert evaluate(definition).config["image"]["from"] == expected
    assert json.dumps(expected)


def put_index(address: str, repository: str, tag: str, manifest: str, size: int) -> str:
    """An OCI index naming `manifest` for linux/amd64 (and, to be skipped, for arm64)."""
    import hashlib
    import http.client
    body = json.dumps({"schemaVersion": 2,
                       "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": [
                           {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": manifest, "size": size,
                            "platform": {"os": "linux", "architecture": arch}}
                           for arch in ("arm64", "amd64")]}).encode()
    conn = http.client.HTTPConnection(address, timeout=10)
    try:
        conn.request("PUT", f"/v2/{repository}/manifests/{tag}", body=body, headers={
            "Content-Type": "application/vnd.oci.image.index.v1+json"})
        assert conn.getresponse().status == 201
    finally:
        conn.close()
    return "sha256:" + hashlib.sha256(body).hexdigest()


def test_an_index_is_pinned_with_the_amd64_manifest(registry, hello, tmp_path):
    size = (hello.oci_dir / "blobs" / "sha256" / hello.digest[7:]).stat().st_size
    index = put_index(registry.address, "hello", "multi", hello.digest, size)
    definition = definition_from(tmp_path, f"{registry.address}/hello:multi")
    build(definition, tmp_path / "out")
    lock = read_lock(definition.with_suffix(".lock"))
    assert lock is not None and lock.base is not None
    assert (lock.base.digest, lock.base.index, lock.base.platform) == \
        (hello.digest, index, "linux/amd64")
    again = build(definition, tmp_path / "out")
    assert not [w for w in again.warnings if "tag now names" in w]
