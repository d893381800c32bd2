"""Package layers: from the cache when their inputs are unchanged, else unpacked from the
.debs in worker processes; and the check that no two packages ship one file differently."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from framework.builder import layercache
from framework.builder.deb import control_files
from framework.builder.download import reverify
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
                         mtime: int) -> PackageLayer:
    """Unpacks the group's .debs into one layer and caches it (runs in a worker process)."""
    infos: dict[str, DebInfo] = {}
    entries: list[Entry] = []
    for p in group:
        unpacked = unpack_deb(debs[p.name], ids)
        control = control_files(debs[p.name])
        infos[p.sha256] = DebInfo.of(unpacked, control)
        layercache.store_deb_info(p.sha256, infos[p.sha256])
        entries += unpacked.entries + _status_entries(p.name, control)
    blob = write_layer(entries, mtime, layercache.blob_dir())
    layercache.store(_group_key(group, infos, ids, mtime), blob)
    return PackageLayer(blob, infos)


def package_layers(groups: list[list[LockedPackage]], debs: dict[str, Path], ids: IdMap,
                   mtime: int) -> tuple[list[PackageLayer], int]:
    """Each group's layer and its packages' infos, and how many layers were written."""
    built: dict[int, PackageLayer] = {}
    for i, group in enumerate(groups):
        if hit := _cached_layer(group, ids, mtime):
            built[i] = hit
    # Largest first, so the workers finish together; processes, because tar parsing holds
    # the GIL. A single miss (the usual rebuild) is not worth a worker.
    misses = sorted((i for i in range(len(groups)) if i not in built),
                    key=lambda i: -sum(p.installed_size for p in groups[i]))
    reverify([p for i in misses for p in groups[i]])
    if len(misses) == 1:
        built[misses[0]] = _write_package_layer(groups[misses[0]], debs, ids, mtime)
    elif misses:
        progress = Progress("layers", len(misses), unit="layers")
        workers = min(os.cpu_count() or 2, len(misses))
        # A killed build must not leave its workers running (holding its stdout).
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=die_with_parent) as pool:
            futures = {pool.submit(_write_package_layer, groups[i], debs, ids, mtime): i
                       for i in misses}
            for future in as_completed(futures):
                built[futures[future]] = future.result()
                progress.advance(1)
        progress.finish(f"{len(misses)} written, {len(groups) - len(misses)} reused")
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
