"""The s6 init inside images: service directories, an ordering stage, a status command.

Debian ships `s6` and `execline` but not s6-rc, so the ordering lives in a generated
script (stage 2). Every script runs under `/bin/busybox sh` (Debian's `busybox`, one
package with no dependencies beyond libc); services' own commands run under bash. The
scripts are made from the shell files in framework/s6/sh/, with only the per-service lines
written by framework/s6/scripts.py (its docstring says how).

Layout in the image:
    /etc/s6/init                 stage 1, the entry point: `init [STATE_DIR]`
    /etc/s6/stage2               oneshot-pre, long-runs, oneshot-post, in order
    /etc/s6/lib.sh               shared shell functions (failure, shutdown, waits)
    /etc/s6/status               `status [STATE_DIR]`: one line per service; exit 0 = healthy
    /etc/s6/scan/.s6-svscan/     s6-svscan's finish and signal handlers
    /etc/s6/scan/<name>          links to the long-runs when no oneshot-pre runs first
    /etc/s6/services/<name>/     long-run service directories (copied to the state dir)
    /etc/s6/oneshot/<name>/      oneshot `run` and `log` scripts
"""

INIT = "/etc/s6/init"
STATUS = "/etc/s6/status"
DEFAULT_STATE = "/run/s6"
# Packages the generated scripts need in the image.
PACKAGES = ["s6", "execline", "busybox", "bash"]
# `readiness: sd-notify` listens on a NOTIFY_SOCKET (a datagram socket, which neither the
# shell nor s6 can receive on) with socat.
NOTIFY_PACKAGES = ["socat"]
NOTIFY_RECORD = "/etc/s6/notify-record"
