"""Option types: each checks its definitions and merges them into one value; options
(a type, a default, docs) and the merge of located definitions against a tree of them.

Merge rules (SPEC section 3): mappings recurse key by key, lists concatenate in definition
order, scalars must agree unless priorities (`!default` < plain < `!force`) decide.

The tree merge lives here, with the types, because the two recurse into each other: a
submodule's value is a tree merge, and a tree merge merges each option through its type.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framework.errors import UserError
from framework.modules.nodes import FORCE, Loc, Node, describe, to_node


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def best_priority(defs: list[Node]) -> list[Node]:
    top = min(d.priority for d in defs)
    return [d for d in defs if d.priority == top]


def type_error(path: str, node: Node, expected: str) -> UserError:
    return UserError(
        f"{node.loc}: option `{path}` expects {expected}, got {describe(node.value)}"
    )


class OptionType:
    description: str

    def merge(self, path: str, defs: list[Node]) -> Any:
        raise NotImplementedError

    def matches_shape(self, node: Node) -> bool:
        """Whether a definition looks like this type (used by `either`)."""
        return not isinstance(node.value, dict | list)


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Option:
    type: OptionType
    default: Any = REQUIRED
    description: str = ""
    example: Any = None


@dataclass
class Scalar(OptionType):
    description: str
    check: Callable[[Any], bool]
    convert: Callable[[Node], Any] = field(default=lambda node: node.value)

    def merge(self, path: str, defs: list[Node]) -> Any:
        chosen = best_priority(defs)
        values: list[tuple[Any, Node]] = []
        for node in chosen:
            if not self.check(node.value):
                raise type_error(path, node, self.description)
            value = self.convert(node)
            if all(value != seen for seen, _ in values):
                values.append((value, node))
        if len(values) > 1:
            (first, a), (second, b) = values[:2]
            if a.priority == FORCE:
                raise UserError(
                    f"option `{path}` is tagged !force twice with different values: "
                    f"{first!r} at {a.loc} and {second!r} at {b.loc}; keep one !force"
                )
            raise UserError(
                f"conflicting values for option `{path}`: {first!r} at {a.loc} and "
                f"{second!r} at {b.loc}; tag one of them !default (lower priority) or "
                f"!force (higher priority), or make them agree"
            )
        return values[0][0]

    def matches_shape(self, node: Node) -> bool:
        return not isinstance(node.value, dict | list) and self.check(node.value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def string(pattern: str | None = None, what: str = "a string") -> Scalar:
    if pattern is None:
        return Scalar(what, _is_str)
    regex = re.compile(pattern)
    return Scalar(what, lambda v: isinstance(v, str) and regex.fullmatch(v) is not None)


def integer(minimum: int | None = None, maximum: int | None = None) -> Scalar:
    bounds = ""
    if minimum is not None and maximum is not None:
        bounds = f" between {minimum} and {maximum}"
    elif minimum is not None:
        bounds = f" of at least {minimum}"

    def check(value: Any) -> bool:
        return (
            _is_int(value)
            and (minimum is None or value >= minimum)
            and (maximum is None or value <= maximum)
        )

    return Scalar(f"an integer{bounds}", check)


def enum(*choices: str) -> Scalar:
    return Scalar("one of " + ", ".join(repr(c) for c in choices), lambda v: v in choices)


def _resolve_path(node: Node) -> str:
    base = Path(node.loc.file).parent
    return str((base / node.value).resolve()) if not Path(node.value).is_absolute() else node.value


str_ = string()
int_ = integer()
bool_ = Scalar("a boolean (true or false)", lambda v: isinstance(v, bool))
# A host path; relative paths are resolved against the file that wrote them, as Nix does.
path = Scalar("a path", _is_str, _resolve_path)


def _module_file(node: Node) -> str:
    base = Path(node.loc.file).parent.resolve()
    target = (base / node.value).resolve()
    if not target.is_relative_to(base):
        raise UserError(f"{node.loc}: {node.value!r} leads to {target}, outside {base} (through "
                        "a symlink); copy the file itself next to the definition")
    return str(target)


# A file an image copies in: only what sits beside the definition, so a definition cannot
# take the host's /etc/shadow or ~/.ssh into an image (symlinks are followed and checked).
module_file = Scalar(
    "a path relative to the module, without `..` (e.g. ./motd); copy a host file next to the "
    "definition rather than naming it",
    lambda v: isinstance(v, str) and bool(v) and not Path(v).is_absolute()
    and ".." not in Path(v).parts, _module_file)
package = string(r"[a-z0-9][a-z0-9+.\-]+(:[a-z0-9]+)?", "a Debian package name (e.g. nginx)")
port = integer(1, 65535)
# C0 and C1 control characters and Unicode's line separators: what some readers of the
# files these values go into take for the end of a line.
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029"
absolute_path = string(rf"/[^{_CONTROL}]*",
                       "an absolute path inside the image, without control characters (e.g. /srv)")

# Names that become file names, shell words or /etc/passwd fields. Each rule says what it
# allows and gives a valid example, so a refused name tells its own fix.
service_name = string(
    r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}",
    "a service name: up to 64 letters, digits, `_ . @ -`, not starting with `.` or `-` "
    "(e.g. web-1)")
owner = string(r"[a-z_][a-z0-9_-]{0,31}|[0-9]{1,10}",
               "an account name (e.g. www-data) or a number (e.g. 33)")
account_name = string(
    r"[a-z_][a-z0-9_-]{0,31}",
    "an account name as useradd accepts it: up to 32 lowercase letters, digits, `_ -`, "
    "starting with a letter or `_` (e.g. alice)")
account_field = string(rf"[^:{_CONTROL}]*",
                       "text without `:` or control characters such as line breaks "
                       "(e.g. Alice Liddell)")
account_path = string(rf"/[^:{_CONTROL}]*",
                      "an absolute path without `:` or control characters (e.g. /home/alice)")
# One nginx/nix.conf directive's value: a line break or control character would end it and
# start another directive than the option says.
line = string(rf"[^{_CONTROL}]*", "one line of text, without control characters")
# A name that nginx.conf puts before a `{` (a server name, a location): no braces or `;`.
config_word = string(rf"[^{_CONTROL}{{}};]+",
                     "a name without `{`, `}`, `;` or control characters (e.g. /api or = /x)")
env_name = string(r"[A-Za-z_][A-Za-z0-9_]{0,127}",
                  "an environment variable name: letters, digits and `_`, not starting with a "
                  "digit (e.g. HTTP_PORT)")
# Relative to /etc and already normal: no `.`/`..`/empty components, so the path cannot
# leave /etc, and no control characters or backslashes.
etc_path = string(
    r"(?!\.\.?(/|$))[^/\x00-\x1f\x7f\\]+(/(?!\.\.?(/|$))[^/\x00-\x1f\x7f\\]+)*",
    "a path relative to /etc without `.`, `..` or empty components (e.g. nginx/nginx.conf)")


@dataclass
class NullOr(OptionType):
    inner: OptionType

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"null or {self.inner.description}"

    def merge(self, path: str, defs: list[Node]) -> Any:
        chosen = best_priority(defs)
        real = [d for d in chosen if d.value is not None]
        if not real:
            return None
        if len(real) != len(chosen):
            null = next(d for d in chosen if d.value is None)
            raise UserError(
                f"conflicting values for option `{path}`: null at {null.loc} and a value at "
                f"{real[0].loc}; tag one of them !default or !force"
            )
        return self.inner.merge(path, real)

    def matches_shape(self, node: Node) -> bool:
        return node.value is None or self.inner.matches_shape(node)


@dataclass
class ListOf(OptionType):
    elem: OptionType

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"list of {self.elem.description}"

    def merge(self, path: str, defs: list[Node]) -> list[Any]:
        out: list[Any] = []
        for node in best_priority(defs):
            if not isinstance(node.value, list):
                raise type_error(path, node, f"a list ({self.description})")
            out.extend(
                self.elem.merge(f"{path}[{i}]", [item]) for i, item in enumerate(node.value)
            )
        return out

    def matches_shape(self, node: Node) -> bool:
        return isinstance(node.value, list)


def _mapping_defs(path: str, defs: list[Node], expected: str) -> list[Node]:
    for node in defs:
        if not isinstance(node.value, dict):
            raise type_error(path, node, expected)
    return defs


@dataclass
class AttrsOf(OptionType):
    elem: OptionType
    key: Scalar | None = None  # the rule every attribute name follows, when it has one

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"attribute set of {self.elem.description}"

    def merge(self, path: str, defs: list[Node]) -> dict[str, Any]:
        _mapping_defs(path, defs, f"a mapping ({self.description})")
        keys: dict[str, list[Node]] = {}
        for node in defs:
            for key, child in node.value.items():
                if self.key is not None and not self.key.check(key):
                    raise UserError(f"{child.loc}: the name {key!r} under `{path}` is not "
                                    f"{self.key.description}")
                keys.setdefault(key, []).append(child)
        return {key: self.elem.merge(join(path, key), children) for key, children in keys.items()}

    def matches_shape(self, node: Node) -> bool:
        return isinstance(node.value, dict)


@dataclass
class Either(OptionType):
    """The first alternative whose shape every definition has."""

    alternatives: tuple[OptionType, ...]

    @property
    def description(self) -> str:  # type: ignore[override]
        return " or ".join(t.description for t in self.alternatives)

    def merge(self, path: str, defs: list[Node]) -> Any:
        chosen = best_priority(defs)
        for alternative in self.alternatives:
            if all(alternative.matches_shape(d) for d in chosen):
                return alternative.merge(path, chosen)
        odd = next(d for d in chosen if not any(a.matches_shape(d) for a in self.alternatives))
        raise type_error(path, odd, self.description)

    def matches_shape(self, node: Node) -> bool:
        return any(a.matches_shape(node) for a in self.alternatives)


def either(*alternatives: OptionType) -> Either:
    return Either(alternatives)


@dataclass
class Submodule(OptionType):
    """A fixed set of named options. With `freeform`, unknown keys are kept as plain data
    (the systemd module warns about them instead of dropping them)."""

    options: Mapping[str, Any]
    freeform: bool = False
    description: str = "submodule"

    def merge(self, path: str, defs: list[Node]) -> dict[str, Any]:
        _mapping_defs(path, defs, "a mapping of options")
        return merge_tree(self.options, defs, path, freeform=self.freeform)

    def matches_shape(self, node: Node) -> bool:
        return isinstance(node.value, dict)


def list_of(elem: OptionType) -> ListOf:
    return ListOf(elem)


def attrs_of(elem: OptionType, key: Scalar | None = None) -> AttrsOf:
    return AttrsOf(elem, key)


def null_or(inner: OptionType) -> NullOr:
    return NullOr(inner)


def submodule(options: Mapping[str, Any], freeform: bool = False) -> Submodule:
    return Submodule(options, freeform)


class Anything(OptionType):
    """Free data: mappings recurse, lists concatenate, scalars must agree (the laws above)."""

    description = "any YAML value"

    def merge(self, path: str, defs: list[Node]) -> Any:
        chosen = best_priority(defs)
        if all(isinstance(d.value, dict) for d in chosen):
            return AttrsOf(self).merge(path, chosen)
        if all(isinstance(d.value, list) for d in chosen):
            return ListOf(self).merge(path, chosen)
        return Scalar("a plain value", lambda v: not isinstance(v, dict | list)).merge(
            path, chosen
        )

    def matches_shape(self, node: Node) -> bool:
        return True


anything = Anything()


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
