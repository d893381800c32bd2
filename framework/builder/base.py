"""`image.from`: a base image's layers and config, from an OCI layout, a docker-archive or
another definition (built first)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.builder.layercache import blob_dir
from framework.builder.oci import LAYER_GZIP, LAYER_TAR, ImageLayer
from framework.errors import UserError


@dataclass
class BaseImage:
    layers: list[ImageLayer]
    config: dict[str, Any]


def _history(config: dict[str, Any], count: int, ref: str) -> list[str]:
    lines = [h.get("created_by", "") for h in config.get("history", [])
             if not h.get("empty_layer")]
    return lines if len(lines) == count else [f"from {ref}"] * count


def _from_layout(path: Path) -> BaseImage:
    blobs = path / "blobs" / "sha256"
    index = json.loads((path / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
    diff_ids = config["rootfs"]["diff_ids"]
    history = _history(config, len(diff_ids), str(path))
    layers = [ImageLayer(d["digest"], diff_ids[i], d["size"], blobs / d["digest"].split(":")[1],
                         d["mediaType"], history[i]) for i, d in enumerate(manifest["layers"])]
    return BaseImage(layers, config)


def _from_archive(path: Path) -> BaseImage:
    """Copies each layer of a docker-archive into the blob cache, as it is stored."""
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        diff_ids = config["rootfs"]["diff_ids"]
        history = _history(config, len(diff_ids), str(path))
        layers = []
        for i, name in enumerate(manifest["Layers"]):
            data = tar.extractfile(name).read()  # type: ignore[union-attr]
            digest = hashlib.sha256(data).hexdigest()
            target = blob_dir() / digest
            if not target.is_file():
                tmp = target.with_name(f".{digest}.{os.getpid()}")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            kind = LAYER_GZIP if data[:2] == b"\x1f\x8b" else LAYER_TAR
            layers.append(ImageLayer(f"sha256:{digest}", diff_ids[i], len(data), target, kind,
                                     history[i]))
    return BaseImage(layers, config)


def load_base(ref: str, out_dir: Path, *, frozen: bool) -> BaseImage:
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        from framework.builder.pipeline import build

        return _from_layout(build(path, out_dir / "from" / path.stem, frozen=frozen).oci_dir)
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
