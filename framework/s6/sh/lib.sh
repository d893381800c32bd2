#!/bin/busybox sh
# Shared by stage 2, the finish scripts and the signal handlers. S6_STATE is exported by
# stage 1 (the init) and inherited by everything below s6-svscan.
bb=/bin/busybox

say() { printf 's6-init: %s\n' "$*" >&2; }

stopping() { [ -e "$S6_STATE/stopping" ]; }

# shutdown CODE: stop everything; the first recorded code becomes the container's.
shutdown() {
    (set -C; echo "$1" > "$S6_STATE/exitcode") 2>/dev/null
    stopping && return 0
    : > "$S6_STATE/stopping"
    /usr/bin/s6-svscanctl -t "$S6_STATE/scan"
    # A service that survives its timeout-kill cannot hold the container past the budget:
    # Docker kills the container 10 s after SIGTERM, the init gives up at 8 s (SIGABRT
    # makes s6-svscan exit at once) so its own exit code is the one Docker reports.
    read -r svscan < "$S6_STATE/svscan.pid"
    ($bb sleep 8; kill -ABRT "$svscan") </dev/null >/dev/null 2>&1 &
    # Stage 2 runs in its own session: this also stops the oneshot it is running (unless
    # stage 2 itself is the caller: then that oneshot is over).
    read -r stage2 < "$S6_STATE/stage2.pid" &&
        [ "$stage2" != "$$" ] && kill -TERM "-$stage2" 2>/dev/null
    return 0
}

# failed NAME CODE: a service failed; stop unless S6_DONT_TERMINATE_ON_ERROR is set.
failed() {
    if [ -n "${S6_DONT_TERMINATE_ON_ERROR:-}" ]; then
        say "$1 failed with exit code $2; S6_DONT_TERMINATE_ON_ERROR is set, supervision stays up"
        return 0
    fi
    say "$1 failed with exit code $2; stopping the container"
    shutdown "$2"
}

# await_logger NAME: at most 1 s for NAME's logger to run. s6-svscan -t lets running
# loggers drain to end of file, but a logger not yet spawned (a service that failed at once,
# on a slow disk) would never read what NAME printed before failing.
await_logger() {
    i=0
    while [ $i -lt 100 ]; do
        [ "$(/usr/bin/s6-svstat -o up "$S6_STATE/scan/$1/log" 2>/dev/null)" = true ] && return
        $bb sleep 0.01
        i=$((i + 1))
    done
}

# longrun_finished NAME RESTART_ON_FAILURE EXIT SIGNAL: the body of every finish script.
# Exit 125 tells s6-supervise not to restart the service.
longrun_finished() {
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
}

# run_oneshot NAME: run it with its output through its logger; non-zero ends stage 2.
run_oneshot() {
    stopping && return 1
    echo running > "$S6_STATE/oneshots/$1"
    (set -o pipefail; "/etc/s6/oneshot/$1/run" 2>&1 | "/etc/s6/oneshot/$1/log")
    code=$?
    if [ "$code" = 0 ]; then
        echo 'done' > "$S6_STATE/oneshots/$1"
        return 0
    fi
    echo "failed $code" > "$S6_STATE/oneshots/$1"
    stopping || failed "$1" "$code"
    return 1
}

# wait_supervised NAME...: until s6-svscan has a supervisor for each (or we stop).
wait_supervised() {
    for name; do
        until /usr/bin/s6-svok "$S6_STATE/scan/$name" 2>/dev/null; do
            stopping && return 1
            $bb sleep 0.01
        done
    done
}

# wait_for FLAG NAME...: -u (up) or -U (up and ready) for all the named long-runs.
wait_for() {
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
}
