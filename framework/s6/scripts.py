"""The text of every generated script, from the shell files in framework/s6/sh/.

The init's own scripts run under `/bin/busybox sh` and call s6 tools by absolute path, so a
caller's odd PATH cannot break the init itself; services' commands run under bash, as NixOS
runs `script`.

How a file becomes a script: marker lines. Each file in sh/ is a complete script (two are
fragments spliced into run and log scripts: notify-listener.sh, package-path.sh), which
shellcheck checks as it is (`make lint`). A line of the form `# @SLOT: what goes here` marks
where the lines Python writes for SLOT go; they replace the marker, and every other line is
copied as it is. There is no placeholder syntax inside the shell text: `$` and braces are
the shell's own (with string.Template or str.format they would be claimed by Python, or
doubled), so a file reads as the script it becomes, and a line inserted for a slot is never
scanned again. The lines Python writes are the per-service parts only, mostly calls of
functions the fixed text defines (`run_oneshot`, `supervise`, `long_run`,
`longrun_finished`, `listening`), with every interpolated value through shlex.quote (names
are validated at evaluation; the quoting stays). Per-service values are not handed to the
fixed text as shell variables: the same scripts export the service's `environment`, whose
names could shadow them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from shlex import quote

from framework.s6.plan import Plan, Service

# Exit code when the init itself cannot work (s6's convention for a failed system call);
# also written in sh/init.sh and sh/notify-listener.sh.
INIT_ERROR = 111
MARKER = re.compile(r"# @([a-z]+)(?:: .*)?")


@cache
def source(name: str) -> str:
    """The text of sh/NAME, as the package holds it (in the wheel too)."""
    return (files("framework.s6") / "sh" / name).read_text(encoding="utf-8")


def slots(name: str) -> list[str]:
    """The slots sh/NAME marks, in order."""
    return [m[1] for line in source(name).splitlines() if (m := MARKER.fullmatch(line))]


def render(name: str, **fill: Sequence[str]) -> str:
    """sh/NAME with each marker line replaced by the lines given for its slot. Every slot
    the file marks must be given (an empty list for none) and no other."""
    if sorted(fill) != sorted(slots(name)):
        raise ValueError(f"sh/{name} has the slots {slots(name)}; given {sorted(fill)}")
    lines: list[str] = []
    for line in source(name).splitlines():
        marker = MARKER.fullmatch(line)
        lines += fill[marker[1]] if marker else [line]
    return "\n".join(lines) + "\n"


def fragment(name: str) -> list[str]:
    """The lines of a fragment file, to splice into a slot."""
    return render(name).splitlines()


INIT = render("init.sh")
LIB = render("lib.sh")
PREFIX = render("prefix.sh")
FINISH_SVSCAN = render("svscan-finish.sh")
NOTIFY_RECORD_SCRIPT = render("notify-record.sh")


def signal_handler(code: int, signal: str) -> str:
    return render("svscan-signal.sh",
                  signal=[f"say {quote(f'{signal}: stopping the services')}", f"shutdown {code}"])


def scanned_from_start(plan: Plan) -> bool:
    """Whether the long-runs are in the image's scan directory, so that s6-svscan starts them
    at its first scan: when no oneshot-pre must run before them. Under TCG each exec stage 2
    would make before the first long-run starts costs tens of milliseconds."""
    return bool(plan.long_runs) and not plan.pre


def stage2(plan: Plan) -> str:
    long_runs = [quote(s.name) for s in plan.long_runs]
    if scanned_from_start(plan):
        # Their supervisors running means s6-svscan listens.
        order = [" ".join(["wait_for", "-u", *long_runs, "||", "exit", "0"])]
    else:
        order = ["await_svscan"]
        order += [f"run_oneshot {quote(s.name)} || exit 0" for s in plan.pre]
        if long_runs:
            order.append(" ".join(["supervise", *long_runs]))
    notifying = {s.name for s in plan.long_runs if notifies(s)}
    for post in plan.post:
        awaited = [a for a in post.after if a in notifying]
        if awaited:
            order.append(f"wait_for -U {' '.join(map(quote, awaited))} || exit 0")
        order.append(f"run_oneshot {quote(post.name)} || exit 0")
    if plan.long_runs:
        order.append('say "all services started"')
    else:
        order += ['say "all oneshots done and nothing to supervise: exiting"', "shutdown 0"]
    return render("stage2.sh", order=order)


def _environment(service: Service) -> list[str]:
    lines = [f"export {key}={quote(value)}" for key, value in
             sorted(service.environment.items())]
    if service.path:
        lines += fragment("package-path.sh")
    return lines


def run(service: Service, check: str | None) -> str:
    """The service's `run`: environment, directory, user, then its command."""
    command = service.command
    flags = "-c" if command.startswith("exec ") else "-e -c"
    if service.working_directory:
        # Inside the command, not before it: s6-notifyoncheck finds s6-supervise through
        # the service directory it starts in, and the directory is entered as the service's
        # user, as systemd does.
        command = f"cd {quote(service.working_directory)} || exit {INIT_ERROR}\n{command}"
    prefix = []
    if check:
        # s6-notifyoncheck polls the check and tells s6-supervise (fd 3) when it passes.
        prefix += ["/usr/bin/s6-notifyoncheck", "-3", "3", "-n", "0", "-w", "50",
                   "-c", quote(check)]
    if service.user:
        prefix += ["/usr/bin/s6-setuidgid", quote(service.user)]
    # bash, as NixOS runs `script`: busybox's sh would prefer its own applets to the
    # image's programs (its `sed` over GNU sed).
    return render(
        "run.sh",
        service=[f"# {quote(service.type)} {quote(service.name)}"],
        environment=_environment(service),
        notify=fragment("notify-listener.sh") if service.readiness == "sd-notify" else [],
        exec=[" ".join(["exec", *prefix, "/bin/bash", flags, quote(command)])],
    )


def log(service: Service) -> str:
    """Reads the service's output: through `execLogger` if any, then the name prefix."""
    prefix = f"/etc/s6/prefix {quote(service.name)}"
    pipeline = (f"/bin/bash -c {quote(service.exec_logger)} | exec {prefix}"
                if service.exec_logger else f"exec {prefix}")
    return render("log.sh", environment=_environment(service), exec=[pipeline])


def finish(service: Service) -> str:
    restart = "true" if service.restart_on_failure else "false"
    return render("finish.sh",
                  finished=[f'longrun_finished {quote(service.name)} {restart} "$1" "$2"'])


def notifies(service: Service) -> bool:
    """Whether s6 learns the service's readiness apart from its start (else up = ready)."""
    return service.readiness != "up"


def check(service: Service) -> str | None:
    """A readiness probe for s6-notifyoncheck, or None when s6 itself knows."""
    readiness = service.readiness
    if isinstance(readiness, int):
        return render("check-port.sh", check=[f"listening {quote(str(readiness))}"])
    if readiness.startswith("/"):
        return render("check-file.sh", check=[f"[ -e {quote(readiness)} ]"])
    if readiness == "sd-notify":
        return render("check-sd-notify.sh")
    return None


def status(plan: Plan) -> str:
    """`status [STATE_DIR]`: a line per service, exit 0 when all are up/ready/done."""
    services = [f"long_run {quote(s.name)} {'true' if notifies(s) else 'false'}"
                for s in plan.long_runs]
    services += [f"oneshot {quote(s.name)} {quote(s.type)}" for s in [*plan.pre, *plan.post]]
    return render("status.sh", services=services)
