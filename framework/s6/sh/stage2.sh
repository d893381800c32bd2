#!/bin/busybox sh
# Stage 2: the start order, fixed at build time.
. /etc/s6/lib.sh

# supervise NAME...: hand the long-runs to s6-svscan and wait until all are up.
supervise() {
    stopping && exit 0
    for name; do
        /bin/busybox ln -s "../services/$name" "$S6_STATE/scan/$name"
    done
    /usr/bin/s6-svscanctl -a "$S6_STATE/scan"
    wait_for -u "$@" || exit 0
}

# Wait until s6-svscan (started right after us) listens on its control pipe.
until /usr/bin/s6-svscanctl -a "$S6_STATE/scan" 2>/dev/null; do
    stopping && exit 0
    /bin/busybox sleep 0.01
done
# @order: oneshot-pre, `supervise` the long-runs, oneshot-post (each after what it awaits)
