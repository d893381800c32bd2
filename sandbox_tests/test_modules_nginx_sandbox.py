"""services.nginx in the sandbox: the generated configuration passes `nginx -t` and the
server answers on loopback (port 80: the sandbox's root owns its network namespace)."""

from __future__ import annotations

import pytest


@pytest.mark.image("nginx")
def test_nginx_configuration_is_valid_and_plop_answers(sandbox):
    box = sandbox("../images/nginx.yaml")
    assert box.wait_until_succeeds("busybox wget -qO- http://127.0.0.1/plop") == "plop"
    # nginx -t reopens its logs, /dev/stdout and /dev/stderr, by path.
    assert "test is successful" in box.succeed("/usr/sbin/nginx -t -c /etc/nginx/nginx.conf")
    assert "Served by nginx" in box.succeed("busybox wget -qO- http://127.0.0.1/")
    # access_log goes to the container's output, prefixed with the service name.
    box.wait_for_log(r'^nginx: 127\.0\.0\.1 .*"GET /plop HTTP/1\.1" 200 4 ')
    # The master runs as root and its workers as the module's nginx user.
    assert "nginx" in box.succeed("busybox ps -o user,args | busybox grep 'worker process'")


@pytest.mark.image("s6")
def test_s6_image_runs_nginx_as_a_plain_s6_service(sandbox):
    box = sandbox("../images/s6.yaml")
    assert box.wait_until_succeeds("busybox wget -qO- http://127.0.0.1/") == "nginx under s6\n"
