"""`build(definition)`: a definition and its lock to an OCI layout and a docker-archive."""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from framework.atomic import write_atomic
from framework.builder import layercache, maintscripts, pull
from framework.builder.accounts import Accounts, account_files, accounts
from framework.builder.base import BaseImage, load_base
from framework.builder.compressor import COMPRESSOR
from framework.builder.deb import Deb
from framework.builder.download import download
from framework.builder.generated import GENERATORS
from framework.builder.grouping import explicit_groups, group_packages
from framework.builder.layer import DirMeta, Entry, LayerBlob, with_parents, write_layer
from framework.builder.lockfile import Lock, LockedPackage, lock_path, write_lock
from framework.builder.oci import ImageLayer, image_config, write_docker_archive, write_layout
from framework.builder.output import Stage, staged_output
from framework.builder.packages import check_conflicts, package_layers
from framework.builder.resolve import lock_for_build, requested
from framework.builder.run import run_layer
from framework.builder.sbom import spdx
from framework.builder.unpack import MERGED_USR, DebInfo, IdMap, usr_path
from framework.errors import UserError
from framework.image_files import ImageFile
from framework.options import evaluate


@dataclass
class BuildResult:
    name: str
    tag: str
    digest: str  # manifest digest, "sha256:..."
    oci_dir: Path
    archive: Path | None  # docker-archive tar (None when the build was asked for none)
    layers: list[Path]  # layer blobs in oci_dir, base first
    config: dict[str, Any]  # the evaluated definition
    lock_path: Path
    sbom: Path
    size: int  # bytes of all layer blobs
    seconds: float
    reused_layers: int = 0
    written_layers: int = 0
    warnings: list[str] = field(default_factory=list)
    package_layers: dict[str, str] = field(default_factory=dict)  # package -> its own layer


@dataclass
class _Stats:
    reused: int = 0
    written: int = 0


def _epoch(created: str) -> int:
    return calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))


def _base_entries() -> list[Entry]:
    """Debian's merged-/usr layout and the directories every root has."""
    entries = [Entry(name, "symlink", 0o777, link=f"usr/{name}") for name in MERGED_USR]
    entries += [Entry(f"usr/{name}", "dir", 0o755) for name in ("bin", "sbin", "lib")]
    entries += [Entry("tmp", "dir", 0o1777), Entry("var/tmp", "dir", 0o1777),
                Entry("root", "dir", 0o700), Entry("etc", "dir", 0o755),
                Entry("run", "dir", 0o755)]
    return entries


def _memory_layer(kind: str, entries: list[Entry], mtime: int, stats: _Stats,
                  below: DirMeta | None = None) -> LayerBlob:
    """A layer whose entries are all in memory, cached by a hash of those entries."""
    entries = with_parents(entries, below)
    described = [(e.path, e.kind, e.mode, e.uid, e.gid, e.link,
                  hashlib.sha256(e.data or b"").hexdigest()) for e in entries]
    key = layercache.key_of([kind, mtime, sorted(described)])
    hit = layercache.lookup(key)
    if hit:
        stats.reused += 1
        return hit
    blob = write_layer(entries, mtime, layercache.blob_dir())
    layercache.store(key, blob)
    stats.written += 1
    return blob


def _generated_entries(files: list[ImageFile], ids: IdMap) -> list[Entry]:
    by_path: dict[str, Entry] = {}
    for f in files:
        path = usr_path(f.path)
        uid = _resolve(f.user, ids.users, "user", f.path)
        gid = _resolve(f.group, ids.groups, "group", f.path)
        by_path[path] = Entry(path, f.kind, f.mode, uid, gid, size=len(f.content),
                              link=f.target, data=f.content if f.kind == "file" else None)
    return list(by_path.values())


def _resolve(owner: str | int, table: dict[str, int], kind: str, path: str) -> int:
    if isinstance(owner, int):
        return owner
    if owner not in table:
        raise UserError(f"{path} is owned by {kind} `{owner}`, which the image does not have; "
                        f"declare it in users.{'users' if kind == 'user' else 'groups'} "
                        "or fix the name")
    return table[owner]


def _maintscript_files(packages: list[LockedPackage], infos: dict[str, DebInfo],
                       debs: dict[str, Path]) -> list[ImageFile]:
    present = {path for p in packages for path in infos[p.sha256].files}
    postinsts = {p.name: infos[p.sha256].control.get("postinst", "") for p in packages}
    files = maintscripts.alternative_files(postinsts, present)
    for p in packages:
        if any(path.startswith(maintscripts.CA_DIR) for path in infos[p.sha256].files):
            files += maintscripts.ca_bundle(_read_files(debs[p.name], maintscripts.CA_DIR,
                                                        ".crt"))
    return files


def _read_files(deb: Path, prefix: str, suffix: str) -> dict[str, bytes]:
    archive = Deb.read(deb).data_archive()
    return {path: bytes(archive.content(member)) for member in archive.members
            if member.isfile() and (path := usr_path(member.name)).startswith(prefix)
            and path.endswith(suffix)}


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


