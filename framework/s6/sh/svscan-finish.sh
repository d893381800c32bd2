#!/bin/busybox sh
# s6-svscan execs this once every supervisor is gone: exit with the recorded code.
read -r code < "$S6_STATE/exitcode" 2>/dev/null || code=0
exit "$code"
