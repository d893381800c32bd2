"""A docker-archive with all its layers merged into one, for loading into the VM's dockerd.

dockerd 20.10 unpacks every layer of `docker load` in a freshly re-executed dockerd process;
under TCG that costs over a second per layer, and the builder writes one layer per package
(nginx: 54). One merged layer holds the same files, config and tags, so what a container
sees is unchanged; only the layer split (and so the image ID) differs. Cached per archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from framework.builder.oci import archive_manifest
from framework.cache import hold
from framework.vm.cache import cache_dir

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def _norm(name: str) -> str:
    return str(PurePosixPath("/", name))[1:]


def _winners(archive: tarfile.TarFile, layers: list[str]) -> dict[str, tuple[int, str]]:
    """path -> (layer index, member name) of the entry a merged unpack would keep."""
    kept: dict[str, tuple[int, str]] = {}
    for index, layer in enumerate(layers):
        with _open_layer(archive, layer) as tar:
            for member in tar:
                path = _norm(member.name)
                parent, base = PurePosixPath(path).parent, PurePosixPath(path).name
                if base == OPAQUE or base.startswith(WHITEOUT):
                    gone = str(parent) if base == OPAQUE else str(parent / base[len(WHITEOUT):])
                    prefix = "" if gone == "." else gone + "/"
                    for old in [p for p in kept if p.startswith(prefix)
                                or (base != OPAQUE and p == gone)]:
                        del kept[old]
                    continue
                kept[path] = (index, member.name)
    return kept


def _open_layer(archive: tarfile.TarFile, name: str) -> tarfile.TarFile:
    blob = archive.extractfile(name)
    assert blob is not None
    return tarfile.open(fileobj=blob, mode="r:*")


def _merged_layer(archive: tarfile.TarFile, layers: list[str], out: Path) -> str:
    """Writes the merged layer to `out`; returns its sha256 (the diff ID)."""
    kept = _winners(archive, layers)
    wanted = {(index, name) for index, name in kept.values()}
    with out.open("wb") as raw, \
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as merged:
        for index, layer in enumerate(layers):
            with _open_layer(archive, layer) as tar:
                for member in tar:
                    if (index, member.name) in wanted:
                        data = tar.extractfile(member) if member.isfile() else None
                        merged.addfile(member, data)
    digest = hashlib.sha256()
    with out.open("rb") as done:
        while chunk := done.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def flattened(archive_path: Path, key: str) -> Path:
    """The single-layer docker-archive of `archive_path` (`key`: its image digest)."""
    out = cache_dir("flat") / f"{key.removeprefix('sha256:')[:32]}.tar"
    hold(out)  # in use until this process ends: `cimages cache --gc` leaves it
    if out.exists():
        return out
    with tarfile.open(archive_path) as archive, \
            tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        manifest, config = archive_manifest(archive, str(archive_path))
        layers = list(manifest["Layers"])
        if len(layers) <= 1:
            return archive_path
        layer = Path(tmp) / "layer.tar"
        diff_id = _merged_layer(archive, layers, layer)
        config["rootfs"] = {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}
        config["history"] = [{"created": config.get("created", ""),
                              "comment": f"cimages VM tier: {len(layers)} layers merged"}]
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
        new_manifest = [{"Config": config_name, "RepoTags": manifest.get("RepoTags") or [],
                         "Layers": [f"{diff_id}/layer.tar"]}]
        staged = Path(tmp) / "flat.tar"
        with tarfile.open(staged, "w") as flat:
            _add(flat, config_name, config_bytes)
            flat.add(layer, f"{diff_id}/layer.tar")
            _add(flat, "manifest.json", json.dumps(new_manifest).encode())
        staged.replace(out)
    return out
