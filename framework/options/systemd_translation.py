"""NixOS-style `systemd.services` translated to `s6.services` (SPEC section 3).

The seed project's model, kept: Type simple -> long-run (its ordering is not honoured);
oneshot -> oneshot-pre, or oneshot-post when it comes after a long-run; `after` orders the
oneshots. Beyond the seed: everything outside the subset is reported as a warning naming the
service and the option instead of being dropped silently, and User/Group are honoured.

Every command becomes shell text, as NixOS writes its unit scripts: run with `sh -e`,
`preStart` first (in a subshell, so its `cd` or variables do not leak into the main
process), then the ExecStartPre lines, then the main process `exec`ed so s6 supervises it
directly.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from framework.errors import UserError

# The options of a service and of its serviceConfig that the translation understands; any
# other key (the submodules are freeform) is reported.
SERVICE_KEYS = frozenset(
    {"enable", "script", "preStart", "serviceConfig", "environment", "path", "after",
     "wantedBy", "readiness"}
)
SERVICE_CONFIG_KEYS = frozenset(
    {"Type", "ExecStart", "ExecStartPre", "User", "Group", "WorkingDirectory", "Restart",
     "Environment"}
)
LONG_RUN_TYPES = frozenset({"simple", "exec", "notify"})
RESTARTING = frozenset({"always", "on-failure"})

# systemd's execution prefixes. `@` (argv[0]) and `-` (failure ignored) are honoured; the
# others change privileges or variable expansion, which a shell line cannot express.
EXEC_PREFIXES = "@-+!:"

# execline's `exec` sets argv[0] (`exec -a`), which Debian's /bin/sh (dash) cannot; its
# `export` sets a variable in front of a program. execline is in every image with s6
# services; these two live outside PATH because they shadow shell builtins.
EXECLINE_BIN = "/usr/lib/execline/bin"
EXECLINE_EXEC = f"{EXECLINE_BIN}/exec"
# What NixOS (and the seed) put on every unit's PATH, so scripts find the usual tools.
DEFAULT_PATH = ["coreutils", "findutils", "grep", "sed"]
# The shell the s6 init runs every script with (framework/s6); images need no other one.
SHELL = "/bin/busybox sh"


@dataclass
class Translation:
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def unit_name(name: str) -> str:
    return name.removesuffix(".service")


def command_line(command: str, *, main: bool) -> tuple[str, list[str]]:
    """One Exec line as shell text, and the prefixes it had that cannot be honoured.

    `main` lines are `exec`ed (s6 supervises the command itself) unless `-` asks for the
    failure to be ignored, in which case the shell has to survive to report success."""
    prefixes = command[: len(command) - len(command.lstrip(EXEC_PREFIXES))]
    words = command[len(prefixes) :].strip()
    unsupported = [p for p in dict.fromkeys(prefixes) if p not in "@-"]
    if "@" in prefixes:
        # `@/bin/prog name args`: the second word is argv[0] (systemd.service(5)).
        program, _, rest = words.partition(" ")
        argv0, _, args = rest.strip().partition(" ")
        words = " ".join(filter(None, [EXECLINE_EXEC, "-a", argv0, program, args.strip()]))
    if "-" in prefixes:
        return f"{words} || true", unsupported
    return (f"exec {words}" if main else words), unsupported


def _environment_words(value: str | list[str] | None) -> list[str]:
    """The words of Environment= lines (shell-style quotes); an unbalanced quote is the
    definition's mistake, said as such."""
    words = []
    for line in [value] if isinstance(value, str) else value or []:
        try:
            words += shlex.split(line)
        except ValueError as err:
            raise UserError(f"serviceConfig.Environment line {line!r}: {err} (quotes must "
                            "pair up); fix the quoting, e.g. `KEY=\"two words\"`") from err
    return words


def environment_assignments(value: str | list[str] | None) -> dict[str, str]:
    """systemd's Environment=: space-separated KEY=value words, shell-style quotes."""
    out: dict[str, str] = {}
    for word in _environment_words(value):
        key, sep, val = word.partition("=")
        if sep:
            out[key] = val
    return out


def bad_environment_words(value: str | list[str] | None) -> list[str]:
    return [w for w in _environment_words(value) if "=" not in w]


def oneshot_posts(services: Mapping[str, Mapping[str, Any]], long_runs: set[str]) -> set[str]:
    """Oneshots after a long-run, directly or through another such oneshot: they can only
    run once the long-runs are up, so they become oneshot-post."""
    posts: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, svc in services.items():
            if name in long_runs or name in posts:
                continue
            if any(unit_name(a) in long_runs | posts for a in svc["after"]):
                posts.add(name)
                changed = True
    return posts


def _privilege_drop(user: str | None, group: str) -> str:
    """A command prefix running the rest as user:group. s6's `user` takes only a user (and
    its primary group), so a Group= is applied here with s6's own uid/gid tools. The
    supplementary groups are cleared: looking them up needs a glibc NSS configuration
    (/etc/nsswitch.conf) that Debian only creates in a maintainer script."""
    account = shlex.quote(f"{user or 'root'}:{group}")
    return (
        f"exec s6-envuidgid -B {account} {EXECLINE_BIN}/export GIDLIST '' "
        f"s6-applyuidgid -Uz {SHELL} -c "
    )


