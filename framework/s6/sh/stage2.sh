#!/bin/busybox sh
# Stage 2: the start order, fixed at build time.
. /etc/s6/lib.sh

# await_svscan: until s6-svscan (started right after us) listens on its control pipe, before
# anything that could stop the container (which tells it through that pipe).
await_svscan() {
    until /usr/bin/s6-svscanctl -a "$S6_STATE/scan" 2>/dev/null; do
        stopping && exit 0
        /bin/busybox sleep 0.01
    done
}

# supervise NAME...: hand the long-runs to s6-svscan and wait until all are up. (An image
# without oneshot-pre services has them in its scan directory from the start instead.)
supervise() {
    stopping && exit 0
    for name; do
        /bin/busybox ln -s "../services/$name" "$S6_STATE/scan/$name"
    done
    /usr/bin/s6-svscanctl -a "$S6_STATE/scan"
    wait_for -u "$@" || exit 0
}

# @order: oneshot-pre, `supervise` the long-runs, oneshot-post (each after what it awaits)
