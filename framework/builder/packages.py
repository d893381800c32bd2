"""Package layers: from the cache when their inputs are unchanged, else unpacked from the
.debs in worker processes; and the check that no two packages ship one file differently."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from framework.builder import layercache
from framework.builder.deb import Deb
from framework.builder.download import refetch
from framework.builder.layer import Entry, LayerBlob, write_layer
from framework.builder.lockfile import LockedPackage
from framework.builder.progress import Progress
from framework.builder.unpack import DebInfo, IdMap, unpack_deb
from framework.errors import UserError
from framework.processes import die_with_parent


@dataclass(frozen=True)
class PackageLayer:
    """One group's layer and what unpacking each of its .debs found, by sha256."""

    blob: LayerBlob
    infos: dict[str, DebInfo]


def _owner_ids(info: DebInfo, ids: IdMap) -> dict[str, int | None]:
    table = {"user": ids.users, "group": ids.groups}
    return {n: table[n.split(":", 1)[0]].get(n.split(":", 1)[1])
            for n in info.owner_names}


def _group_key(group: list[LockedPackage], infos: dict[str, DebInfo], ids: IdMap,
               mtime: int) -> str:
    return layercache.key_of(["packages", mtime, [
        [p.sha256, _owner_ids(infos[p.sha256], ids)] for p in group]])


def _status_entries(name: str, control: dict[str, bytes]) -> list[Entry]:
    """var/lib/dpkg/status.d/<package>: what image scanners read to list packages."""
    text = control.get("control", b"").rstrip(b"\n") + b"\n"
    entries = [Entry(f"var/lib/dpkg/status.d/{name}", "file", 0o644, size=len(text), data=text)]
    if "md5sums" in control:
        sums = control["md5sums"]
        entries.append(Entry(f"var/lib/dpkg/status.d/{name}.md5sums", "file", 0o644,
                             size=len(sums), data=sums))
    return entries


def _cached_layer(group: list[LockedPackage], ids: IdMap, mtime: int) -> PackageLayer | None:
    """The layer from the cache, decided without opening a .deb; None on a miss."""
    infos = {}
    for p in group:
        if (info := layercache.deb_info(p.sha256)) is None:
            return None
        infos[p.sha256] = info
    hit = layercache.lookup(_group_key(group, infos, ids, mtime))
    return PackageLayer(hit, infos) if hit else None


def _write_package_layer(group: list[LockedPackage], debs: dict[str, Path], ids: IdMap,
                         mtime: int) -> PackageLayer | list[LockedPackage]:
    """Unpacks the group's .debs into one layer and caches it (runs in a worker process).
    Each .deb is hashed as it is read: the ones that no longer match the lock (the cache
    file changed since it was fetched) are returned instead, and nothing is written."""
    read = {p.name: Deb.read(debs[p.name]) for p in group}
    changed = [p for p in group if read[p.name].sha256() != p.sha256]
    if changed:
        return changed
    infos: dict[str, DebInfo] = {}
    entries: list[Entry] = []
    for p in group:
        unpacked = unpack_deb(read[p.name], ids)
        control = read[p.name].control_files()
        infos[p.sha256] = DebInfo.of(unpacked, control)
        layercache.store_deb_info(p.sha256, infos[p.sha256])
        entries += unpacked.entries + _status_entries(p.name, control)
    blob = write_layer(entries, mtime, layercache.blob_dir())
    layercache.store(_group_key(group, infos, ids, mtime), blob)
    return PackageLayer(blob, infos)


# By group index: its layer, or the packages whose cached .debs changed.
Written = dict[int, PackageLayer | list[LockedPackage]]

# glibc's mallopt parameters, and the largest mmap threshold it accepts on 64-bit.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX = -1, -3, 32 << 20


def _worker_start() -> None:
    """Pool initializer: the worker dies with the build, and reuses the memory it frees.
    Each package allocates and frees tens of MB (the archive, the tar, its gzip); glibc
    maps such blocks afresh and unmaps them when freed, so every page faults and is zeroed
    again (half of the workers' page faults). Kept in the heap, freed blocks are reused."""
    die_with_parent()
    libc = ctypes.CDLL(None)
    if hasattr(libc, "mallopt"):  # glibc; another libc keeps its defaults
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX)


def _write_all(groups: dict[int, list[LockedPackage]], debs: dict[str, Path], ids: IdMap,
               mtime: int, reused: int = 0) -> Written:
    """`_write_package_layer` of each group, by index: in worker processes (processes,
    because tar parsing holds the GIL), first come first served in the given order; a
    single group (the usual rebuild) is not worth a worker."""
    if len(groups) == 1:
        ((i, group),) = groups.items()
        return {i: _write_package_layer(group, debs, ids, mtime)}
    written: Written = {}
    progress = Progress("layers", len(groups), unit="layers")
    workers = min(os.cpu_count() or 2, len(groups))
    # A killed build must not leave its workers running (holding its stdout).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=_worker_start) as pool:
        futures = {pool.submit(_write_package_layer, group, debs, ids, mtime): i
                   for i, group in groups.items()}
        for future in as_completed(futures):
            written[futures[future]] = future.result()
            progress.advance(1)
    progress.finish(f"{len(groups)} written, {reused} reused")
    return written


def package_layers(groups: list[list[LockedPackage]], debs: dict[str, Path], ids: IdMap,
                   mtime: int) -> tuple[list[PackageLayer], int]:
    """Each group's layer and its packages' infos, and how many layers were written."""
    built: dict[int, PackageLayer] = {}
    for i, group in enumerate(groups):
        if hit := _cached_layer(group, ids, mtime):
            built[i] = hit
    # Largest first, so the workers finish together.
    misses = {i: groups[i] for i in sorted(
        (i for i in range(len(groups)) if i not in built),
        key=lambda i: -sum(p.installed_size for p in groups[i]))}
    written = _write_all(misses, debs, ids, mtime, len(built)) if misses else {}
    stale = {i: result for i, result in written.items() if isinstance(result, list)}
    if stale:
        refetch([p for changed in stale.values() for p in changed])
        written.update(_write_all({i: groups[i] for i in stale}, debs, ids, mtime))
    for i, result in written.items():
        if isinstance(result, list):
            raise UserError(f"the cached .debs of {', '.join(p.name for p in result)} changed "
                            "again right after they were fetched and checked; something "
                            "writes into the cache: stop it and build again")
        built[i] = result
    return [built[i] for i in range(len(groups))], len(misses)


def check_conflicts(packages: list[LockedPackage], infos: dict[str, DebInfo]) -> None:
    owner: dict[str, tuple[str, str]] = {}
    for p in packages:
        for path, fingerprint in infos[p.sha256].files.items():
            seen = owner.setdefault(path, (p.name, fingerprint))
            if seen[1] != fingerprint:
                raise UserError(
                    f"file conflict: /{path} is shipped by both {seen[0]} and {p.name} with "
                    "different content; remove one of the two packages from "
                    "environment.systemPackages (dpkg would refuse to install both too)"
                )
