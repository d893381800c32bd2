#!/bin/busybox sh
# Usable as a Docker HEALTHCHECK: exit 0 when every long-run is ready and every oneshot done.
state=${1:-${S6_STATE:-/run/s6}}
healthy=0

# long_run NAME NOTIFIES: its state. A long-run that does not notify (NOTIFIES=false: no
# readiness of its own) is ready once it is up.
long_run() {
    case $(/usr/bin/s6-svstat -o up,ready "$state/scan/$1" 2>/dev/null) in
        'true true') echo "$1 long-run ready" ;;
        'true false')
            if [ "$2" = true ]; then
                echo "$1 long-run up"
                healthy=1
            else
                echo "$1 long-run ready"
            fi ;;
        *) echo "$1 long-run down"; healthy=1 ;;
    esac
}

# oneshot NAME TYPE: its result, from stage 2's record.
oneshot() {
    read -r result < "$state/oneshots/$1" 2>/dev/null || result=pending
    echo "$1 $2 $result"
    [ "$result" = 'done' ] || healthy=1
}

# @services: a `long_run` line per long-run, then a `oneshot` line per oneshot
exit $healthy
