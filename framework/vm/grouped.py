"""A docker-archive as the VM's dockerd loads it: its layers merged into a few groups.

dockerd unpacks and registers every layer of a `docker load` on its own (20.10 re-executes
itself per layer): under TCG most of a second per layer, and the builder writes one layer
per package (nginx: 54). Merged into runs of one kind (the base image's layers, then the
packages', then the image's own files: generated /etc, accounts, services, image.run), an
image is three layers at most, and the group an edit of a definition changes most often is
the top one: a load after such an edit moves only that group, the others being in the
snapshot it restores (docker.py). What a container sees is unchanged; only the layer split
(and so the image ID) differs.

Each group is cached under its member layers' diff IDs, which are checked as the layers are
read: an unchanged group is merged once, and a lying archive cannot plant content under
another archive's diff IDs.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import itertools
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from framework.atomic import pending, write_atomic
from framework.builder.base import history_lines
from framework.builder.blobs import HashingWriter
from framework.builder.oci import archive_manifest
from framework.cache import hold
from framework.errors import UserError
from framework.vm.cache import cache_dir

# Bumped when a group's content or the config written for it changes.
RECIPE = "groups1"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Group:
    diff_id: str  # "sha256:..." of the merged, uncompressed tar
    path: Path  # the merged tar, in the cache
    size: int


@dataclass(frozen=True)
class GroupedImage:
    config: bytes  # the image config, with the groups' diff IDs and history
    repo_tags: list[str]
    groups: list[Group]

    @property
    def image_id(self) -> str:
        return f"sha256:{hashlib.sha256(self.config).hexdigest()}"

    @property
    def chain_ids(self) -> list[str]:
        """Each group's chain ID: dockerd's name for the stack of layers up to it."""
        chain: list[str] = []
        for group in self.groups:
            chain.append(group.diff_id if not chain else "sha256:" + hashlib.sha256(
                f"{chain[-1]} {group.diff_id}".encode()).hexdigest())
        return chain

    def write_archive(self, out: BinaryIO, skip: int = 0) -> None:
        """Streams the docker-archive to `out`, without the files of the first `skip` groups:
        docker load opens a layer's file only when it lacks the layer's chain ID."""
        config_name = f"{self.image_id.removeprefix('sha256:')}.json"
        names = [f"{g.diff_id.removeprefix('sha256:')}/layer.tar" for g in self.groups]
        manifest = [{"Config": config_name, "RepoTags": self.repo_tags, "Layers": names}]
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, config_name, self.config)
            for group, name in list(zip(self.groups, names, strict=True))[skip:]:
                info = tarfile.TarInfo(name)
                info.size = group.size
                with group.path.open("rb") as data:
                    tar.addfile(info, data)
            _add(tar, "manifest.json", json.dumps(manifest).encode())


def grouped(archive_path: Path) -> GroupedImage:
    """The grouped form of the docker-archive at `archive_path` (groups from the cache, or
    merged now)."""
    where = str(archive_path)
    with tarfile.open(archive_path) as archive:
        manifest, config = archive_manifest(archive, where)
        layers = list(manifest.get("Layers") or [])
        diff_ids = list(config.get("rootfs", {}).get("diff_ids") or [])
        if len(layers) != len(diff_ids):
            raise UserError(f"{where}: its manifest names {len(layers)} layers and its config "
                            f"{len(diff_ids)} diff IDs; give an archive written by `docker "
                            "save`, skopeo or cimages")
        bounds = runs(history_lines(config, len(layers), where))
        groups = [_group(archive, layers[start:end], diff_ids[start:end], where)
                  for start, end in bounds]
    config["rootfs"] = {"type": "layers", "diff_ids": [g.diff_id for g in groups]}
    config["history"] = [
        {"created": config.get("created", ""),
         "created_by": f"cimages VM tier: layers {start + 1}-{end} of {len(layers)} merged"}
        for start, end in bounds]
    return GroupedImage(json.dumps(config, sort_keys=True).encode(),
                        list(manifest.get("RepoTags") or []), groups)


def _kind(created_by: str) -> str:
    if created_by.startswith(("cimages: generated", "cimages: image.run")):
        return "own"
    return "packages" if created_by.startswith("cimages: ") else "base"


def runs(created_by: list[str]) -> list[tuple[int, int]]:
    """[start, end) of each group: the runs of layers of one kind. An archive of another
    builder (one kind throughout) keeps its top layer apart, the one a rebuild most often
    changes."""
    kinds = [_kind(line) for line in created_by]
    if len(kinds) > 1 and set(kinds) == {"base"}:
        return [(0, len(kinds) - 1), (len(kinds) - 1, len(kinds))]
    bounds = [0] + [i for i in range(1, len(kinds)) if kinds[i] != kinds[i - 1]] + [len(kinds)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _group(archive: tarfile.TarFile, layers: list[str], diff_ids: list[str],
           where: str) -> Group:
    key = hashlib.sha256("\n".join([RECIPE, *diff_ids]).encode()).hexdigest()[:32]
    path = cache_dir("flat") / f"{key}.tar"
    record = path.with_suffix(".json")
    hold(path)  # in use until this process ends: `cimages cache --gc` leaves it
    with contextlib.suppress(OSError, ValueError, KeyError):
        known = json.loads(record.read_text())
        if path.stat().st_size == known["size"]:
            return Group(known["diffId"], path, known["size"])
    merge = Merge()
    for index, (layer, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
        with _layer_tar(archive, layer, diff_id, where) as tar:
            for member in tar:
                merge.add(index, member)
    with pending(path.parent) as staged:
        diff_id = merge.write(archive, layers, staged.handle)
        size = staged.handle.tell()
        staged.commit(path)
    write_atomic(record, json.dumps({"diffId": diff_id, "size": size}))
    return Group(diff_id, path, size)


class Merge:
    """What one layer holding a run of layers keeps: for each path the last entry written
    to it, and the whiteouts and opaque directories that still act on the layers below."""

    def __init__(self) -> None:
        self.kept: dict[str, tuple[int, str]] = {}  # path -> (layer index, member name)
        self.whiteouts: set[str] = set()  # lower paths the run deletes
        self.opaque: set[str] = set()  # lower directories the run empties

    def add(self, index: int, member: tarfile.TarInfo) -> None:
        """Takes in entry `member` of the run's layer `index`, as dockerd would apply it:
        a whiteout removes what is there, an opaque directory what the layers below put in
        it (its own layer's entries stay, before or after the marker)."""
        path = PurePosixPath(str(PurePosixPath("/", member.name))[1:] or ".")
        if path.name == OPAQUE:
            self._drop_below(str(path.parent), lambda at: at < index, itself=False)
            self.opaque.add(str(path.parent))
            return
        if path.name.startswith(WHITEOUT):
            gone = str(path.parent / path.name[len(WHITEOUT):])
            self._drop_below(gone, lambda at: True, itself=True)
            # Emptied directories it removes are gone too (written after the whiteouts, their
            # markers would bring them back).
            self.opaque = {d for d in self.opaque if d != gone and not d.startswith(gone + "/")}
            self.whiteouts.add(gone)
            return
        # Written again: a whited-out path (or one below it) is a new file, or a new
        # directory that must not show what the layers below had in it.
        for at in [path, *path.parents]:
            if str(at) in self.whiteouts:
                self.whiteouts.discard(str(at))
                if at != path or member.isdir():
                    self.opaque.add(str(at))
        self.kept[str(path)] = (index, member.name)

    def _drop_below(self, top: str, dropped: Callable[[int], bool], itself: bool) -> None:
        """Forgets the kept entries below `top` (and `top` itself with `itself`) whose layer
        index is `dropped`, and the whiteouts below it."""
        prefix = "" if top == "." else top + "/"
        for path, (at, _) in list(self.kept.items()):
            if (path.startswith(prefix) or (itself and path == top)) and dropped(at):
                del self.kept[path]
        for path in [p for p in self.whiteouts if p.startswith(prefix)]:
            self.whiteouts.discard(path)

    def write(self, archive: tarfile.TarFile, layers: list[str], out: BinaryIO) -> str:
        """Writes the merged tar to `out`; returns its diff ID."""
        hashing = HashingWriter(out)
        wanted = set(self.kept.values())
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as merged:
            for index, layer in enumerate(layers):
                with _layer_tar(archive, layer, "", "") as tar:
                    for member in tar:
                        if (index, member.name) in wanted:
                            merged.addfile(member, tar.extractfile(member)
                                           if member.isfile() else None)
            for gone in sorted(self.whiteouts):
                parent, name = PurePosixPath(gone).parent, PurePosixPath(gone).name
                _add(merged, str(parent / f"{WHITEOUT}{name}"), b"")
            for directory in sorted(self.opaque):
                _add(merged, str(PurePosixPath(directory) / OPAQUE), b"")
        return f"sha256:{hashing.hexdigest()}"


@contextlib.contextmanager
def _layer_tar(archive: tarfile.TarFile, name: str, diff_id: str,
               where: str) -> Iterator[tarfile.TarFile]:
    """A layer of the archive as a stream of tar entries, plain or gzip. With a `diff_id`,
    the whole uncompressed stream is checked against it once the entries are read."""
    try:
        raw = archive.extractfile(name)
    except KeyError:
        raw = None
    if raw is None:
        raise UserError(f"{where}: the docker-archive has no layer file {name!r}")
    head = raw.read(2)
    raw.seek(0)
    stream: Any = gzip.GzipFile(fileobj=raw) if head == GZIP_MAGIC else raw
    reading = _HashingReader(stream)
    with tarfile.open(fileobj=reading, mode="r|") as tar:
        yield tar
        if diff_id:
            while reading.read(1 << 20):
                pass  # the end-of-archive blocks count too
            if f"sha256:{reading.hash.hexdigest()}" != diff_id:
                raise UserError(f"{where}: layer {name} does not match its diff ID "
                                f"{diff_id} in the image config: the archive is damaged; "
                                "build or save it again")


class _HashingReader(io.RawIOBase):
    def __init__(self, source: BinaryIO) -> None:
        self.source, self.hash = source, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.hash.update(data)
        return data


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