# Why a layer of the same compressor differs: another input of its bytes.
OTHER_INPUTS = "the builder, image.created or the owners' ids differ"


def _record_layers(definition: Path, lock: Lock, own: dict[str, str], frozen: bool,
                   warnings: list[str]) -> None:
    """The lock remembers each package layer's digest; a differing one is reported.

    A difference is a warning, not an error: the .debs are verified by hash already, and
    the usual cause is another builder or compressor version (the lock names the one that
    made its digests), which a user cannot fix in the definition. `--frozen` reports
    without writing the lock."""
    changed = sorted(n for p in lock.packages if (n := p.name) in own
                     and p.layer and p.layer != own[n])
    if changed:
        warnings.append(
            f"layers of {', '.join(changed)} differ from the digests in "
            f"{lock_path(definition)}: this build did not reproduce them "
            f"({compression_note(lock.compressor, OTHER_INPUTS)})"
            + ("" if frozen else "; the lock now records the new digests"))
    missing = any(p.layer is None and p.name in own for p in lock.packages)
    if (changed or missing) and not frozen:
        write_lock(lock_path(definition), lock.with_layers(own, COMPRESSOR), definition)


def compression_note(recorded: str | None, same: str) -> str:
    """What the compressors say of recorded layer digests that differ from this build's:
    `recorded` made the lock's layers; `same` is the reason when it is this build's too."""
    if recorded is None:
        return ("the lock names no compressor: its layers are from the host's zlib, before "
                f"cimages pinned one; this build's are {COMPRESSOR}")
    if recorded != COMPRESSOR:
        return f"the lock's layers were compressed by {recorded}, this build's by {COMPRESSOR}"
    return f"both by {COMPRESSOR}, which gives the same bytes on every machine: {same}"


def _add_package_layers(layers: list[ImageLayer], groups: list[list[LockedPackage]],
                        blobs: list[LayerBlob], explicit: int = 0) -> dict[str, str]:
    """Appends the package layers; returns the digest of each package's own layer. The
    first `explicit` groups are image.layers'."""
    own_digests = {}
    in_base = {layer.digest for layer in layers}
    for i, (group, blob) in enumerate(zip(groups, blobs, strict=True)):
        if len(group) == 1:
            own_digests[group[0].name] = blob.digest
        if i < explicit:
            label = f"cimages: image.layers[{i}]: packages " + \
                ", ".join(f"{p.name} {p.version}" for p in group)
        elif len(group) == 1:
            label = f"cimages: package {group[0].name} {group[0].version}"
        else:
            label = "cimages: packages " + ", ".join(p.name for p in group) + \
                " (sharing one layer: over image.maxLayers)"
        # A package the base image (built by cimages) already holds, byte for byte, is
        # not repeated: repeating it would also undo the base's generated files over it.
        if blob.digest not in in_base:
            layers.append(ImageLayer.of(blob, label))
    return own_digests


def _generated_layer(cfg: dict[str, Any], acc: Accounts, packages: list[LockedPackage],
                     infos: dict[str, DebInfo], debs: dict[str, Path], mtime: int,
                     stats: _Stats) -> ImageLayer:
    """Accounts, what maintainer scripts would have made, and every GENERATORS' files."""
    files = account_files(acc) + _maintscript_files(packages, infos, debs)
    for generator in GENERATORS:
        files += generator(cfg)
    below: DirMeta = {e.path: (e.mode, e.uid, e.gid) for e in _base_entries()
                      if e.kind == "dir"}
    for p in packages:
        below.update(infos[p.sha256].dirs)
    blob = _memory_layer("generated", _generated_entries(files, acc.id_map()), mtime, stats,
                         below)
    return ImageLayer.of(blob, "cimages: generated files (accounts, /etc, services)")


def default_output(name: str) -> Path:
    """Where a build goes without `-o`: build/NAME under the working directory."""
    return Path.cwd() / "build" / name.replace("/", "_")


def build(definition: Path | str, out_dir: Path | None = None, *,
          frozen: bool = False, archive: bool = True) -> BuildResult:
    """The image of `definition` in `out_dir`: an OCI layout, and a docker-archive unless
    `archive` is false (a push reads the layout only; the archive is a copy of every
    blob)."""
    started = time.monotonic()
    definition = Path(definition)
    evaluation = evaluate(definition)
    cfg = evaluation.config
    warnings = list(evaluation.warnings)
    image = cfg["image"]
    out_dir = Path(out_dir) if out_dir else default_output(image["name"])
    stats = _Stats()

    lock = lock_for_build(definition, requested(cfg), frozen=frozen)
    pulled = None
    if pull.is_registry(image["from"]):
        lock, pulled, said = pull.base_image(definition, image["from"], lock, frozen=frozen)
        warnings += said
    else:
        lock = pull.drop_stale(definition, lock, frozen)
    debs = download(lock.packages)
    names = [p.name for p in lock.packages]
    acc: Accounts = accounts(cfg, maintscripts.system_accounts(names))
    with staged_output(out_dir) as stage:
        result = _assemble(definition, cfg, lock, debs, acc, stage, frozen, stats, warnings,
                           pulled, archive)
    return replace(result, oci_dir=stage.final_path(result.oci_dir),
                   archive=stage.final_path(result.archive) if result.archive else None,
                   sbom=stage.final_path(result.sbom),
                   layers=[stage.final_path(p) for p in result.layers],
                   seconds=time.monotonic() - started)


