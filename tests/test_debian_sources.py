"""The Debian archive is the definition's: releases, mirrors, locks of other sources, and
the snapshot fallback for .debs a point release removed. Needs the network (deb.debian.org);
the snapshot service is a stand-in on 127.0.0.1 (snapshot.debian.org is not reachable
from these machines), serving its documented API layout."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from framework.builder.download import download
from framework.builder.lockfile import lock_path, read_lock
from framework.ci.browser import serve
from framework.net import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "images" / "hello.yaml"


def cimages(*args: str, cache: Path | None = None, wrap: list[str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"CIMAGES_CACHE": str(cache)} if cache else {})}
    return subprocess.run([*(wrap or []), sys.executable, "-m", "framework", *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def hello_copy(folder: Path, debian: dict[str, str]) -> Path:
    """images/hello.yaml with other `debian` settings, and its lock if the sources match."""
    definition = folder / "hello.yaml"
    text = yaml.safe_load(HELLO.read_text())
    definition.write_text(yaml.safe_dump({**text, "debian": debian}))
    return definition


def test_an_unknown_release_is_refused_naming_the_known_ones(tmp_path):
    done = cimages("lock", str(hello_copy(tmp_path, {"release": "bookwork"})))
    assert done.returncode == 2, done.stderr
    assert "debian.release" in done.stderr and "'trixie'" in done.stderr
    assert not lock_path(tmp_path / "hello.yaml").exists()


def test_a_mirror_that_does_not_answer_is_named(tmp_path):
    mirror = f"http://127.0.0.1:{free_port()}/debian"
    done = cimages("lock", str(hello_copy(tmp_path, {"mirror": mirror})), cache=tmp_path / "c")
    assert done.returncode == 2, done.stderr
    assert f"package lists of bookworm from {mirror}" in done.stderr
    assert "debian.mirror" in done.stderr
    assert not lock_path(tmp_path / "hello.yaml").exists()
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_lock_of_another_release_relocks_with_a_message_or_fails_frozen(tmp_path):
    definition = hello_copy(tmp_path, {"release": "trixie"})
    shutil.copy(lock_path(HELLO), lock_path(definition))
    before = lock_path(definition).read_text()
    frozen = cimages("build", "--frozen", str(definition), "-o", str(tmp_path / "out"))
    assert frozen.returncode == 2, frozen.stderr
    assert "pins packages of bookworm" in frozen.stderr and "names trixie" in frozen.stderr
    assert lock_path(definition).read_text() == before
    assert not (tmp_path / "out").exists()

    built = cimages("build", str(definition), "-o", str(tmp_path / "out"))
    assert built.returncode == 0, built.stderr
    assert "was resolved against bookworm" in built.stderr and "re-locking" in built.stderr
    lock = read_lock(lock_path(definition))
    assert lock is not None and lock.sources.release == "trixie"
    assert next(p for p in lock.packages if p.name == "libc6").version.startswith("2.41")


def test_the_hosts_apt_configuration_changes_nothing(tmp_path):
    """An /etc/apt with no Debian entry and a proxy that would break every download."""
    etc_apt = tmp_path / "etc-apt"
    (etc_apt / "apt.conf.d").mkdir(parents=True)
    (etc_apt / "sources.list").write_text("deb http://archive.ubuntu.com/ubuntu noble main\n")
    (etc_apt / "apt.conf.d" / "90proxy").write_text(
        f'Acquire::http::Proxy "http://127.0.0.1:{free_port()}";\n')
    locks = []
    for name, wrap in (("plain", []),
                       ("no-debian", ["bwrap", "--dev-bind", "/", "/", "--bind", str(etc_apt),
                                      "/etc/apt"])):
        folder = tmp_path / name
        folder.mkdir()
        definition = hello_copy(folder, {"release": "trixie"})
        done = cimages("lock", "--update", str(definition), cache=folder / "cache", wrap=wrap)
        assert done.returncode == 0, done.stderr
        locks.append(lock_path(definition).read_text())
    assert locks[0] == locks[1]
    assert "release: trixie" in locks[0]


def test_a_deb_gone_from_the_mirror_comes_from_the_snapshot_service(tmp_path, monkeypatch):
    lock = read_lock(lock_path(HELLO))
    assert lock is not None
    debs = download(lock.packages)  # the real bytes, from the real archive
    gone = next(p for p in lock.packages if p.name == "libc6")
    mirror, snapshot = tmp_path / "mirror", tmp_path / "snapshot"
    prefix = lock.sources.mirror + "/"
    for p in lock.packages:
        if p is not gone:
            target = mirror / "debian" / p.url.removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(debs[p.name], target)
    sha1 = hashlib.sha1(debs[gone.name].read_bytes()).hexdigest()
    (snapshot / "file").mkdir(parents=True)
    shutil.copy(debs[gone.name], snapshot / "file" / sha1)
    listing = snapshot / "mr" / "binary" / gone.name / gone.version / "binfiles"
    listing.parent.mkdir(parents=True)
    listing.write_text(json.dumps({"binary": gone.name, "binary_version": gone.version,
                                   "result": [{"architecture": "i386", "hash": "0" * 40},
                                              {"architecture": gone.architecture,
                                               "hash": sha1}]}))
    reference = cimages("build", "--frozen", "--json", str(HELLO), "-o", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    with serve(mirror) as mirror_url, serve(snapshot) as snapshot_url:
        definition = hello_copy(tmp_path, {"mirror": mirror_url + "debian"})
        text = lock_path(HELLO).read_text().replace(prefix, mirror_url + "debian/")
        text = text.replace(f"mirror: {lock.sources.mirror}", f"mirror: {mirror_url}debian")
        text = text.replace(f"securityMirror: {lock.sources.security_mirror}",
                            f"securityMirror: {mirror_url}debian-security")
        lock_path(definition).write_text(text)
        monkeypatch.setenv("CIMAGES_SNAPSHOT_URL", snapshot_url)
        built = cimages("build", "--frozen", "--json", str(definition),
                        "-o", str(tmp_path / "out"), cache=tmp_path / "cache")
        monkeypatch.setenv("CIMAGES_SNAPSHOT_URL", mirror_url)  # knows nothing: the clear error
        (tmp_path / "cache2").mkdir()
        missing = cimages("build", "--frozen", str(definition), "-o", str(tmp_path / "o2"),
                          cache=tmp_path / "cache2")
    assert built.returncode == 0, built.stderr
    said = [line for line in built.stderr.splitlines() if "snapshot" in line or "gone" in line]
    assert len(said) == 1 and f"libc6 {gone.version}" in said[0], built.stderr
    assert json.loads(built.stdout)["digest"] == json.loads(reference.stdout)["digest"]
    assert missing.returncode == 2
    assert f"libc6 {gone.version} is gone from the Debian archive" in missing.stderr
    assert not (tmp_path / "o2" / "oci").exists()


def test_the_frameworks_own_image_is_resolved_again_when_a_pin_is_gone(tmp_path, monkeypatch,
                                                                       capsys):
    """build_current (the Docker host's and the initramfs tools' builds): a pinned .deb in
    neither the mirror nor the snapshot service gets the definition resolved again within
    its release, said once; the shipped lock is left as it was, later builds reuse the new
    lock."""
    from framework.builder.current import build_current
    from framework.cache import cache_root

    definition = tmp_path / "own" / "hello.yaml"
    definition.parent.mkdir()
    shutil.copy(HELLO, definition)
    lock = lock_path(HELLO).read_text()
    pinned = read_lock(lock_path(HELLO))
    assert pinned is not None
    libc = next(p for p in pinned.packages if p.name == "libc6")
    entry = "version: {}\n  architecture: amd64\n  sha256: {}"
    gone = lock.replace(entry.format(libc.version, libc.sha256),
                        entry.format(f"{libc.version}.gone", "fe" * 32))
    gone = gone.replace(libc.url, libc.url.replace("_amd64.deb", "_amd64-gone.deb"))
    assert gone.count(".gone") == 1
    lock_path(definition).write_text(gone)
    cache = tmp_path / "cache"
    cache.mkdir()
    for shared in ("debs", "apt", "info"):  # no download or list fetch twice
        (cache / shared).symlink_to(cache_root() / shared)
    monkeypatch.setenv("CIMAGES_CACHE", str(cache))
    monkeypatch.setenv("CIMAGES_SNAPSHOT_URL", f"http://127.0.0.1:{free_port()}")  # nobody
    relocked = tmp_path / "relocked"
    built = build_current(definition, tmp_path / "out", relocked)
    said = capsys.readouterr().err
    assert f"libc6 {libc.version}.gone, pinned by hello.yaml, is gone" in said
    assert "within bookworm" in said
    current = read_lock(lock_path(relocked / "hello.yaml"))
    assert current is not None
    assert next(p for p in current.packages if p.name == "libc6").version == libc.version
    assert lock_path(definition).read_text() == gone
    again = build_current(definition, tmp_path / "out", relocked)
    assert again.digest == built.digest and "gone" not in capsys.readouterr().err
