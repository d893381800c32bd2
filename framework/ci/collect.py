"""A pytest plugin (`-p framework.ci.collect`) that writes each collected test and the images
it names with `@pytest.mark.image(...)` as JSON to $CIMAGES_COLLECT_OUT, with the project's
image definitions (the `cimages_images` folder, as the fixtures find them)."""

from __future__ import annotations

import json
import os

import pytest

from framework.pytest_plugin.images import images_folder


def pytest_collection_finish(session: pytest.Session) -> None:
    tests = [
        {
            "nodeid": item.nodeid,
            "images": sorted({name for mark in item.iter_markers("image") for name in mark.args}),
        }
        for item in session.items
    ]
    folder = images_folder(session.config)
    images = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    with open(os.environ["CIMAGES_COLLECT_OUT"], "w") as out:
        json.dump({"folder": str(folder), "images": images, "tests": tests}, out)
