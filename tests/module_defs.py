"""Evaluating a definition written inline in a test (shared by tests/test_modules_*.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from framework.modules import Evaluation
from framework.options import evaluate


def evaluate_yaml(tmp_path: Path, text: str, name: str = "image.yaml") -> Evaluation:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return evaluate(path)
