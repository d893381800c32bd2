"""SSH into the VM with paramiko (interactive shells; `--keep-vm`'s attach): per-VM keys and
the login."""

from __future__ import annotations

import base64
import io
import socket
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


@dataclass(frozen=True)
class KeyPair:
    private_openssh: bytes = field(repr=False)
    public_line: str  # "ssh-ed25519 AAAA... comment"

    @classmethod
    def generate(cls, comment: str) -> KeyPair:
        key = ed25519.Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
        return cls(private, f"{public.decode()} {comment}")

    def paramiko_key(self) -> paramiko.PKey:
        return paramiko.Ed25519Key.from_private_key(io.StringIO(self.private_openssh.decode()))

    def save(self, path: Path) -> None:
        path.write_bytes(self.private_openssh)
        path.chmod(0o600)
        path.with_suffix(".pub").write_text(self.public_line + "\n")

    @classmethod
    def load(cls, path: Path) -> KeyPair:
        return cls(path.read_bytes(), path.with_suffix(".pub").read_text().strip())

    def b64(self, which: str) -> str:
        data = self.private_openssh if which == "private" else self.public_line.encode()
        return base64.b64encode(data).decode()


class PinnedHostKey(paramiko.MissingHostKeyPolicy):
    """Accepts only the host key the VM was given at boot."""

    def __init__(self, expected: paramiko.PKey) -> None:
        self.expected = expected

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        if key.get_base64() != self.expected.get_base64():
            raise paramiko.SSHException(f"VM host key mismatch for {hostname}")


def sshd_socket(port: int, timeout: float) -> socket.socket | None:
    """A connection on which sshd has sent its banner, or None. QEMU's user networking
    accepts connections before the guest listens, so only the banner proves sshd is there;
    it is peeked, not read, so the same connection goes on to log in (under TCG each new
    connection costs sshd a noticeable fork)."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return None
    try:
        if sock.recv(4, socket.MSG_PEEK) == b"SSH-":
            return sock
    except OSError:
        pass
    sock.close()
    return None


def connect(sock: socket.socket, user_key: KeyPair, host_key: KeyPair,
            timeout: float) -> paramiko.SSHClient:
    """Logs in as root over `sock` (from sshd_socket)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(PinnedHostKey(host_key.paramiko_key()))
    client.connect("127.0.0.1", username="root", pkey=user_key.paramiko_key(), sock=sock,
                   timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                   allow_agent=False, look_for_keys=False)
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(5)
    return client
