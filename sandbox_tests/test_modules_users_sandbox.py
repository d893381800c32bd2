"""users.users and environment.etc as they land in the image (SPEC section 3)."""

from __future__ import annotations

import pytest


@pytest.mark.image("example")
def test_alice_exists_with_her_home_and_an_etc_file_has_its_mode_and_owner(sandbox):
    box = sandbox("images/users-etc.yaml")
    box.wait_for_log("all services started")
    passwd = box.succeed("busybox grep '^alice:' /etc/passwd").strip().split(":")
    assert passwd[0] == "alice" and passwd[5] == "/home/alice"
    assert int(passwd[2]) >= 1000
    assert box.succeed("busybox stat -c '%U' /home/alice") == "alice\n"
    assert box.succeed("busybox stat -c '%a %U %G' /etc/alice.conf") == "640 alice friends\n"
    assert box.read_file("/etc/alice.conf") == "only alice and her friends read this\n"
    # The mode is enforced: alice reads her file, bob (not a friend) cannot. Numeric ids,
    # so the check does not depend on the image's NSS configuration.
    friends = box.succeed("busybox grep '^friends:' /etc/group").split(":")[2]
    bob = box.succeed("busybox grep '^bob:' /etc/passwd").split(":")
    box.succeed(f"s6-applyuidgid -u {passwd[2]} -g {passwd[3]} -G {friends} "
                "busybox cat /etc/alice.conf")
    denied = box.fail(f"s6-applyuidgid -u {bob[2]} -g {bob[3]} -G '' "
                      "busybox cat /etc/alice.conf")
    assert "Permission denied" in denied
