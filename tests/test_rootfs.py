"""Unpacked roots (framework/sandbox/rootfs.py): whiteouts, attributes, and the pool that
lets roots of different images share their files' inodes."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from framework.sandbox.rootfs import prune_pool, unpacked_root


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CIMAGES_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def layer(path: Path, files: dict[str, tuple[bytes, int]]) -> Path:
    """A layer of regular files: name -> (content, mode); `.wh.` names are whiteouts."""
    with tarfile.open(path, "w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def test_roots_of_different_images_share_the_inodes_of_the_same_files(tmp_path: Path):
    shared = layer(tmp_path / "shared.tar", {"usr/bin/tool": (b"#!/bin/sh\n", 0o755),
                                             "etc/old": (b"x", 0o644)})
    mine = layer(tmp_path / "mine.tar", {"etc/conf": (b"mine", 0o600), "etc/.wh.old": (b"", 0)})
    theirs = layer(tmp_path / "theirs.tar", {"etc/conf": (b"theirs", 0o600)})
    first = unpacked_root([shared, mine], "sha256:" + "1" * 64)
    second = unpacked_root([shared, theirs], "sha256:" + "2" * 64)
    tool_a, tool_b = (first / "usr/bin/tool").stat(), (second / "usr/bin/tool").stat()
    assert (tool_a.st_ino, tool_a.st_dev) == (tool_b.st_ino, tool_b.st_dev)
    assert stat.S_IMODE(tool_a.st_mode) == 0o755 and tool_a.st_mtime == 1_000_000
    assert (first / "etc/conf").read_bytes() == b"mine"
    assert (second / "etc/conf").read_bytes() == b"theirs"
    assert stat.S_IMODE((first / "etc/conf").stat().st_mode) == 0o600
    assert not (first / "etc/old").exists() and (second / "etc/old").exists()


def test_the_same_content_with_other_attributes_is_another_file(tmp_path: Path):
    one = unpacked_root([layer(tmp_path / "a.tar", {"f": (b"same", 0o644)})], "sha256:" + "3" * 64)
    two = unpacked_root([layer(tmp_path / "b.tar", {"f": (b"same", 0o755)})], "sha256:" + "4" * 64)
    assert (one / "f").stat().st_ino != (two / "f").stat().st_ino
    assert stat.S_IMODE((two / "f").stat().st_mode) == 0o755
    assert os.stat(one / "f").st_nlink == 2  # the root's name and the pool's


def test_pool_files_no_root_links_are_pruned(tmp_path: Path, cache: Path):
    kept = unpacked_root([layer(tmp_path / "k.tar", {"k": (b"kept", 0o644)})], "sha256:" + "5" * 64)
    gone = unpacked_root([layer(tmp_path / "g.tar", {"g": (b"gone", 0o644)})], "sha256:" + "6" * 64)
    shutil.rmtree(gone)  # as an eviction does
    prune_pool(older_than_s=0)
    assert sorted(p.name.split("-")[0] for p in (cache / "roots" / "pool").iterdir()) == [
        hashlib.sha256(b"kept").hexdigest()]
    assert (kept / "k").read_bytes() == b"kept"
