"""The predefined images without services, run as `docker run` would run them."""

from __future__ import annotations

import os

import pytest

from framework.builder import build
from framework.errors import UserError
from framework.sandbox.image import image_root, start_image


@pytest.mark.image("hello")
def test_hello_prints_hello_world_and_exits_0(sandbox):
    box = sandbox("../images/hello.yaml")
    assert box.wait() == 0
    assert box.logs() == "Hello, world!\n"


@pytest.mark.image("empty")
def test_empty_holds_only_the_base_layout_and_cannot_be_run(tmp_path):
    result = build("images/empty.yaml", tmp_path / "out")
    root = image_root(result)
    links = {p.name: os.readlink(p) for p in root.iterdir() if p.is_symlink()}
    assert links == {name: f"usr/{name}" for name in
                     ("bin", "sbin", "lib", "lib32", "lib64", "libx32")}
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if p.is_file() and not p.is_symlink())
    assert files == ["etc/group", "etc/gshadow", "etc/passwd", "etc/shadow"]
    with pytest.raises(UserError, match="has no entry point or command to run"):
        start_image(result)
