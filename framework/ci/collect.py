"""A pytest plugin (`-p framework.ci.collect`) that writes each collected test and the images
it names with `@pytest.mark.image(...)` as JSON to $CIMAGES_COLLECT_OUT."""

from __future__ import annotations

import json
import os

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    tests = [
        {
            "nodeid": item.nodeid,
            "images": sorted({name for mark in item.iter_markers("image") for name in mark.args}),
        }
        for item in session.items
    ]
    with open(os.environ["CIMAGES_COLLECT_OUT"], "w") as out:
        json.dump(tests, out)
