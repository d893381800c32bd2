"""Definitions as the merge sees them: a value, where it was written, and its priority."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Lower wins, as in NixOS: mkForce = 50, a plain definition = 100, mkDefault = 1000.
FORCE = 50
NORMAL = 100
DEFAULT = 1000

PRIORITY_TAGS = {"!force": FORCE, "!default": DEFAULT}


@dataclass(frozen=True)
class Loc:
    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file


@dataclass(frozen=True)
class Node:
    """One definition. `value` is a scalar, a list of Nodes, or a dict of str -> Node."""

    value: Any
    loc: Loc
    priority: int = NORMAL

    def plain(self) -> Any:
        """The value with every location stripped."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


@dataclass(frozen=True)
class Prioritised:
    """A Python module's way to write `!default` or `!force` in its config."""

    value: Any
    priority: int


def mk_default(value: Any) -> Prioritised:
    return Prioritised(value, DEFAULT)


def mk_force(value: Any) -> Prioritised:
    return Prioritised(value, FORCE)


def to_node(value: Any, loc: Loc, priority: int = NORMAL) -> Node:
    """Wrap a Python value (a module's contribution) as definitions located at `loc`."""
    if isinstance(value, Prioritised):
        return to_node(value.value, loc, value.priority)
    if isinstance(value, Node):
        return value
    if isinstance(value, dict):
        return Node({str(k): to_node(v, loc, priority) for k, v in value.items()}, loc, priority)
    if isinstance(value, list | tuple):
        return Node([to_node(v, loc, priority) for v in value], loc, priority)
    return Node(value, loc, priority)


def describe(value: Any) -> str:
    """A value as an error message shows it: its YAML kind and a short rendering."""
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        type(None): "null",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
    if isinstance(value, list | dict):
        return kind
    text = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(
        value, bool
    ) else str(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return kind if value is None else f"{kind} {text}"
