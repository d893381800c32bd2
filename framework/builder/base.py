"""`image.from`: a base image's layers and config, from an OCI layout or a docker-archive
(a definition is built by the pipeline first, which gives its layout here)."""

from __future__ import annotations

import gzip
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.builder import blobs
from framework.builder.layercache import blob_dir
from framework.builder.oci import (
    LAYER_GZIP,
    LAYER_TAR,
    ImageLayer,
    archive_manifest,
    archive_member,
)
from framework.digests import is_digest, verified_blob
from framework.errors import UserError


@dataclass
class BaseImage:
    layers: list[ImageLayer]
    config: dict[str, Any]


def history_lines(config: dict[str, Any], count: int, ref: str) -> list[str]:
    lines = [h.get("created_by", "") for h in config.get("history", [])
             if not h.get("empty_layer")]
    return lines if len(lines) == count else [f"from {ref}"] * count


def _from_layout(path: Path) -> BaseImage:
    """Every blob is checked against its digest before it is read or reused: the layout is
    input like any other, and a digest is only a path once it is a digest."""
    blobs = path / "blobs" / "sha256"
    where = f"image.from {path}"
    try:
        index = json.loads((path / "index.json").read_text())
        manifest = json.loads(verified_blob(blobs, index["manifests"][0]["digest"],
                                            where).read_text())
        config = json.loads(verified_blob(blobs, manifest["config"]["digest"],
                                          where).read_text())
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["layers"]) or not all(map(is_digest, diff_ids)):
            raise UserError(f"{where}: the config's rootfs.diff_ids do not match the "
                            "manifest's layers; the layout is corrupt: build it again")
        history = history_lines(config, len(diff_ids), str(path))
        layers = [ImageLayer(d["digest"], diff_ids[i], int(d["size"]),
                             verified_blob(blobs, d["digest"], where), d["mediaType"],
                             history[i]) for i, d in enumerate(manifest["layers"])]
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise UserError(f"{where}: not a valid OCI image layout ({type(err).__name__}: {err}); "
                        "give a layout written by cimages, skopeo or buildah") from err
    return BaseImage(layers, config)


def _from_archive(path: Path) -> BaseImage:
    """Copies each layer of a docker-archive into the blob cache, as it is stored."""
    where = f"image.from {path}"
    with tarfile.open(path) as tar:
        manifest, config = archive_manifest(tar, where)
        diff_ids = config["rootfs"]["diff_ids"]
        history = history_lines(config, len(diff_ids), str(path))
        layers = []
        for i, name in enumerate(manifest["Layers"]):
            data = archive_member(tar, name, where)
            blob = blobs.put(blob_dir(), data)
            kind = LAYER_GZIP if data[:2] == b"\x1f\x8b" else LAYER_TAR
            layers.append(ImageLayer(blob.digest, diff_ids[i], blob.size, blob.path, kind,
                                     history[i]))
    return BaseImage(layers, config)


def load_base(path: Path) -> BaseImage:
    """The layers and config of the OCI layout or docker-archive at `path`."""
    if path.is_dir() and (path / "index.json").is_file():
        return _from_layout(path)
    if path.is_file():
        try:
            return _from_archive(path)
        except (tarfile.TarError, KeyError, gzip.BadGzipFile) as err:
            raise UserError(f"image.from: {path} is not a docker-archive ({err}); give an OCI "
                            "layout directory, a docker-archive tar or a definition") from err
    raise UserError(f"image.from: {path} does not exist; give an OCI layout directory, a "
                    "docker-archive tar or a definition (.yaml), relative to the module")