def _base_image(ref: str, out_dir: Path, frozen: bool) -> BaseImage:
    """image.from: another definition is built first, into the output's `from/` folder,
    and read back like any OCI layout."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        path = build(path, out_dir / "from" / path.stem, frozen=frozen).oci_dir
    return load_base(path)


def _assemble(definition: Path, cfg: dict[str, Any], lock: Lock, debs: dict[str, Path],
              acc: Accounts, stage: Stage, frozen: bool, stats: _Stats,
              warnings: list[str], pulled: BaseImage | None = None,
              with_archive: bool = True) -> BuildResult:
    """Every layer, then the whole output written into the stage folder."""
    image = cfg["image"]
    mtime = _epoch(image["created"])
    ids = acc.id_map()
    out_dir = stage.path
    base = pulled or (_base_image(image["from"], out_dir, frozen) if image["from"] else None)
    fixed = (len(base.layers) if base else 1) + 1 + bool(image["run"])
    slots = image["maxLayers"] - fixed
    if slots < 1 and lock.packages:
        raise UserError(f"image.maxLayers is {image['maxLayers']} but the base and generated "
                        f"layers already take {fixed}; raise image.maxLayers")
    by_name = {p.name: p for p in lock.packages}
    chosen = explicit_groups(image["layers"], by_name)
    rest = set(by_name) - {n for g in chosen for n in g}
    if len(chosen) + bool(rest) > max(slots, 1):
        raise UserError(f"image.layers asks for {len(chosen)} layers, but image.maxLayers "
                        f"{image['maxLayers']} leaves {slots} for packages"
                        + (" (and the other packages need one)" if rest else "")
                        + "; raise image.maxLayers or merge groups")
    groups = [[by_name[n] for n in g] for g in chosen + group_packages(
        {p.name: p.depends for p in lock.packages}, max(slots - len(chosen), 1), rest)]
    explicit = len(chosen)

    built, written = package_layers(groups, debs, ids, mtime)
    stats.written += written
    stats.reused += len(groups) - written
    infos = {sha: info for layer in built for sha, info in layer.infos.items()}
    check_conflicts(lock.packages, infos)

    layers: list[ImageLayer] = list(base.layers) if base else [ImageLayer.of(
        _memory_layer("base", _base_entries(), mtime, stats),
        "cimages: merged-/usr symlinks and base directories")]
    own_digests = _add_package_layers(layers, groups, [layer.blob for layer in built], explicit)
    layers.append(_generated_layer(cfg, acc, lock.packages, infos, debs, mtime, stats))
    if image["run"]:
        blob, reused = run_layer(image["run"], layers, mtime)
        stats.reused, stats.written = stats.reused + reused, stats.written + (not reused)
        layers.append(ImageLayer.of(blob, "cimages: image.run: " + "; ".join(image["run"])))

    ref = f"{image['name']}:{image['tag']}"
    config = image_config(cfg, layers, base.config if base else None)
    layout = write_layout(out_dir / "oci", config, layers, image["tag"])
    tar = out_dir / f"{image['name'].replace('/', '_')}.tar"
    def write() -> None:
        write_docker_archive(tar, layout.config, layout.layers, ref, mtime)

    archive = tar if _docker_archive(stage, tar, layout.digest + ref,
                                     write if with_archive else None) else None
    sbom = out_dir / "sbom.spdx.json"
    _write_json(sbom, spdx(ref, layout.digest, image["created"], lock.packages))
    _write_json(out_dir / "maintainer-scripts.json", maintscripts.inventory(
        {p.name: infos[p.sha256].control for p in lock.packages},
        {p.name: infos[p.sha256].files for p in lock.packages}))
    _record_layers(definition, lock, own_digests, frozen, warnings)
    return BuildResult(
        name=image["name"], tag=image["tag"], digest=layout.digest, oci_dir=out_dir / "oci",
        archive=archive, layers=layout.layers, config=cfg, lock_path=lock_path(definition),
        sbom=sbom,
        size=sum(layer.size for layer in layers), seconds=0.0,
        reused_layers=stats.reused, written_layers=stats.written, warnings=warnings,
        package_layers=own_digests,
    )


def _docker_archive(stage: Stage, archive: Path, identity: str,
                    write: Callable[[], None] | None) -> bool:
    """The archive is a copy of every blob: the last build's is linked when the image is
    the same, else it is written; without `write`, only the link is made (no archive of
    another image stays behind). Whether there is an archive now."""
    marker = archive.with_name(f".{archive.name}.digest")
    if stage.previous is not None:
        old = stage.previous / archive.name
        old_marker = stage.previous / marker.name
        if old.is_file() and old_marker.is_file() and old_marker.read_text() == identity:
            os.link(old, archive)
            marker.write_text(identity)
            return True
    if write is None:
        return False
    write()
    marker.write_text(identity)
    return True

