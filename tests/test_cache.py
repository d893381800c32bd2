"""`cimages cache`: sizes (hard links once), least-recently-used eviction under the bound,
entries in use (a shared lock in another process) kept, and a cleared cache still builds.
Real files in a temporary CIMAGES_CACHE."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framework import cache
from framework.cli import main
from framework.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


@pytest.fixture
def root(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    path.mkdir()
    monkeypatch.setenv("CIMAGES_CACHE", str(path))
    monkeypatch.delenv(cache.MAX_ENV, raising=False)
    return path


def blob(path: Path, mib: float = 1, age_s: float = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(int(mib * MIB)))
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def read_only_root(path: Path, age_s: float = 0) -> Path:
    """A tree like an unpacked root: read-only directories with files."""
    blob(path / "usr/bin/tool", 1)
    for folder in (path / "usr/bin", path / "usr", path):
        os.chmod(folder, 0o555)
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def sizes() -> dict[str, int]:
    return {f.name: f.size for f in cache.scan()}


def test_hard_links_are_counted_once(root):
    original = blob(root / "blobs" / "a", 2)
    (root / "roots" / "r").mkdir(parents=True)
    os.link(original, root / "roots" / "r" / "a")
    folders = cache.scan()
    assert 2 * MIB <= cache.total(folders) < 2 * MIB + 64 * 1024
    # The blob alone frees nothing while the root links it too.
    entry = next(e for f in folders for e in f.entries if f.name == "blobs")
    assert entry.size == 0
    assert sizes()["blobs"] + sizes()["roots"] == cache.total(folders)


def test_gc_evicts_least_recently_used_first_until_under_the_bound(root, monkeypatch):
    old = blob(root / "debs" / "old.deb", 1, age_s=3000)
    middle = blob(root / "blobs" / "middle", 1, age_s=2000)
    recent = blob(root / "blobs" / "recent", 1, age_s=1000)
    unused_root = read_only_root(root / "roots" / "k1", age_s=5000)
    monkeypatch.setenv(cache.MAX_ENV, "2.5M")
    assert main(["cache", "--gc"]) == 0
    # Rebuilt entries go first (roots), then built blobs; downloads only with --clear.
    assert not unused_root.exists() and not middle.exists()
    assert recent.exists() and old.exists()
    assert cache.total(cache.scan()) <= 2.5 * MIB
    monkeypatch.setenv(cache.MAX_ENV, "0")
    assert main(["cache", "--gc"]) == 0
    assert not recent.exists() and old.exists()
    assert main(["cache", "--clear"]) == 0
    assert not old.exists()
    assert not list(root.glob("*/.evicting-*"))


def test_a_use_touches_the_entrys_lock_and_counts_as_recent(root, monkeypatch):
    files = [blob(root / "blobs" / f"b{i}", 1, age_s=5000 - i) for i in range(3)]
    lock = files[0].with_name("b0.lock")
    lock.touch()
    os.utime(lock, (time.time() - 900, time.time() - 900))  # b0 used 15 minutes ago
    monkeypatch.setenv(cache.MAX_ENV, "2M")
    assert main(["cache", "--gc"]) == 0
    assert [f.exists() for f in files] == [True, False, True]


def test_gc_stops_as_soon_as_the_total_is_under_the_bound(root, monkeypatch):
    files = [blob(root / "blobs" / f"b{i}", 1, age_s=1000 - i) for i in range(4)]
    monkeypatch.setenv(cache.MAX_ENV, "3M")
    assert main(["cache", "--gc"]) == 0
    assert [f.exists() for f in files] == [False, True, True, True]


HOLDER = """
import sys, time
from pathlib import Path
from framework import cache
cache.hold(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["--gc", "--clear"])
def test_an_entry_held_by_another_process_survives(root, monkeypatch, how):
    held = read_only_root(root / "roots" / "held", age_s=9000)
    other = read_only_root(root / "roots" / "other", age_s=9000)
    snapshot = blob(root / "vm" / "snapshots" / "s.state", 1, age_s=8000)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(held)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        monkeypatch.setenv(cache.MAX_ENV, "0")
        assert main(["cache", how]) == 0
        assert (held / "usr/bin/tool").is_file()
        assert not other.exists() and not snapshot.exists()
    finally:
        holder.kill()
        holder.wait()
    os.utime(held.with_name("held.lock"), (1, 1))  # as if used long ago
    # Once its user is gone, the entry goes too.
    assert main(["cache", how]) == 0
    assert not held.exists()


def test_a_reader_after_an_eviction_finds_the_entry_gone(root):
    entry = blob(root / "vm" / "snapshots" / "s.state", 1)
    cache.hold(entry)
    cache.release(entry)
    assert main(["cache", "--clear"]) == 0
    cache.hold(entry)  # a new lock file: its lock is real
    try:
        assert not entry.exists()
        entry.write_bytes(b"made again")
        assert main(["cache", "--clear"]) == 0
        assert entry.read_bytes() == b"made again"  # held by this process now
    finally:
        cache.release(entry)


