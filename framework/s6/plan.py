"""The services of a merged configuration, validated and put in start order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Service:
    name: str
    type: str  # oneshot-pre | long-run | oneshot-post
    command: str  # shell text run by `sh -c`
    after: tuple[str, ...]
    restart_on_failure: bool
    user: str | None
    working_directory: str | None
    environment: dict[str, str]
    path: tuple[str, ...]
    exec_logger: str | None
    readiness: str | int
    stop_timeout: int  # seconds

    @classmethod
    def from_config(cls, name: str, spec: dict[str, Any]) -> Service:
        # `exec` makes the program the supervised process, so signals reach it directly.
        command = f"exec {spec['execStart']}" if spec["execStart"] else spec["script"] or ""
        return cls(
            name=name,
            type=spec["type"],
            command=command,
            after=tuple(spec["after"]),
            restart_on_failure=spec["restartOnFailure"],
            user=spec["user"],
            working_directory=spec["workingDirectory"],
            environment=dict(spec["environment"]),
            path=tuple(spec["path"]),
            exec_logger=spec["execLogger"],
            readiness=spec["readiness"],
            stop_timeout=spec["stopTimeout"],
        )


@dataclass(frozen=True)
class Plan:
    pre: list[Service]  # in start order
    long_runs: list[Service]  # by name
    post: list[Service]  # in start order

    @property
    def services(self) -> list[Service]:
        return [*self.pre, *self.long_runs, *self.post]


def enabled_services(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in sorted(cfg["s6"]["services"].items()) if s["enable"]}


def problems(cfg: dict[str, Any]) -> list[str]:
    """Every mistake in `s6.services`, each naming the service and the fix."""
    services = enabled_services(cfg)
    errors = []
    for name, spec in services.items():
        where = f"s6.services.{name}"
        if (spec["execStart"] is None) == (spec["script"] is None):
            errors.append(f"{where}: give exactly one of `execStart` or `script`")
        bad = [k for k in spec["environment"] if not ENV_NAME.fullmatch(k)]
        if bad:
            errors.append(f"{where}.environment: {', '.join(bad)} is not a variable name "
                          "(letters, digits and _, not starting with a digit)")
        if spec["type"] == "oneshot-pre":
            later = [a for a in spec["after"]
                     if a in services and services[a]["type"] != "oneshot-pre"]
            if later:
                errors.append(f"{where}: a oneshot-pre runs before every long-run and "
                              f"oneshot-post, so it cannot be after {', '.join(later)}; "
                              "make it a oneshot-post or drop the `after`")
    for kind in ("oneshot-pre", "oneshot-post"):
        cycle = find_cycle({n: s for n, s in services.items() if s["type"] == kind})
        if cycle:
            errors.append(f"s6.services: `after` cycle among {kind} services: "
                          f"{' -> '.join(cycle)}; remove one of these `after` entries")
    return errors


def unknown_after(cfg: dict[str, Any]) -> list[str]:
    services = enabled_services(cfg)
    return [f"s6.services.{name}.after names `{other}`, which is not an enabled service; "
            "it is ignored" for name, spec in services.items() for other in spec["after"]
            if other not in services]


def find_cycle(group: dict[str, dict[str, Any]]) -> list[str] | None:
    """A dependency cycle among `group` through `after`, as a closed path, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in group[name]["after"]:
            if dep not in group:
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(group):
        if name not in state and (found := visit(name)):
            return found
    return None


def ordered(group: dict[str, Service]) -> list[Service]:
    """Services in `after` order; ties by name so the generated init is reproducible.
    Assumes no cycle (checked by `problems`)."""
    done: list[str] = []
    pending = sorted(group)
    while pending:
        ready = next(n for n in pending
                     if all(d in done or d not in group for d in group[n].after))
        done.append(ready)
        pending.remove(ready)
    return [group[n] for n in done]


def plan(cfg: dict[str, Any]) -> Plan:
    services = {n: Service.from_config(n, s) for n, s in enabled_services(cfg).items()}
    by_type = {kind: {n: s for n, s in services.items() if s.type == kind}
               for kind in ("oneshot-pre", "long-run", "oneshot-post")}
    return Plan(
        pre=ordered(by_type["oneshot-pre"]),
        long_runs=list(by_type["long-run"].values()),
        post=ordered(by_type["oneshot-post"]),
    )
