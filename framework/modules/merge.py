"""Merging located definitions against an options tree."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from framework.errors import UserError
from framework.modules.nodes import Loc, Node, to_node
from framework.modules.option import REQUIRED, Option
from framework.modules.types import anything, join, type_error


class Missing:
    """Placeholder for a required option nobody defined; evaluation reports it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"<missing {self.path}>"


def unknown_option(path: str, node: Node, known: list[str]) -> UserError:
    leaf = path.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    if close:
        hint = f"did you mean `{join(parent, close[0])}`?"
    else:
        hint = f"the options here are: {', '.join(sorted(known))}" if known else ""
    return UserError(f"{node.loc}: unknown option `{path}`; {hint}".rstrip("; "))


def merge_tree(
    decls: Mapping[str, Any], defs: list[Node], path: str = "", freeform: bool = False
) -> dict[str, Any]:
    children: dict[str, list[Node]] = {}
    for node in defs:
        for key, child in node.value.items():
            if key not in decls and not freeform:
                raise unknown_option(join(path, key), child, list(decls))
            children.setdefault(key, []).append(child)

    out: dict[str, Any] = {}
    for key, decl in decls.items():
        sub = join(path, key)
        found = children.get(key, [])
        if isinstance(decl, Option):
            if found:
                out[key] = decl.type.merge(sub, found)
            elif decl.default is REQUIRED:
                out[key] = Missing(sub)
            else:
                # Through the type, so a submodule default gets its sub-options' defaults.
                out[key] = decl.type.merge(sub, [to_node(decl.default, Loc(f"default of {sub}"))])
        else:
            for node in found:
                if not isinstance(node.value, dict):
                    raise type_error(sub, node, "a mapping of options")
            out[key] = merge_tree(decl, found, sub)
    for key, found in children.items():
        if key not in decls:
            out[key] = anything.merge(join(path, key), found)
    return out


def find_missing(value: Any) -> list[str]:
    if isinstance(value, Missing):
        return [value.path]
    if isinstance(value, dict):
        return [p for v in value.values() for p in find_missing(v)]
    if isinstance(value, list):
        return [p for v in value for p in find_missing(v)]
    return []