def test_disks_and_keys_stay_while_a_snapshot_needs_them(root, monkeypatch):
    snapshot = blob(root / "vm" / "snapshots" / "s.state", 1, age_s=9000)
    disk = blob(root / "vm" / "disks" / "d-r2.ext4", 1, age_s=9000)
    keys = root / "vm" / "keys" / "d"
    keys.mkdir(parents=True)
    os.utime(keys, (1, 1))
    cache.hold(snapshot)
    os.utime(snapshot.with_name("s.state.lock"), (1, 1))  # used long ago, held now
    try:
        monkeypatch.setenv(cache.MAX_ENV, "0")
        assert main(["cache", "--gc"]) == 0
        assert disk.exists() and keys.exists()
    finally:
        cache.release(snapshot)
    assert main(["cache", "--gc"]) == 0
    assert not snapshot.exists() and not disk.exists() and not keys.exists()


@pytest.mark.parametrize("text, size", [("5G", 5 * 2**30), ("500M", 500 * MIB),
                                        ("1.5k", 1536), ("123", 123), (" 2 GiB ", 2 * 2**30),
                                        ("0", 0)])
def test_bound_sizes(text, size):
    assert cache.parse_size(text) == size


@pytest.mark.parametrize("text", ["5x", "G", "-1G", "lots", "nan", "1e999"])
def test_a_bad_bound_is_one_line_and_exit_2(root, monkeypatch, capsys, text):
    with pytest.raises(UserError):
        cache.parse_size(text)
    monkeypatch.setenv(cache.MAX_ENV, text)
    assert main(["cache", "--gc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and cache.MAX_ENV in err and "5G" in err


def test_gc_keeps_what_was_used_in_the_last_minutes_and_clear_does_not(root, monkeypatch):
    fresh = blob(root / "vm" / "flat" / "f.tar", 1)
    monkeypatch.setenv(cache.MAX_ENV, "0")
    assert main(["cache", "--gc"]) == 0
    assert fresh.exists()
    assert main(["cache", "--clear"]) == 0
    assert not fresh.exists()


def test_the_default_bound(root):
    assert cache.bound() == cache.DEFAULT_MAX


def test_cache_lists_folders_sizes_entries_total_bound_and_root(root, monkeypatch, capsys):
    blob(root / "debs" / "a.deb", 1)
    blob(root / "debs" / "b.deb", 1)
    (root / "debs" / "b.deb.lock").touch()
    read_only_root(root / "roots" / "k")
    blob(root / "vm" / "snapshots" / "s.state", 2)
    (root / "vm" / "snapshots" / "s.json").write_text("x")
    monkeypatch.setenv(cache.MAX_ENV, "500M")
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert f"cache root: {root}" in out
    assert lines["debs"] == ["2.0", "MiB", "2"]  # a .lock is part of its entry
    assert lines["vm/snapshots"][2] == "1"  # the .state and its .json: one entry
    snapshot = next(e for f in cache.scan() if f.name == "vm/snapshots" for e in f.entries)
    assert snapshot.name == "s.state"

    assert lines["roots"][2] == "1"
    assert "total 5.0 MiB in 4 entries; bound 500.0 MiB (CIMAGES_CACHE_MAX)" in out
    assert all((root / p).exists() for p in ("debs/a.deb", "roots/k", "vm/snapshots/s.state"))


@pytest.mark.slow
def test_a_cleared_cache_still_builds(root, tmp_path):
    from framework.builder import build

    first = build(ROOT / "images/empty.yaml", tmp_path / "one", frozen=True)
    assert cache.total(cache.scan()) > 0
    assert main(["cache", "--clear"]) == 0
    left = cache.scan()
    assert sum(len(f.entries) for f in left) == 0 and cache.total(left) < 64 * 1024
    again = build(ROOT / "images/empty.yaml", tmp_path / "two", frozen=True)
    assert again.digest == first.digest


def test_the_automatic_bound_evicts_old_roots_in_the_background(root, monkeypatch):
    old = read_only_root(root / "roots" / "old", age_s=9000)
    kept = blob(root / "debs" / "a.deb", 1, age_s=9000)  # downloads: only `cimages cache`
    monkeypatch.setenv(cache.MAX_ENV, "10K")
    cache.bounded()
    deadline = time.monotonic() + 30
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not old.exists() and kept.exists()
    # At most once per interval: a second root made now stays until then.
    new = read_only_root(root / "roots" / "new")
    cache.bounded()
    time.sleep(1)
    assert new.exists()
