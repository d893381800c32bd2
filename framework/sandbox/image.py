"""Starting a built image in the sandbox, as `docker run` would: its entry point and
command, its environment (Docker's default PATH first), its working directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from framework.errors import UserError
from framework.sandbox.rootfs import unpacked_root
from framework.sandbox.runner import UID_BASE, Sandbox

if TYPE_CHECKING:  # at run time the builder imports the sandbox (image.run)
    from framework.builder import BuildResult

# What Docker puts in a container's environment when the image does not set PATH.
DOCKER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def id_shift() -> int:
    """How far image ids are moved on the host: as root the sandbox maps image uid 0 to the
    unprivileged UID_BASE; anyone else maps only their own uid, to 0."""
    return UID_BASE if os.geteuid() == 0 else 0


def image_root(result: BuildResult) -> Path:
    """The unpacked root of a BuildResult, owned as the sandbox's namespace expects."""
    return unpacked_root(result.layers, result.digest, uid_shift=id_shift())


def start_image(result: BuildResult, *, env: Mapping[str, str] | None = None,
                network: str = "private", capture: bool = True,
                workdir: Path | None = None) -> Sandbox:
    """Run a BuildResult's entry point in a fresh sandbox."""
    image = result.config["image"]
    argv = [*(image["entryPoint"] or []), *(image["cmd"] or [])]
    if not argv:
        raise UserError(f"image {image['name']} has no entry point or command to run; set "
                        "`image.entryPoint` or define an s6 service")
    environment = {"PATH": DOCKER_PATH, "HOSTNAME": "sandbox", "HOME": "/root",
                   **image["env"], **(env or {})}
    return Sandbox.start([image_root(result)], argv, env=environment, network=network,
                         cwd=image["workingDir"] or "/", capture=capture, workdir=workdir)
