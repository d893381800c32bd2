"""Which packages share a layer when there are more packages than layers.

The rule is dockerTools' (nixpkgs `buildLayeredImage`): a package's popularity is how many
packages of the image depend on it, directly or not, plus itself. The most popular packages
(libc6 first) are the ones most likely to be shared with other images, so they get their
own layers; when only `slots` layers are available, the `slots - 1` most popular get one
each and all the others share the last layer. Ties break by name, so the grouping is stable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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


def group_packages(depends: Mapping[str, Sequence[str]], slots: int) -> list[list[str]]:
    """Layers of packages, most popular first; at most `slots` of them."""
    score = popularity(depends)
    ranked = sorted(depends, key=lambda n: (-score[n], n))
    if len(ranked) <= slots:
        return [[name] for name in ranked]
    keep = max(slots - 1, 0)
    return [[name] for name in ranked[:keep]] + [sorted(ranked[keep:])]
