"""The text of every generated script. The init's own scripts run under `/bin/busybox sh`
and call s6 tools by absolute path, so a caller's odd PATH cannot break the init itself;
services' commands run under bash, as NixOS runs `script`."""

from __future__ import annotations

from shlex import quote

from framework.s6 import DEFAULT_STATE, NOTIFY_RECORD
from framework.s6.plan import Plan, Service

SHEBANG = "#!/bin/busybox sh\n"
# Docker kills the container 10 s after SIGTERM; the init gives up at 8 s (SIGABRT makes
# s6-svscan exit at once) so its own exit code is the one Docker reports.
SHUTDOWN_BUDGET_S = 8
# Exit code when the init itself cannot work (s6's convention for a failed system call).
INIT_ERROR = 111
# Where Debian's packages put programs: what a service's `path` packages add to PATH.
PACKAGE_BIN_DIRS = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

LIB = SHEBANG + f"""\
# Shared by stage 2, the finish scripts and the signal handlers. S6_STATE is exported by
# stage 1 (the init) and inherited by everything below s6-svscan.
bb=/bin/busybox

say() {{ printf 's6-init: %s\\n' "$*" >&2; }}

stopping() {{ [ -e "$S6_STATE/stopping" ]; }}

# shutdown CODE: stop everything; the first recorded code becomes the container's.
shutdown() {{
    (set -C; echo "$1" > "$S6_STATE/exitcode") 2>/dev/null
    stopping && return 0
    : > "$S6_STATE/stopping"
    /usr/bin/s6-svscanctl -t "$S6_STATE/scan"
    # A service that survives its timeout-kill cannot hold the container past the budget.
    read -r svscan < "$S6_STATE/svscan.pid"
    ($bb sleep {SHUTDOWN_BUDGET_S}; kill -ABRT "$svscan") </dev/null >/dev/null 2>&1 &
    # Stage 2 runs in its own session: this also stops the oneshot it is running (unless
    # stage 2 itself is the caller: then that oneshot is over).
    read -r stage2 < "$S6_STATE/stage2.pid" &&
        [ "$stage2" != "$$" ] && kill -TERM "-$stage2" 2>/dev/null
    return 0
}}

# failed NAME CODE: a service failed; stop unless S6_DONT_TERMINATE_ON_ERROR is set.
failed() {{
    if [ -n "${{S6_DONT_TERMINATE_ON_ERROR:-}}" ]; then
        say "$1 failed with exit code $2; S6_DONT_TERMINATE_ON_ERROR is set, supervision stays up"
        return 0
    fi
    say "$1 failed with exit code $2; stopping the container"
    shutdown "$2"
}}

# await_logger NAME: at most 1 s for NAME's logger to run. s6-svscan -t lets running
# loggers drain to end of file, but a logger not yet spawned (a service that failed at once,
# on a slow disk) would never read what NAME printed before failing.
await_logger() {{
    i=0
    while [ $i -lt 100 ]; do
        [ "$(/usr/bin/s6-svstat -o up "$S6_STATE/scan/$1/log" 2>/dev/null)" = true ] && return
        $bb sleep 0.01
        i=$((i + 1))
    done
}}

# longrun_finished NAME RESTART_ON_FAILURE EXIT SIGNAL: the body of every finish script.
# Exit 125 tells s6-supervise not to restart the service.
longrun_finished() {{
    stopping && exit 0
    code=$3
    [ "$code" = 256 ] && code=$((128 + $4))
    [ "$code" = 0 ] && exit 0
    if [ "$2" = true ]; then
        say "$1 exited with code $code; restarting it (restartOnFailure)"
        exit 0
    fi
    await_logger "$1"
    failed "$1" "$code"
    exit 125
}}

# run_oneshot NAME: run it with its output through its logger; non-zero ends stage 2.
run_oneshot() {{
    stopping && return 1
    echo running > "$S6_STATE/oneshots/$1"
    (set -o pipefail; /etc/s6/oneshot/$1/run 2>&1 | /etc/s6/oneshot/$1/log)
    code=$?
    if [ "$code" = 0 ]; then
        echo 'done' > "$S6_STATE/oneshots/$1"
        return 0
    fi
    echo "failed $code" > "$S6_STATE/oneshots/$1"
    stopping || failed "$1" "$code"
    return 1
}}

# wait_supervised NAME...: until s6-svscan has a supervisor for each (or we stop).
wait_supervised() {{
    for name; do
        until /usr/bin/s6-svok "$S6_STATE/scan/$name" 2>/dev/null; do
            stopping && return 1
            $bb sleep 0.01
        done
    done
}}

# wait_for FLAG NAME...: -u (up) or -U (up and ready) for all the named long-runs.
wait_for() {{
    flag=$1
    shift
    wait_supervised "$@" || return 1
    for name; do
        # Retried: a fresh supervisor may not have written its status file yet.
        until /usr/bin/s6-svwait "$flag" "$S6_STATE/scan/$name" 2>/dev/null; do
            stopping && return 1
            $bb sleep 0.05
        done
    done
}}
"""

