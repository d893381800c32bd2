"""Several containers per test: a user-defined network on which containers reach each other
by name (Machine.create_network, run_container(network=...))."""

from __future__ import annotations

import pytest

from framework.errors import UserError

HERE_IMAGES = "vmtests/images"


@pytest.mark.image("nginx")
def test_nginx_proxies_to_a_backend_by_name(vm, image):
    backend = vm.load_image(image(f"{HERE_IMAGES}/httpd-backend.yaml"))
    proxy = vm.load_image(image(f"{HERE_IMAGES}/nginx-proxy.yaml"))
    vm.create_network("app")
    # The backend first: nginx resolves `backend` (Docker's DNS on `app`) when it starts.
    vm.run_container(backend, name="backend", network="app")
    vm.run_container(proxy, name="proxy", network="app")
    networks = vm.api("GET", "/containers/proxy/json")["NetworkSettings"]["Networks"]
    assert list(networks) == ["app"], "the proxy is on the user-defined network only"
    address = networks["app"]["IPAddress"]
    out = vm.wait_while_running("proxy", f"curl -sf http://{address}/", timeout=60)
    assert out == "answered by the backend container\n"
    # The request went through nginx (its access log) to busybox's httpd (its -v log).
    assert "GET /" in vm.container_logs("proxy")
    assert "response:200" in vm.container_logs("backend")


def test_network_and_container_names_are_checked(vm):
    with pytest.raises(UserError, match="invalid network name"):
        vm.create_network("app; reboot")
    with pytest.raises(UserError, match="invalid container name"):
        vm.run_container("hello", name="-x")
    with pytest.raises(UserError, match="invalid network name"):
        vm.run_container("hello", name="ok", network="$(reboot)")
    assert not vm.is_up(), "refused before anything ran in the VM"
