#!/bin/busybox sh
# A service's logger: its output, through its `execLogger` if any, then "NAME: " before
# each line (/etc/s6/prefix).
# @environment: the service's `environment`, and PATH when it has `path` packages
# @exec: the logger pipeline
