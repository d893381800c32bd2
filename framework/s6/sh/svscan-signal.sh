#!/bin/busybox sh
# s6-svscan runs this on a signal (SIGTERM from Docker, SIGINT from a terminal).
. /etc/s6/lib.sh
# @signal: say which signal, then shutdown with 128 + its number
