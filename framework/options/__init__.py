"""Every option module, in the order their options are documented, and the evaluation of a
definition with them (the module system itself knows no option module)."""

from pathlib import Path

from framework.modules import Evaluation, Module
from framework.modules import evaluate as evaluate_with
from framework.options import debian, environment, image, nginx, nix, s6, systemd, users

ALL_MODULES: list[Module] = [
    m.MODULE for m in (image, debian, environment, users, s6, systemd, nginx, nix)
]


def evaluate(file: Path | str) -> Evaluation:
    """An image definition evaluated with every option module of cimages."""
    return evaluate_with(file, ALL_MODULES)
