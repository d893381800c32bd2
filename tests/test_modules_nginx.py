"""services.nginx at evaluation level: what it adds and the nginx.conf it writes.

That nginx accepts the file is checked with `nginx -t` in the sandbox tier."""

from __future__ import annotations

from pathlib import Path

from module_defs import evaluate_yaml

from framework.options import evaluate

IMAGES = Path(__file__).resolve().parent.parent / "images"


def nginx_conf(config: dict) -> str:
    return config["environment"]["etc"]["nginx/nginx.conf"]["text"]


def test_disabled_nginx_adds_nothing(tmp_path):
    config = evaluate_yaml(tmp_path, "image: {name: t}").config
    assert config["systemd"]["services"] == {}
    assert config["users"]["users"] == {}
    assert "nginx/nginx.conf" not in config["environment"]["etc"]


def test_enabled_nginx_adds_package_user_group_and_a_translated_service(tmp_path):
    result = evaluate_yaml(tmp_path, "image: {name: t}\nservices: {nginx: {enable: true}}")
    config = result.config
    assert "nginx" in config["environment"]["systemPackages"]
    nginx_user = config["users"]["users"]["nginx"]
    assert nginx_user["isSystemUser"] is True
    assert nginx_user["group"] == "nginx"
    assert "nginx" in config["users"]["groups"]
    service = config["systemd"]["services"]["nginx"]
    assert service["serviceConfig"]["ExecStart"] == "/usr/sbin/nginx -c /etc/nginx/nginx.conf"
    assert "/usr/sbin/nginx -t -q -c /etc/nginx/nginx.conf" in service["preStart"]
    assert "mkdir -p /run/nginx /var/cache/nginx /var/log/nginx" in service["preStart"]
    s6 = config["s6"]["services"]["nginx"]
    assert s6["type"] == "long-run"
    assert s6["script"].endswith("exec /usr/sbin/nginx -c /etc/nginx/nginx.conf\n")
    assert "coreutils" in s6["path"]  # for preStart's mkdir
    assert result.warnings == []


def test_the_configuration_suits_a_container(tmp_path):
    conf = nginx_conf(
        evaluate_yaml(tmp_path, "image: {name: t}\nservices: {nginx: {enable: true}}").config
    )
    for line in ["daemon off;", "error_log stderr;", "access_log /dev/stdout;",
                 "pid /run/nginx/nginx.pid;", "include /etc/nginx/mime.types;",
                 "client_body_temp_path /var/cache/nginx/client_body;", "user nginx nginx;"]:
        assert line in conf
    # As in NixOS, no virtual host defined means `localhost` on port 80.
    assert "    server {\n        listen 0.0.0.0:80;\n        server_name localhost;\n    }" in conf
    assert conf.count("{") == conf.count("}")


def test_virtual_hosts_locations_and_appended_http_config(tmp_path):
    conf = nginx_conf(evaluate_yaml(tmp_path, r"""
        image: {name: t}
        services:
          nginx:
            enable: true
            appendHttpConfig: "server_tokens off;"
            virtualHosts:
              a.example:
                root: /srv/a
                listen: [{addr: "::", port: 8080}, {addr: 127.0.0.1, port: 81}]
                locations:
                  /plop: {return: 200 plop}
                  /api/:
                    proxyPass: http://127.0.0.1:9000
                    extraConfig: "proxy_set_header Host $host;"
                  "~ \\.txt$": {root: /srv/txt}
    """).config)
    server = conf[conf.index("    server {"):]
    assert server == (
        "    server {\n"
        "        listen [::]:8080;\n"
        "        listen 127.0.0.1:81;\n"
        "        server_name a.example;\n"
        "        root /srv/a;\n"
        "\n"
        "        location /plop {\n"
        "            return 200 plop;\n"
        "        }\n"
        "\n"
        "        location /api/ {\n"
        "            proxy_pass http://127.0.0.1:9000;\n"
        "            proxy_set_header Host $host;\n"
        "        }\n"
        "\n"
        "        location ~ \\.txt$ {\n"
        "            root /srv/txt;\n"
        "        }\n"
        "    }\n"
        "\n"
        "    server_tokens off;\n"
        "}\n"
    )


def test_the_service_can_be_overridden_with_force(tmp_path):
    config = evaluate_yaml(tmp_path, """
        image: {name: t}
        services: {nginx: {enable: true}}
        systemd:
          services:
            nginx:
              serviceConfig: {ExecStart: !force /usr/sbin/nginx -c /etc/nginx/other.conf}
    """).config
    assert config["s6"]["services"]["nginx"]["script"].endswith(
        "exec /usr/sbin/nginx -c /etc/nginx/other.conf\n"
    )


def test_nginx_image_serves_plop_on_port_80():
    config = evaluate(IMAGES / "nginx.yaml").config
    conf = nginx_conf(config)
    assert "listen 0.0.0.0:80;" in conf
    assert "location /plop {\n            return 200 plop;\n        }" in conf
    assert config["image"]["exposedPorts"] == [80]
    assert config["systemd"]["services"]["nginx"]["serviceConfig"]["Type"] == "simple"
