#!/bin/busybox sh
# prefix NAME: copy stdin to stdout with "NAME: " before each line, unbuffered.
while IFS= read -r line || [ -n "$line" ]; do
    printf '%s: %s\n' "$1" "$line"
done