INIT = SHEBANG + f"""\
# The entry point: init [STATE_DIR]. Prepares the state directory, starts stage 2 in the
# background, then becomes s6-svscan, which as PID 1 reaps every orphan.
bb=/bin/busybox
S6_STATE=${{1:-{DEFAULT_STATE}}}
export S6_STATE
# A restarted container finds its previous state: start afresh.
cd / && $bb mkdir -p "$S6_STATE" && cd "$S6_STATE" &&
    $bb rm -rf scan services oneshots exitcode stopping stage2.pid svscan.pid &&
    $bb cp -a /etc/s6/scan /etc/s6/services "$S6_STATE/" &&
    $bb mkdir oneshots && echo $$ > svscan.pid ||
    {{ echo "s6-init: cannot prepare the state directory $S6_STATE" >&2; exit {INIT_ERROR}; }}
cd /
# s6-svscan finds s6-supervise through PATH; keep the caller's PATH, make sure of that one.
case ":${{PATH:-}}:" in
    *:/usr/bin:*) ;;
    *) PATH=${{PATH:+$PATH:}}/usr/bin; export PATH ;;
esac
$bb setsid /etc/s6/stage2 </dev/null &
echo $! > "$S6_STATE/stage2.pid"
exec /usr/bin/s6-svscan -- "$S6_STATE/scan"
"""

FINISH_SVSCAN = SHEBANG + """\
# s6-svscan execs this once every supervisor is gone: exit with the recorded code.
read -r code < "$S6_STATE/exitcode" 2>/dev/null || code=0
exit "$code"
"""


def signal_handler(code: int, signal: str) -> str:
    return SHEBANG + f""". /etc/s6/lib.sh
say "{signal}: stopping the services"
shutdown {code}
"""


def stage2(plan: Plan) -> str:
    lines = [SHEBANG.rstrip(), "# Stage 2: the start order, fixed at build time.",
             ". /etc/s6/lib.sh"]
    # Wait until s6-svscan (started right after us) listens on its control pipe.
    lines.append("until /usr/bin/s6-svscanctl -a \"$S6_STATE/scan\" 2>/dev/null; do "
                 "stopping && exit 0; /bin/busybox sleep 0.01; done")
    lines += [f"run_oneshot {quote(s.name)} || exit 0" for s in plan.pre]
    names = " ".join(quote(s.name) for s in plan.long_runs)
    if plan.long_runs:
        lines.append("stopping && exit 0")
        lines += [f'/bin/busybox ln -s ../services/{quote(s.name)} "$S6_STATE/scan/"'
                  f"{quote(s.name)}" for s in plan.long_runs]
        lines += [
            '/usr/bin/s6-svscanctl -a "$S6_STATE/scan"',
            f"wait_for -u {names} || exit 0",
        ]
    notifying = {s.name for s in plan.long_runs if notifies(s)}
    for post in plan.post:
        awaited = [a for a in post.after if a in notifying]
        if awaited:
            lines.append(f"wait_for -U {' '.join(map(quote, awaited))} || exit 0")
        lines.append(f"run_oneshot {quote(post.name)} || exit 0")
    if plan.long_runs:
        lines.append('say "all services started"')
    else:
        lines.append('say "all oneshots done and nothing to supervise: exiting"')
        lines.append("shutdown 0")
    return "\n".join(lines) + "\n"


def _environment(service: Service) -> list[str]:
    lines = [f"export {key}={quote(value)}" for key, value in
             sorted(service.environment.items())]
    if service.path:
        # NixOS semantics: the `path` packages come first, the caller's PATH stays.
        lines.append(f'export PATH={PACKAGE_BIN_DIRS}"${{PATH:+:$PATH}}"')
    return lines


def run(service: Service, check: str | None) -> str:
    """The service's `run`: environment, directory, user, then its command."""
    lines = [SHEBANG.rstrip(), f"# {service.type} {service.name}", "exec 2>&1",
             *_environment(service)]
    if service.readiness == "sd-notify":
        lines += _notify_listener()
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
    lines.append(" ".join(["exec", *prefix, "/bin/bash", flags, quote(command)]))
    return "\n".join(lines) + "\n"


