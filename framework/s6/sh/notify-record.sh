#!/bin/busybox sh
# Run by socat for each datagram: one notification message, newline-terminated.
/bin/busybox cat >> notify.log
echo >> notify.log
