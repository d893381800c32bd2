"""Where every part keeps its caches (builder, sandbox roots, VM, report tools):
`$CIMAGES_CACHE`, else ~/.cache/cimages."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from framework.processes import die_with_parent


def cache_root() -> Path:
    # An override lets tests prove that two builds with different caches agree.
    override = os.environ.get("CIMAGES_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "cimages"


def cache_dir(name: str) -> Path:
    path = cache_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on `path`'s .lock file: concurrent workers (pytest -n) that
    would make the same cached artefact wait for the first one instead."""
    with path.with_name(f"{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def using(root: Path) -> Iterator[Path]:
    """Every cache under `root` while the context lasts (a rebuild that must not reuse)."""
    before = os.environ.get("CIMAGES_CACHE")
    os.environ["CIMAGES_CACHE"] = str(root)
    try:
        yield root
    finally:
        if before is None:
            del os.environ["CIMAGES_CACHE"]
        else:
            os.environ["CIMAGES_CACHE"] = before


def fresh_root(directory: Path, debs: Path) -> Path:
    """An empty cache root that shares only the .debs (verified by hash when unpacked)."""
    directory.mkdir(parents=True)
    (directory / "debs").symlink_to(debs)
    return directory


# --- Bounding the caches -------------------------------------------------------------------
# An entry is one child of a cache folder (a file such as debs/X.deb, blobs/X, or a directory
# such as roots/KEY), together with its siblings of the same stem (KEY.lock, KEY.json).
# Readers of big entries (VM snapshots and disks, unpacked roots) hold a shared flock on the
# entry's .lock file for as long as their process lives (`hold`) and touch its mtime, which
# is the entry's last use; eviction takes that lock exclusively without waiting and skips
# the entry when it cannot.

# One `make test` from empty caches leaves about 8.4 GB: a bound below that would evict, on
# every run, what the next run needs.
DEFAULT_MAX = 10 * 2**30
MAX_ENV = "CIMAGES_CACHE_MAX"
# Folders holding further folders of entries rather than entries.
NESTED = ("vm",)
# Evicted by a gc, least recently used first: what is rebuilt from the other caches
# (unpacked roots, VM snapshots, disks, the VM's layer groups, the VM's own images); then built
# layers. Every other folder (downloads: .debs, apt lists, npm tools; small state) only goes
# with --clear: it is small, and fetching it again needs the network.
TIERS = (("roots", "vm/snapshots", "vm/flat", "vm/images", "vm/disks", "vm/kernels",
          "vm/initramfs", "vm/keys", "tmp"),
         ("blobs", "layers", "info"))
# A snapshot boots with its disk, kernel, initramfs and SSH keys by name: those go only once
# no snapshot is left.
AFTER_SNAPSHOTS = ("vm/disks", "vm/kernels", "vm/initramfs", "vm/keys")
# Never evicted by the automatic bound (a build may be reading them without a lock).
AUTO_ONLY = ("roots", "vm/snapshots", "vm/disks")
AUTO_INTERVAL_S = 600
# Entries used this recently stay through a gc (not a --clear): some readers (the VM's
# layer groups, derived snapshots) take no lock, and a test using one is running.
GRACE_S = 600
EVICTING = ".evicting-"
# Files beside an entry's own that describe it (a derived snapshot's load record).
SIDECARS = (".json",)
_held: dict[str, int] = {}


def _lock_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.lock")


def hold(path: Path) -> None:
    """Marks the cache entry `path` as in use until this process ends (a shared flock on its
    .lock file, whose mtime records the use). Waits while the entry is being evicted: the
    caller checks afterwards that the entry is still there."""
    key = str(path)
    if key in _held:
        _touch(_lock_path(path))
        return
    lock = _lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a lock file that an eviction removed meanwhile
            break
        os.close(fd)
    _touch(lock)
    _held[key] = fd


def release(path: Path) -> None:
    """Ends `hold(path)` early (the entry turned out missing and is about to be made)."""
    fd = _held.pop(str(path), None)
    if fd is not None:
        os.close(fd)


def drop(path: Path) -> bool:
    """Removes the entry `path` now (this process's hold on it ends) unless another process
    holds it; False then. For an intermediate entry whose products are cached on their
    own."""
    release(path)
    members = [m for m in (path, _lock_path(path)) if m.exists()]
    return not members or evict(Entry(path.parent.name, path.name, members, 0, 0.0))


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def parse_size(text: str) -> int:
    """`5G`, `500M`, `1.5T`, `123` (bytes): binary multiples; a UserError otherwise."""
    from framework.errors import UserError

    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = 1
    if value[-1:] in "KMGT" and value:
        scale = 1024 ** ("KMGT".index(value[-1]) + 1)
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not value or number < 0 or number != number or number == float("inf"):
        raise UserError(f"{MAX_ENV}={text!r} is not a size: give a number of bytes with an "
                        "optional K, M, G or T, such as 5G or 500M")
    return int(number * scale)


def bound() -> int:
    value = os.environ.get(MAX_ENV, "").strip()
    return parse_size(value) if value else DEFAULT_MAX


@dataclass
class Entry:
    folder: str
    name: str
    members: list[Path]
    size: int  # freed by removing it: blocks of inodes with no link outside it
    used: float  # last use: the newest mtime/atime of its members

    @property
    def path(self) -> Path:
        return self.members[0].parent / self.name


@dataclass
class Folder:
    name: str
    size: int = 0
    entries: list[Entry] = field(default_factory=list)


def _stem(name: str) -> str:
    return name.split(".", 1)[0]


def scan(root: Path | None = None) -> list[Folder]:
    """Every cache folder with its entries and sizes as du counts them (each inode once)."""
    root = root or cache_root()
    seen: set[tuple[int, int]] = set()
    folders: list[Folder] = []
    if not root.is_dir():
        return folders
    names: list[str] = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir() or child.is_symlink():
            continue
        if child.name in NESTED:
            names += [f"{child.name}/{c.name}" for c in sorted(child.iterdir())
                      if c.is_dir() and not c.is_symlink()]
        else:
            names.append(child.name)
    for name in names:
        folder = Folder(name)
        groups: dict[str, list[Path]] = {}
        for child in sorted((root / name).iterdir()):
            if not child.name.startswith("."):  # in progress (a temporary sibling)
                groups.setdefault(_stem(child.name), []).append(child)
        for members in groups.values():
            # The entry's own file first (X.state, not its record X.json): its lock is the
            # entry's.
            members.sort(key=lambda p: (p.name.endswith(".lock"), p.suffix in SIDECARS,
                                        p.name))
            size, freed, used = _measure(members, seen)
            folder.size += size
            folder.entries.append(Entry(name, members[0].name, members, freed, used))
        folders.append(folder)
    return folders


def _measure(members: list[Path], seen: set[tuple[int, int]]) -> tuple[int, int, float]:
    """The entry's new blocks for the total, the blocks its removal frees (inodes with all
    their links inside it; directories always) and its last use."""
    size = 0
    links: dict[tuple[int, int], list[int]] = {}
    used = 0.0
    for member in members:
        try:
            top = member.lstat()
        except FileNotFoundError:
            continue
        used = max(used, top.st_mtime, 0 if stat.S_ISDIR(top.st_mode) else top.st_atime)
        stack = [(member, top)]
        while stack:
            path, info = stack.pop()
            ident = (info.st_dev, info.st_ino)
            is_dir = stat.S_ISDIR(info.st_mode)
            count = links.setdefault(ident, [0, 1 if is_dir else info.st_nlink,
                                             info.st_blocks * 512])
            count[0] += 1
            if ident not in seen:
                seen.add(ident)
                size += info.st_blocks * 512
            if is_dir:
                try:
                    with os.scandir(path) as it:
                        for item in it:
                            with contextlib.suppress(OSError):
                                stack.append((Path(item.path), item.stat(follow_symlinks=False)))
                except OSError:
                    continue
    freed = sum(blocks for found, nlink, blocks in links.values() if found >= nlink)
    return size, freed, used


def total(folders: list[Folder]) -> int:
    return sum(f.size for f in folders)


def _remove_tree(path: Path) -> None:
    """Removes a file or a tree, read-only directories included (unpacked roots)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    for base, dirs, _files in os.walk(path):
        for name in dirs:
            sub = os.path.join(base, name)
            if not os.path.islink(sub):
                with contextlib.suppress(OSError):
                    os.chmod(sub, 0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    shutil.rmtree(path)


def evict(entry: Entry) -> bool:
    """Removes the entry unless someone holds it (or is making it); False then."""
    data = [m for m in entry.members if not m.name.endswith(".lock")]
    locks = [m for m in entry.members if m.name.endswith(".lock")]
    if data and not any(lock == _lock_path(data[0]) for lock in locks):
        locks.append(_lock_path(data[0]))  # a reader arriving now waits for us
    fds: list[int] = []
    doomed: list[Path] = []
    try:
        for lock in locks:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        # Renamed first (atomic): a gc cut short leaves a hidden leftover, never an entry
        # that looks whole but is not; the next gc removes leftovers.
        for member in data:
            target = member.with_name(f"{EVICTING}{member.name}")
            with contextlib.suppress(FileNotFoundError):
                member.rename(target)
                doomed.append(target)
        for lock in locks:  # last: a reader that opens it anew finds the entry gone
            lock.unlink(missing_ok=True)
    finally:
        for fd in fds:
            os.close(fd)
    for target in doomed:  # hidden now: no reader waits for this
        _remove_tree(target)
    return True


def _tier(folder: str) -> int:
    for index, names in enumerate(TIERS):
        if folder in names:
            return index
    return len(TIERS)


def gc(limit: int | None = None, *, clear: bool = False,
       folders_only: tuple[str, ...] | None = None) -> tuple[int, int, list[Entry]]:
    """Evicts least recently used entries (rebuilt ones before downloads) until the total is
    under `limit` (the bound), or every entry with `clear`; entries in use stay. Returns the
    total before and after and the entries it kept because they were in use."""
    limit = bound() if limit is None else limit
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".gc.lock").open("w") as gc_lock:
        fcntl.flock(gc_lock, fcntl.LOCK_EX)
        # Only a gc, under this lock, makes them: any found now were left by one cut short.
        for leftover in [*root.glob(f"*/{EVICTING}*"), *root.glob(f"vm/*/{EVICTING}*")]:
            with contextlib.suppress(OSError):
                _remove_tree(leftover)
        folders = scan(root)
        before = now = total(folders)
        kept: list[Entry] = []
        entries = [e for f in folders for e in f.entries
                   if folders_only is None or e.folder in folders_only]
        entries.sort(key=lambda e: (_tier(e.folder), e.folder in AFTER_SNAPSHOTS, e.used))
        for entry in entries:
            if not clear and now <= limit:
                break
            if entry.folder in AFTER_SNAPSHOTS and _has_snapshots(root):
                continue
            if not clear and (entry.used > time.time() - GRACE_S
                              or _tier(entry.folder) == len(TIERS)):
                continue
            if evict(entry):
                now -= entry.size
            else:
                kept.append(entry)
        if clear or now != before:
            now = total(scan(root))
    return before, now, kept


def _has_snapshots(root: Path) -> bool:
    folder = root / "vm" / "snapshots"
    return folder.is_dir() and any(p.suffix == ".state" for p in folder.iterdir())


def bounded() -> None:
    """After a big entry was written: evicts old VM snapshots, disks and unpacked roots if
    the caches are over the bound. At most once per AUTO_INTERVAL_S (a stamp file), and
    never waits for a gc already running elsewhere."""
    root = cache_root()
    stamp = root / ".gc-stamp"
    with contextlib.suppress(OSError):
        if time.time() - stamp.stat().st_mtime < AUTO_INTERVAL_S:
            return
    try:
        limit = bound()
    except Exception:  # a bad value is said by `cimages cache`; a build goes on
        return
    root.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    with (root / ".gc.lock").open("w") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        fcntl.flock(probe, fcntl.LOCK_UN)
    # In its own process: evicting gigabytes takes seconds the build or test must not wait.
    # It dies with its parent like every other child (an eviction cut short leaves only
    # hidden leftovers, which the next gc removes).
    subprocess.Popen([sys.executable, "-m", "framework.cache", str(limit)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True,
                     preexec_fn=die_with_parent,
                     env={**os.environ, "PYTHONPATH": os.pathsep.join(
                         [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])})


if __name__ == "__main__":  # the background half of bounded()
    gc(int(sys.argv[1]), folders_only=AUTO_ONLY)
