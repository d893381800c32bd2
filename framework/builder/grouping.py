"""Which packages share a layer when there are more packages than layers.

The rule is dockerTools' (nixpkgs `buildLayeredImage`): a package's popularity is how many
packages of the image depend on it, directly or not, plus itself. The most popular packages
(libc6 first) are the ones most likely to be shared with other images, so they get their
own layers; when only `slots` layers are available, the `slots - 1` most popular get one
each and all the others share the last layer. Ties break by name, so the grouping is stable.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from framework.errors import UserError


def popularity(depends: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """depends: package -> its direct dependencies (within the image)."""
    dependents: dict[str, set[str]] = {name: set() for name in depends}

    def reach(name: str, seen: set[str]) -> set[str]:
        for dep in depends.get(name, []):
            if dep not in seen and dep in depends:
                seen.add(dep)
                reach(dep, seen)
        return seen

    for name in depends:
        for dep in reach(name, set()):
            if dep != name:
                dependents[dep].add(name)
    return {name: len(users) + 1 for name, users in dependents.items()}


def group_packages(depends: Mapping[str, Sequence[str]], slots: int,
                   among: Collection[str] | None = None) -> list[list[str]]:
    """Layers of packages, most popular first; at most `slots` of them. `among`: only
    these packages are grouped (popularity still counts the whole image's dependents)."""
    score = popularity(depends)
    ranked = sorted(depends if among is None else [n for n in depends if n in among],
                    key=lambda n: (-score[n], n))
    if len(ranked) <= slots:
        return [[name] for name in ranked]
    keep = max(slots - 1, 0)
    return [[name] for name in ranked[:keep]] + [sorted(ranked[keep:])]


def explicit_groups(layers: Sequence[Sequence[str]], packages: Collection[str]
                    ) -> list[list[str]]:
    """`image.layers` checked against the image's closure: each group once, no name twice,
    none outside the closure (UserError naming them)."""
    groups: list[list[str]] = []
    seen: dict[str, int] = {}
    for i, group in enumerate(layers):
        if not group:
            raise UserError(f"image.layers[{i}] is empty; list package names in it or drop it")
        for name in group:
            if name in seen:
                raise UserError(f"image.layers: package `{name}` is in group {seen[name]} and "
                                f"in group {i}; a package gets one layer: keep it in one group")
            seen[name] = i
        groups.append(list(dict.fromkeys(group)))
    outside = sorted(n for n in seen if n not in packages)
    if outside:
        raise UserError(f"image.layers names {', '.join(outside)}, not in the image's package "
                        "closure; add them to environment.systemPackages or remove them from "
                        "image.layers (the .lock lists the closure)")
    return groups
