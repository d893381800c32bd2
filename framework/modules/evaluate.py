"""Evaluating an image definition: imports, merge, module config to a fixpoint, checks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.errors import UserError
from framework.modules.nodes import Loc, Node, to_node
from framework.modules.option import Config, Module
from framework.modules.types import Missing, Option, merge_tree
from framework.modules.yamlfile import load_module_file

# Enough for chains like nginx -> systemd -> s6 -> packages; more means modules disagree.
MAX_ROUNDS = 10


@dataclass
class Evaluation:
    config: Config
    files: list[Path]
    warnings: list[str] = field(default_factory=list)

    def get(self, dotted: str) -> Any:
        value: Any = self.config
        walked: list[str] = []
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                where = ".".join(walked) or "the configuration"
                known = ", ".join(sorted(value)) if isinstance(value, dict) else "none"
                raise UserError(
                    f"no option `{dotted}`: {where} has no `{part}` (it has: {known})"
                )
            value = value[part]
            walked.append(part)
        return value


def display_path(path: Path) -> str:
    """Paths in messages: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def collect_modules(root: Path) -> list[tuple[Path, Node]]:
    """Every module file reachable through `imports:`, imports before their importer, each
    file once (at its first position)."""
    ordered: list[tuple[Path, Node]] = []
    seen: set[Path] = set()

    def visit(path: Path, chain: list[Path], import_loc: Loc | None) -> None:
        path = path.resolve()
        if path in chain:
            cycle = " -> ".join(display_path(p) for p in [*chain[chain.index(path) :], path])
            raise UserError(f"import cycle: {cycle}; remove one of these imports")
        if path in seen:
            return
        if not path.is_file():
            if import_loc is None:
                raise UserError(f"{display_path(path)}: no such file; check the path")
            raise UserError(
                f"{import_loc}: imported file {display_path(path)} does not exist; "
                "fix the path (imports are relative to the importing file)"
            )
        node = load_module_file(Path(display_path(path)))
        imports = node.value.get("imports")
        body = {k: v for k, v in node.value.items() if k != "imports"}
        if imports is not None:
            if not isinstance(imports.value, list) or not all(
                isinstance(i.value, str) for i in imports.value
            ):
                raise UserError(f"{imports.loc}: `imports` must be a list of file paths")
            for item in imports.value:
                visit(path.parent / item.value, [*chain, path], item.loc)
        seen.add(path)
        ordered.append((path, Node(body, node.loc, node.priority)))

    visit(root, [], None)
    return ordered


def find_missing(value: Any) -> list[str]:
    if isinstance(value, Missing):
        return [value.path]
    if isinstance(value, dict):
        return [p for v in value.values() for p in find_missing(v)]
    if isinstance(value, list):
        return [p for v in value for p in find_missing(v)]
    return []


def option_tree(modules: Iterable[Module]) -> dict[str, Any]:
    tree: dict[str, Any] = {}

    def graft(into: dict[str, Any], part: Any, prefix: str) -> None:
        for key, value in part.items():
            if isinstance(value, Option) or key not in into:
                if key in into:
                    raise RuntimeError(f"option {prefix}{key} is declared twice")
                into[key] = value if isinstance(value, Option) else {}
                if isinstance(value, Option):
                    continue
            graft(into[key], value, f"{prefix}{key}.")

    for module in modules:
        graft(tree, module.options, "")
    return tree


def evaluate(file: Path | str, modules: Sequence[Module]) -> Evaluation:
    """The definition `file` evaluated with the option modules `modules`: the caller says
    which (`framework.options.evaluate` passes every module of cimages)."""
    tree = option_tree(modules)
    user = collect_modules(Path(file))
    user_defs = [node for _, node in user]

    contributions: list[Node] = []
    for _ in range(MAX_ROUNDS):
        config = merge_tree(tree, [*user_defs, *contributions])
        derived = [
            to_node(dict(module.config(config)), Loc(module.location))
            for module in modules
            if module.config is not None
        ]
        if [d.plain() for d in derived] == [c.plain() for c in contributions]:
            break
        contributions = derived
    else:
        raise RuntimeError(f"module configuration did not settle in {MAX_ROUNDS} rounds")

    missing = find_missing(config)
    if missing:
        names = ", ".join(f"`{m}`" for m in missing)
        raise UserError(
            f"{display_path(user[-1][0])}: required option {names} is not set; add it to the "
            "definition, e.g. `image: {name: myimage}`"
        )
    failed = [message for module in modules for message in module.assertions(config)]
    if failed:
        raise UserError("\n".join(failed))
    warnings = [message for module in modules for message in module.warnings(config)]
    return Evaluation(config, [p for p, _ in user], warnings)
