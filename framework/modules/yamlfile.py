"""Reads a YAML module into located Nodes, keeping `!default` / `!force` as priorities."""

from __future__ import annotations

from pathlib import Path

import yaml

from framework.errors import UserError
from framework.modules.nodes import NORMAL, PRIORITY_TAGS, Loc, Node

# A definition is a page of options. Bounds keep a hostile one small: a few hundred bytes
# of nested aliases ("billion laughs") would otherwise expand into gigabytes.
MAX_BYTES = 1 << 20
MAX_NODES = 100_000


def _loc(file: str, node: yaml.Node) -> Loc:
    return Loc(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Converter:
    def __init__(self, file: str) -> None:
        self.file = file
        self.nodes = 0
        # A SafeLoader gives YAML 1.1's implicit scalar types (true, 12, 0.5, null) and its
        # constructors, so a scalar keeps the type it would have with yaml.safe_load.
        self.loader = yaml.SafeLoader("")

    def convert(self, node: yaml.Node, inherited: int = NORMAL) -> Node:
        loc = _loc(self.file, node)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise UserError(
                f"{loc}: the definition expands to over {MAX_NODES} values (YAML aliases "
                "repeat what they point to); write the values out or split the module")
        priority = inherited
        tag = node.tag
        if tag in PRIORITY_TAGS:
            priority = PRIORITY_TAGS[tag]
            tag = self._implicit_tag(node)
        elif tag.startswith("!") and not tag.startswith("!!"):
            raise UserError(
                f"{loc}: unknown tag {tag}; the tags a definition may carry are "
                f"{', '.join(PRIORITY_TAGS)}"
            )
        if isinstance(node, yaml.MappingNode):
            return Node(self._mapping(node, priority), loc, priority)
        if isinstance(node, yaml.SequenceNode):
            return Node([self.convert(item, priority) for item in node.value], loc, priority)
        node.tag = tag
        return Node(self.loader.construct_object(node, deep=True), loc, priority)

    def _implicit_tag(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.ScalarNode):
            return self.loader.resolve(yaml.ScalarNode, node.value, (True, False))
        return node.tag

    def _mapping(self, node: yaml.MappingNode, priority: int) -> dict[str, Node]:
        out: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key_loc = _loc(self.file, key_node)
            if not isinstance(key_node, yaml.ScalarNode):
                raise UserError(f"{key_loc}: option names must be plain strings")
            key = str(key_node.value)
            if key in out:
                raise UserError(
                    f"{key_loc}: `{key}` is defined twice in one mapping "
                    f"(first at line {out[key].loc.line}); keep one"
                )
            out[key] = self.convert(value_node, priority)
        return out


def load_module_file(path: Path) -> Node:
    """Parse one definition file. Errors name file:line:col."""
    display = str(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{display}: {path.stat().st_size} bytes, over the {MAX_BYTES} a "
                            "definition may have; split it into modules with `imports:`")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        bad = err.object[err.start]
        raise UserError(f"{display}: not UTF-8 text (byte {bad:#04x} at offset {err.start}); "
                        "save the file as UTF-8") from None
    except FileNotFoundError:
        raise UserError(f"{display}: no such file; check the path") from None
    except OSError as err:
        raise UserError(f"{display}: cannot read: {err.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{display}:{mark.line + 1}:{mark.column + 1}" if mark else display
        problem = err.problem or err.context or "malformed YAML"
        raise UserError(f"{where}: malformed YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{display}: malformed YAML: {err}") from None
    if root is None:
        return Node({}, Loc(display, 1, 1))
    node = _Converter(display).convert(root)
    if not isinstance(node.value, dict):
        raise UserError(
            f"{node.loc}: a module must be a mapping of options (e.g. `image: {{name: x}}`), "
            f"got {type(node.value).__name__}"
        )
    return node
