"""The usual Docker clients on the VM's Docker: docker-py through Machine.docker_host."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import docker
import pytest

from framework.net import free_port


@pytest.mark.image("hello")
def test_docker_py_runs_inspects_and_reads_logs(vm, image):
    # The URL (and a forwarded port) are taken first and outlive the restore of the snapshot
    # with hello loaded (load_image restores it: a new QEMU process) at the same address.
    url = vm.docker_host
    socket_path = Path(url.removeprefix("unix://"))
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    ssh_port = free_port()
    vm.forward_port(ssh_port, 22)
    ref = vm.load_image(image("hello"))
    with socket.create_connection(("127.0.0.1", ssh_port), timeout=30) as conn:
        assert conn.recv(4).startswith(b"SSH-"), "the forward is set up again after a restore"

    client = docker.DockerClient(base_url=url, timeout=120)
    try:
        assert client.ping()
        container = client.containers.run(ref, detach=True, name="hello-py")
        assert container.wait(timeout=120)["StatusCode"] == 0
        assert "Hello, world!" in container.logs().decode()
        container.reload()
        assert container.image.id == client.images.get(ref).id
        assert container.attrs["Config"]["Entrypoint"] == ["/usr/bin/hello"]
        assert container.attrs["State"]["ExitCode"] == 0
        # The Machine's own helpers see what docker-py did.
        assert "hello-py" in vm.containers()
        # Another process of this user reaches it through DOCKER_HOST alone.
        listed = subprocess.run(
            [sys.executable, "-c", "import docker; "
             "print([c.name for c in docker.from_env().containers.list(all=True)])"],
            env={**os.environ, "DOCKER_HOST": url}, capture_output=True, text=True,
            timeout=120, check=True)
        assert listed.stdout == "['hello-py']\n"
        # More connections at once than sshd's 10 sessions per SSH connection, all kept
        # open: the tunnel takes more connections, and the Machine's own commands still run.
        with ExitStack() as stack:
            for _ in range(12):
                conn = stack.enter_context(socket.socket(socket.AF_UNIX))
                conn.settimeout(60)
                conn.connect(str(socket_path))
                conn.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
                assert conn.recv(4096).startswith(b"HTTP/1.1 200 OK")
            assert vm.succeed("echo still mine") == "still mine\n"
    finally:
        client.close()
    vm.crash()
    assert not socket_path.exists(), "the socket goes with the VM"
