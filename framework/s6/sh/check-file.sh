#!/bin/busybox sh
# `readiness: /PATH`: ready once the file exists.
# @check: [ -e PATH ]
