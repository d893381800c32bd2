"""Declaring options (typed, documented) and the modules that own them. `Option` and
`REQUIRED` live with the types, whose tree merge reads them; they are exported here too."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.modules.types import REQUIRED, Option, OptionType

__all__ = ["REQUIRED", "Config", "Module", "Option", "OptionTree", "option"]


def option(
    type: OptionType, default: Any = REQUIRED, description: str = "", example: Any = None
) -> Option:
    return Option(type, default, description, example)


Config = dict[str, Any]
# An options tree: nested mappings whose leaves are Options.
OptionTree = Mapping[str, Any]


@dataclass(frozen=True)
class Module:
    """A Python option module: the options it declares and, NixOS-style, the config it
    derives from the merged configuration (the only place values may refer to other options).
    """

    name: str
    source: str
    options: OptionTree
    config: Callable[[Config], Mapping[str, Any]] | None = None
    assertions: Callable[[Config], list[str]] = field(default=lambda cfg: [])
    warnings: Callable[[Config], list[str]] = field(default=lambda cfg: [])

    @property
    def location(self) -> str:
        source = Path(self.source)
        return f"{source.parent.name}/{source.name} ({self.name} module)"