class _ServiceTranslator:
    def __init__(self, name: str, svc: Mapping[str, Any], s6_type: str,
                 phases: Mapping[str, str]) -> None:
        self.name = name
        self.svc = svc
        self.conf = svc["serviceConfig"]
        self.s6_type = s6_type
        self.phases = phases
        self.warnings: list[str] = []

    def warn(self, option: str, why: str) -> None:
        self.warnings.append(f"systemd.services.{self.name}: {option} {why}")

    def unsupported_keys(self) -> None:
        for key in sorted(set(self.svc) - SERVICE_KEYS):
            self.warn(f"option `{key}`", "is not supported by the s6 translation; ignored")
        for key in sorted(set(self.conf) - SERVICE_CONFIG_KEYS):
            self.warn(f"option `serviceConfig.{key}`",
                      "is not supported by the s6 translation; ignored")

    def script(self) -> str:
        lines = ["set -e"]
        if self.svc["preStart"]:
            lines += ["(", self.svc["preStart"].rstrip("\n"), ")"]
        pre = self.conf["ExecStartPre"]
        for command in [pre] if isinstance(pre, str) else pre or []:
            line, bad = command_line(command, main=False)
            lines.append(line)
            self._prefix_warnings("serviceConfig.ExecStartPre", bad)
        if self.conf["ExecStart"] is not None:
            line, bad = command_line(self.conf["ExecStart"], main=True)
            lines.append(line)
            self._prefix_warnings("serviceConfig.ExecStart", bad)
        else:
            lines.append(self.svc["script"].rstrip("\n"))
        body = "\n".join(lines) + "\n"
        group = self.conf["Group"]
        if group is not None:
            return _privilege_drop(self.conf["User"], group) + shlex.quote(body) + "\n"
        return body

    def _prefix_warnings(self, option: str, prefixes: list[str]) -> None:
        for prefix in prefixes:
            self.warn(f"`{option}` prefix `{prefix}`",
                      "is not supported by the s6 translation; the command runs without it")

    def restart(self) -> bool:
        restart = self.conf["Restart"]
        if restart == "no":
            return False
        if self.s6_type != "long-run":
            self.warn(f"`serviceConfig.Restart = {restart}`",
                      "is not supported for oneshot services; they run once")
            return False
        if restart not in RESTARTING:
            self.warn(f"`serviceConfig.Restart = {restart}`",
                      "is not supported (only no, always, on-failure); the service is not "
                      "restarted")
            return False
        return True

    def after(self) -> list[str]:
        kept: list[str] = []
        for unit in self.svc["after"]:
            dep = unit_name(unit)
            phase = self.phases.get(dep)
            if phase is None:
                self.warn(f"`after = {unit}`",
                          "names no service of this image; the ordering is ignored")
            elif self.s6_type == "long-run":
                if phase != "oneshot-pre":
                    self.warn(f"`after = {unit}`",
                              "orders a long-running service, which s6 does not do; ignored")
            elif phase == self.s6_type or phase == "long-run":
                kept.append(dep)
            # An oneshot-post after an oneshot-pre: satisfied by the phase order itself.
        return kept

    def translate(self) -> dict[str, Any]:
        self.unsupported_keys()
        kind = self.conf["Type"]
        if kind not in LONG_RUN_TYPES | {"oneshot"}:
            self.warn(f"`serviceConfig.Type = {kind}`",
                      "is not supported (only simple, exec, notify, oneshot); run as simple")
        bad_words = bad_environment_words(self.conf["Environment"])
        if bad_words:
            self.warn("`serviceConfig.Environment`",
                      f"has words that are not KEY=value ({', '.join(bad_words)}); ignored")
        out: dict[str, Any] = {
            "type": self.s6_type,
            "script": self.script(),
            "after": self.after(),
            "restartOnFailure": self.restart(),
            # serviceConfig.Environment is the more specific setting; NixOS writes
            # `environment` first, so in systemd the later Environment= lines win too.
            "environment": {**self.svc["environment"],
                            **environment_assignments(self.conf["Environment"])},
            "path": list(dict.fromkeys([*DEFAULT_PATH, *self.svc["path"]])),
        }
        if self.conf["User"] is not None and self.conf["Group"] is None:
            out["user"] = self.conf["User"]
        if self.conf["WorkingDirectory"] is not None:
            out["workingDirectory"] = self.conf["WorkingDirectory"]
        readiness = self.svc["readiness"] or ("sd-notify" if kind == "notify" else None)
        if readiness is not None and self.s6_type == "long-run":
            out["readiness"] = readiness
        elif self.svc["readiness"] is not None:
            self.warn("`readiness`", "applies to long-running services only; ignored")
        return out


def translate(services: Mapping[str, Mapping[str, Any]]) -> Translation:
    """`systemd.services` (merged, defaults filled) -> `s6.services` entries + warnings."""
    result = Translation()
    runnable: dict[str, Mapping[str, Any]] = {}
    for name, svc in services.items():
        if not svc["enable"]:
            continue
        if svc["serviceConfig"]["ExecStart"] is None and svc["script"] is None:
            result.warnings.append(
                f"systemd.services.{name}: has neither `script` nor `serviceConfig.ExecStart`;"
                " nothing to run, so it is not translated"
            )
            continue
        runnable[name] = svc
    long_runs = {n for n, s in runnable.items() if s["serviceConfig"]["Type"] != "oneshot"}
    posts = oneshot_posts(runnable, long_runs)
    phases = {
        n: "long-run" if n in long_runs else "oneshot-post" if n in posts else "oneshot-pre"
        for n in runnable
    }
    for name, svc in runnable.items():
        translator = _ServiceTranslator(name, svc, phases[name], phases)
        result.services[name] = translator.translate()
        result.warnings += translator.warnings
    return result


def conflicts(services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Definitions the translation cannot make sense of: errors, not warnings."""
    return [
        f"systemd.services.{name}: both `script` and `serviceConfig.ExecStart` are set; "
        "keep one (NixOS rejects this too)"
        for name, svc in services.items()
        if svc["enable"] and svc["script"] is not None
        and svc["serviceConfig"]["ExecStart"] is not None
    ]
