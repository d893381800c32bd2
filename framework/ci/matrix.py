"""One cell per image x tier: the images in images/ and the tests that name them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from framework.ci import TIERS
from framework.errors import UserError

SOURCE = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cell:
    image: str
    tier: str
    tests: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {"image": self.image, "tier": self.tier, "tests": len(self.tests)}


def image_names(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "images").glob("*.yaml"))


def collect(root: Path, tier: str) -> list[dict[str, object]]:
    """The tier's tests as pytest collects them (no fixture runs, so no VM boots)."""
    folder = root / TIERS[tier]
    if not folder.is_dir():
        return []
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
                f"`pytest --collect-only {TIERS[tier]}` to see why:\n{result.stdout[-2000:]}"
            )
        text = Path(out.name).read_text()
        return json.loads(text) if text else []


def matrix(root: Path) -> list[Cell]:
    images = image_names(root)
    cells = []
    for tier in TIERS:
        tests = collect(root, tier)
        for image in images:
            named = tuple(str(t["nodeid"]) for t in tests if image in t["images"])  # type: ignore[operator]
            if named:
                cells.append(Cell(image, tier, named))
    return cells


def find_cell(root: Path, image: str, tier: str) -> Cell:
    if tier not in TIERS:
        raise UserError(f"unknown tier `{tier}`; the tiers are: {', '.join(TIERS)}")
    if image not in image_names(root):
        raise UserError(
            f"no image definition images/{image}.yaml; the images are: "
            f"{', '.join(image_names(root))}"
        )
    for cell in matrix(root):
        if (cell.image, cell.tier) == (image, tier):
            return cell
    raise UserError(
        f"no {tier} test names image `{image}`; mark one with "
        f"`@pytest.mark.image(\"{image}\")` in {TIERS[tier]}/"
    )
