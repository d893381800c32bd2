"""The CI matrix. Per tier: one cell per image in images/ that the tier's tests name with
`@pytest.mark.image(...)`, plus one cell `<tier>-untagged` of the tests that name no image, so
the cells of a tier together run every test of the tier (a test naming two images runs in
both of their cells)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from framework.ci import TIERS
from framework.errors import UserError, shorten

SOURCE = Path(__file__).resolve().parents[2]
UNTAGGED = "untagged"


def cell_name(image: str, tier: str) -> str:
    """`nginx-vm`, or `vm-untagged` for the tier's tests that name no image (the names cannot
    collide: no tier is called `untagged`)."""
    return f"{image}-{tier}" if image else f"{tier}-{UNTAGGED}"


@dataclass(frozen=True)
class Cell:
    image: str  # "" for the cell of the tier's tests that name no image
    tier: str
    tests: tuple[str, ...]

    @property
    def name(self) -> str:
        return cell_name(self.image, self.tier)

    def as_hydra(self) -> dict[str, str]:
        """What hydra/cells.json records of a cell: no test count, so adding a test to an
        existing cell does not make the committed file stale."""
        return {"name": self.name, "image": self.image, "tier": self.tier}

    def as_json(self) -> dict[str, object]:
        return {**self.as_hydra(), "tests": len(self.tests)}


class CollectedTest(TypedDict):
    nodeid: str
    images: list[str]


@dataclass(frozen=True)
class Collected:
    """A tier's tests, and the project's images (its `cimages_images` folder)."""

    folder: str  # relative to the project's root
    images: list[str]
    tests: list[CollectedTest]


def collect(root: Path, tier: str) -> Collected:
    """The tier's tests as pytest collects them (no fixture runs, so no VM boots)."""
    if not (root / TIERS[tier]).is_dir():
        return Collected("images", [], [])
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "framework.ci.collect",
             "-p", "no:cacheprovider", TIERS[tier]],
            cwd=root, capture_output=True, text=True, timeout=300,
            # The plugin must import from this checkout whatever project is collected.
            env={**os.environ, "CIMAGES_COLLECT_OUT": out.name,
                 "PYTHONPATH": os.pathsep.join(filter(None, [str(SOURCE),
                                                             os.environ.get("PYTHONPATH")]))},
        )
        if result.returncode not in (0, 5):
            raise UserError(
                f"collecting {TIERS[tier]} failed (pytest exit {result.returncode}); run "
                f"`pytest --collect-only {TIERS[tier]}` to see why:\n{shorten(result.stdout)}"
            )
        text = Path(out.name).read_text()
        if not text:  # nothing collected: pytest never finished collecting
            return Collected("images", [], [])
        found = json.loads(text)
        return Collected(os.path.relpath(found["folder"], root), found["images"], found["tests"])


def tier_cells(tier: str, collected: Collected) -> list[Cell]:
    """The cells of one tier: an image's cell holds the tests naming it, the untagged cell
    the tests naming none. A test naming an image that has no definition would fall between
    them, so it is an error instead."""
    tests, images = collected.tests, collected.images
    for test in tests:
        unknown = sorted(set(test["images"]) - set(images))
        if unknown:
            raise UserError(
                f"{test['nodeid']} names image `{unknown[0]}` in @pytest.mark.image(...), but "
                f"there is no {collected.folder}/{unknown[0]}.yaml; the images are: "
                f"{', '.join(images)}"
            )
    cells = []
    for image in images:
        named = tuple(t["nodeid"] for t in tests if image in t["images"])
        if named:
            cells.append(Cell(image, tier, named))
    untagged = tuple(t["nodeid"] for t in tests if not t["images"])
    if untagged:
        cells.append(Cell("", tier, untagged))
    return cells


def matrix(root: Path, tiers: tuple[str, ...] = tuple(TIERS)) -> list[Cell]:
    # One pytest process per tier, side by side: collecting is most of `cimages matrix`.
    with ThreadPoolExecutor(len(tiers) or 1) as pool:
        collected = list(pool.map(lambda tier: collect(root, tier), tiers))
    return [cell for tier, found in zip(tiers, collected, strict=True)
            for cell in tier_cells(tier, found)]


def find_cell(root: Path, name: str) -> Cell:
    """The cell `cimages matrix` lists as `name` (e.g. `nginx-vm`, `vm-untagged`); only the
    tier the name ends in is collected."""
    for tier in TIERS:
        image = "" if name == cell_name("", tier) else name.removesuffix(f"-{tier}")
        if image == name:
            continue
        collected = collect(root, tier)
        for cell in tier_cells(tier, collected):
            if cell.name == name:
                return cell
        if not image:
            raise UserError(f"every {tier} test names an image: there is no cell `{name}`")
        if image in collected.images:
            raise UserError(
                f"no {tier} test names image `{image}`; mark one with "
                f"`@pytest.mark.image(\"{image}\")` in {TIERS[tier]}/"
            )
    raise UserError(
        f"no matrix cell `{name}`; the cells are: "
        f"{', '.join(c.name for c in matrix(root))} (`cimages matrix` lists them)"
    )


def find_image_cell(root: Path, image: str, tier: str) -> Cell:
    """The cell of `image` x `tier` (image "" for the tier's tests that name no image)."""
    if tier not in TIERS:
        raise UserError(f"unknown tier `{tier}`; the tiers are: {', '.join(TIERS)}")
    if image:
        collected = collect(root, tier)
        if image not in collected.images:
            raise UserError(
                f"no image definition {collected.folder}/{image}.yaml; the images are: "
                f"{', '.join(collected.images)}"
            )
    return find_cell(root, cell_name(image, tier))
