#!/bin/busybox sh
# A long-run's finish, run by s6-supervise with the exit code and the signal number.
. /etc/s6/lib.sh
# @finished: longrun_finished NAME RESTART_ON_FAILURE "$1" "$2"
