"""Launcher: enter a new user + mount namespace, become its root, mount the writable
overlay root, then exec the given command (bwrap).

Run by root, the namespace maps a whole range of unprivileged host ids (so services may
switch users); only a process outside may write such a map, so the caller writes
uid_map/gid_map and then sends one line, "go", on our stdin. Run by anyone else, we map
just the caller's own uid and gid to 0 ourselves.

A standalone script (no package imports), so it starts in a few milliseconds:
`python3 -S -E userns.py LOWERS UPPER WORK MERGED -- COMMAND...` (LOWERS joined by ":").
"""

import ctypes
import os
import shutil
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000


def main(argv: list[str]) -> int:
    lowers, upper, work, merged, sep, *command = argv
    if sep != "--" or not command:
        print("usage: userns.py LOWERS UPPER WORK MERGED -- COMMAND...", file=sys.stderr)
        return 2
    # Resolved now: after the switch, the host's module files may no longer be readable.
    program = shutil.which(command[0]) or command[0]
    uid, gid = os.getuid(), os.getgid()  # before unshare: unmapped ids read as 65534
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        print(f"userns: unshare: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 111
    # Opened in the new mount namespace (overlay clones only its own mounts) but before
    # the switch to the mapped uid: until then we still own what the caller owns, such as
    # the root cache under a 0700 home. The mount names them through /proc/self/fd.
    lower_fds = [os.open(p, os.O_PATH | os.O_DIRECTORY) for p in lowers.split(":")]
    if uid == 0:
        if sys.stdin.buffer.readline() != b"go\n":
            return 111
    else:
        for name, text in (("uid_map", f"0 {uid} 1"), ("setgroups", "deny"),
                           ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as out:
                out.write(text)
    if uid == 0:
        os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    lowerdir = ":".join(f"/proc/self/fd/{fd}" for fd in lower_fds)
    options = f"lowerdir={lowerdir},upperdir={upper},workdir={work},userxattr".encode()
    if libc.mount(b"overlay", merged.encode(), b"overlay", 0, options) != 0:
        print(f"userns: mounting the overlay root: {os.strerror(ctypes.get_errno())}",
              file=sys.stderr)
        return 111
    for fd in lower_fds:
        os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.execv(program, command)
    return 111


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
