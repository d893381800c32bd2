#!/bin/busybox sh
# `readiness: PORT`: ready once a TCP socket listens on the port. Listening sockets
# straight from the kernel: no client tool needed in the image.

# listening PORT: exit 0 if a socket listens on PORT (IPv4 or IPv6), else exit 1.
listening() {
    port=$(printf ':%04X' "$1")
    for table in /proc/net/tcp /proc/net/tcp6; do
        while read -r _ local _ state _; do
            [ "$state" = 0A ] && [ "${local%"$port"}" != "$local" ] && exit 0
        done < "$table"
    done 2>/dev/null
    exit 1
}

# @check: listening PORT