def _notify_listener() -> list[str]:
    """sd_notify for s6: socat receives the daemon's datagrams on NOTIFY_SOCKET, in the
    service directory, and records each on a line of notify.log, which the check reads.
    The socket is 0666 so a service running as its own user can send; once READY=1 came,
    the check stops the listener (later messages, WATCHDOG=1 every few seconds for some
    daemons, would only grow the file)."""
    return [
        # A listener left by a run that died before it was ready.
        'read -r pid < notify.pid 2>/dev/null && kill "$pid" 2>/dev/null',
        "rm -f notify.sock notify.log",
        f"/usr/bin/socat -u UNIX-RECVFROM:notify.sock,fork,perm=0666 EXEC:{NOTIFY_RECORD} "
        "</dev/null >/dev/null 2>&1 &",
        "echo $! > notify.pid",
        # socat binds in the background: the daemon must not start before it listens.
        "i=0; until [ -S notify.sock ]; do i=$((i + 1)); "
        f"[ $i -lt 500 ] || exit {INIT_ERROR}; /bin/busybox sleep 0.01; done",
        'export NOTIFY_SOCKET="$PWD/notify.sock"',
    ]


# Run by socat for each datagram: one notification message, newline-terminated.
NOTIFY_RECORD_SCRIPT = SHEBANG + "/bin/busybox cat >> notify.log\necho >> notify.log\n"


def log(service: Service) -> str:
    """Reads the service's output: through `execLogger` if any, then the name prefix."""
    lines = [SHEBANG.rstrip(), *_environment(service)]
    prefix = f"/etc/s6/prefix {quote(service.name)}"
    if service.exec_logger:
        lines.append(f"/bin/bash -c {quote(service.exec_logger)} | exec {prefix}")
    else:
        lines.append(f"exec {prefix}")
    return "\n".join(lines) + "\n"


PREFIX = SHEBANG + """\
# prefix NAME: copy stdin to stdout with "NAME: " before each line, unbuffered.
while IFS= read -r line || [ -n "$line" ]; do
    printf '%s: %s\\n' "$1" "$line"
done
"""


def finish(service: Service) -> str:
    restart = "true" if service.restart_on_failure else "false"
    return SHEBANG + (f". /etc/s6/lib.sh\nlongrun_finished {quote(service.name)} "
                      f'{restart} "$1" "$2"\n')


def notifies(service: Service) -> bool:
    """Whether s6 learns the service's readiness apart from its start (else up = ready)."""
    return service.readiness != "up"


def check(service: Service) -> str | None:
    """A readiness probe for s6-notifyoncheck, or None when s6 itself knows."""
    readiness = service.readiness
    if isinstance(readiness, int):
        # Listening sockets straight from the kernel: no client tool needed in the image.
        return SHEBANG + f"""\
port=$(printf ':%04X' {readiness})
for table in /proc/net/tcp /proc/net/tcp6; do
    while read -r _ local _ state _; do
        [ "$state" = 0A ] && [ "${{local%"$port"}}" != "$local" ] && exit 0
    done < "$table"
done 2>/dev/null
exit 1
"""
    if readiness.startswith("/"):
        return SHEBANG + f"[ -e {quote(readiness)} ]\n"
    if readiness == "sd-notify":
        # Ready once a message has the READY=1 line; the listener is then of no more use.
        return SHEBANG + ("/bin/busybox grep -qx READY=1 notify.log 2>/dev/null || exit 1\n"
                          'read -r pid < notify.pid && kill "$pid" 2>/dev/null\nexit 0\n')
    return None


def status(plan: Plan) -> str:
    """`status [STATE_DIR]`: a line per service, exit 0 when all are up/ready/done."""
    lines = [SHEBANG.rstrip(),
             "# Usable as a Docker HEALTHCHECK: exit 0 when every long-run is ready and "
             "every oneshot done.",
             f"state=${{1:-${{S6_STATE:-{DEFAULT_STATE}}}}}", "healthy=0"]
    for service in plan.long_runs:
        # Without a readiness of its own, a long-run that is up is ready.
        ready = "'true true'" if notifies(service) else "'true true'|'true false'"
        lines += [
            f"case $(/usr/bin/s6-svstat -o up,ready \"$state/scan/\"{quote(service.name)} "
            "2>/dev/null) in",
            f"    {ready}) echo {quote(service.name + ' long-run ready')} ;;",
            *([f"    'true false') echo {quote(service.name + ' long-run up')}; healthy=1 ;;"]
              if notifies(service) else []),
            f"    *) echo {quote(service.name + ' long-run down')}; healthy=1 ;;",
            "esac",
        ]
    for service in [*plan.pre, *plan.post]:
        lines += [
            f"read -r result < \"$state/oneshots/\"{quote(service.name)} 2>/dev/null || "
            "result=pending",
            f"echo {quote(f'{service.name} {service.type}')} \"$result\"",
            "[ \"$result\" = 'done' ] || healthy=1",
        ]
    lines.append("exit $healthy")
    return "\n".join(lines) + "\n"

