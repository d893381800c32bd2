#!/bin/busybox sh
# @service: its type and name
exec 2>&1
# @environment: its `environment`, and PATH when it has `path` packages
# @notify: the NOTIFY_SOCKET listener, for `readiness: sd-notify`
# @exec: its command under bash, as its user, with the readiness check
