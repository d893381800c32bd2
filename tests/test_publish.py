"""cimages push and copy against the real parts: Debian's docker-registry (distribution 2.8)
on a free 127.0.0.1 port with its own storage and config (one with htpasswd auth), skopeo,
and Debian's podman with a store of the test's own."""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from framework.builder import build
from framework.errors import UserError
from framework.net import free_port
from framework.publish import auth
from framework.publish.copy import parse_destination
from framework.publish.local_registry import CountingProxy, LocalRegistry
from framework.publish.push import push_layout
from framework.publish.reference import parse
from framework.publish.registry import _challenge

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "images" / "hello.yaml"

# The tests of the real parts (a registry, skopeo, podman) are slow; the parsing ones are not.
slow = pytest.mark.slow


def cimages(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "framework", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=300)


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True,
                          timeout=120)


@pytest.fixture
def registry(tmp_path):
    with LocalRegistry(tmp_path / "registry") as running:
        yield running


@pytest.fixture(params=["htpasswd", "token"])
def auth_registry(request, tmp_path):
    """Basic authentication (htpasswd), and Bearer tokens from a token service (as Docker
    Hub, GHCR or Harbor)."""
    password = "pw-" + secrets.token_hex(12)
    with LocalRegistry(tmp_path / "auth-registry", users={"alice": password},
                       auth=request.param) as running:
        yield running, password


@pytest.fixture(scope="module")
def hello(tmp_path_factory):
    return build(HELLO, tmp_path_factory.mktemp("hello-out"), frozen=True)


def push_json(definition: Path, ref: str, out: Path, *extra: str,
              env: dict[str, str] | None = None) -> dict:
    done = cimages("push", str(definition), ref, "--frozen", "--tls-verify=false", "-o",
                   str(out), "--json", *extra, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def manifest_status(address: str, repository: str, tag: str) -> int:
    conn = http.client.HTTPConnection(address, timeout=10)
    try:
        conn.request("HEAD", f"/v2/{repository}/manifests/{tag}", headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json"})
        return conn.getresponse().status
    finally:
        conn.close()


@slow
def test_push_then_inspect_and_pull_by_digest_give_the_same_digest(registry, tmp_path):
    digestfile = tmp_path / "digest"
    pushed = push_json(HELLO, f"docker://{registry.address}/hello:1.2", tmp_path / "out",
                       "--digestfile", str(digestfile))
    digest = pushed["digest"]
    assert digestfile.read_text() == digest and pushed["reference"].endswith("/hello:1.2")
    inspected = json.loads(skopeo("inspect", "--tls-verify=false",
                                  f"docker://{registry.address}/hello:1.2").stdout)
    assert inspected["Digest"] == digest
    # A pull by digest: the registry's manifest is the built one, byte for byte.
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.address}/hello@{digest}",
           f"oci:{tmp_path / 'pulled'}:pulled")
    index = json.loads((tmp_path / "pulled/index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [digest]
    built = json.loads((tmp_path / "out/oci/blobs/sha256" / digest[7:]).read_text())
    assert {layer["digest"] for layer in built["layers"]} == \
        set(json.loads(skopeo("inspect", "--tls-verify=false",
                              f"docker://{registry.address}/hello@{digest}").stdout)["Layers"])
    # The tag defaults to the image's own.
    assert push_json(HELLO, f"{registry.address}/hello", tmp_path / "out")["reference"] \
        .endswith("/hello:latest")


@slow
def test_second_push_uploads_no_layer_bytes(registry, tmp_path):
    """Counted twice: by the push, and by a relay that counts what the client sends."""
    with CountingProxy(registry.port) as proxy:
        first = push_json(HELLO, f"{proxy.address}/hello:1", tmp_path / "out")
        first_wire = proxy.reset()
        second = push_json(HELLO, f"{proxy.address}/hello:1", tmp_path / "out")
        second_wire = proxy.reset()
    layers = first["blobs"] - 1
    assert first["sent"]["blobs"] == first["blobs"] and first_wire > first["sent"]["bytes"]
    # The tag names this manifest already: nothing is sent, not even the manifest.
    assert second["sent"] == {"blobs": 0, "bytes": 0, "layerBytes": 0, "configBytes": 0,
                              "manifestBytes": 0}
    assert second["skipped"]["blobs"] == layers + 1 and second["skipped"]["present"] == layers + 1
    # On the wire: one HEAD per blob and one for the tag, nothing of the layers' megabytes.
    assert second_wire < 300 * (layers + 4)
    assert first["sent"]["layerBytes"] > 1_000_000 and first["sent"]["manifestBytes"] > 0
    # Another tag of the same image: the manifest alone.
    third = push_json(HELLO, f"{registry.address}/hello:2", tmp_path / "out")
    assert third["sent"]["blobs"] == 0 and third["sent"]["bytes"] == \
        third["sent"]["manifestBytes"] > 0


@slow
def test_a_blob_in_another_repository_is_mounted_not_uploaded(registry, tmp_path):
    push_json(HELLO, f"{registry.address}/team/hello:1", tmp_path / "out")
    other = push_json(HELLO, f"{registry.address}/other/hello:1", tmp_path / "out")
    assert other["sent"]["blobs"] == 0
    assert other["skipped"]["mounted"] == other["blobs"]
    assert json.loads(skopeo("inspect", "--tls-verify=false",
                             f"docker://{registry.address}/other/hello:1").stdout)["Digest"] \
        == other["digest"]


@slow
def test_an_interrupted_push_leaves_no_manifest_and_a_retry_resumes(registry, hello):
    ref = parse(f"{registry.address}/hello:half", "half")
    settled: list[str] = []

    def interrupt_after_three(kind: str, digest: str, size: int) -> None:
        settled.append(digest)
        if len(settled) == 3:
            raise KeyboardInterrupt  # what Ctrl-C does half-way

    with pytest.raises(KeyboardInterrupt):
        push_layout(hello.oci_dir, hello.digest, ref, tls_verify=False,
                    observer=interrupt_after_three)
    assert manifest_status(registry.address, "hello", "half") == 404
    assert len(registry.stored_blobs()) >= 3
    retry = push_layout(hello.oci_dir, hello.digest, ref, tls_verify=False)
    assert set(settled[:3]) <= set(retry.present)
    assert len(retry.sent) + len(retry.present) == len(hello.layers) + 1
    assert manifest_status(registry.address, "hello", "half") == 200


@slow
def test_a_push_killed_mid_upload_leaves_no_manifest_and_a_retry_resumes(registry, tmp_path):
    """SIGKILL (no clean-up at all) once a few MB of nginx's 34 MB went out."""
    nginx = ROOT / "images" / "nginx.yaml"
    build(nginx, tmp_path / "out", frozen=True)  # the push below then only pushes
    with CountingProxy(registry.port) as proxy:
        push = subprocess.Popen([sys.executable, "-m", "framework", "push", str(nginx),
                                 f"{proxy.address}/nginx:killed", "--frozen", "-o",
                                 str(tmp_path / "out"), "--tls-verify=false"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while proxy.sent < 4_000_000 and push.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            push.kill()
            push.wait(timeout=30)
        assert push.returncode == -signal.SIGKILL, "the push ended before it was killed"
    assert manifest_status(registry.address, "nginx", "killed") == 404
    retry = push_json(nginx, f"{registry.address}/nginx:killed", tmp_path / "out")
    assert retry["skipped"]["present"] > 0 and retry["sent"]["blobs"] > 0
    assert manifest_status(registry.address, "nginx", "killed") == 200


def auth_file(path: Path, address: str, user: str, password: str) -> Path:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {address: {"auth": token}}}))
    return path


@slow
def test_push_to_an_authenticating_registry(auth_registry, tmp_path):
    running, password = auth_registry
    address = running.address
    good = auth_file(tmp_path / "auth.json", address, "alice", password)
    pushed = push_json(HELLO, f"{address}/private/hello:1", tmp_path / "out",
                       env={"REGISTRY_AUTH_FILE": str(good)})
    assert pushed["sent"]["blobs"] == pushed["blobs"]
    if running.auth == "token":  # one token for the push's scope, not one per request
        granted = [c for c in running.tokens.issued if c["sub"] == "alice"]
        assert len(granted) == 1 and granted[0]["access"] == [
            {"type": "repository", "name": "private/hello", "actions": ["pull", "push"]}]
    # A mount needs pull access to the source repository too: the token asks for it.
    other = push_json(HELLO, f"{address}/private/other:1", tmp_path / "out",
                      env={"REGISTRY_AUTH_FILE": str(good)})
    assert other["skipped"]["mounted"] == other["blobs"]
    home = tmp_path / "home"
    home.mkdir()
    no_credentials = {"HOME": str(home), "REGISTRY_AUTH_FILE": "", "XDG_RUNTIME_DIR": "",
                      "DOCKER_CONFIG": ""}
    refused = cimages("push", str(HELLO), f"{address}/private/hello:1", "--frozen",
                      "--tls-verify=false", "-o", str(tmp_path / "out"), env=no_credentials)
    assert refused.returncode == 2
    assert "asks for credentials" in refused.stderr and "login" in refused.stderr
    wrong = "wrong-" + secrets.token_hex(8)
    bad = auth_file(tmp_path / "bad.json", address, "alice", wrong)
    refused = cimages("push", str(HELLO), f"{address}/private/hello:1", "--frozen",
                      "--tls-verify=false", "-o", str(tmp_path / "out"), "--authfile", str(bad))
    assert refused.returncode == 2 and "refused the credentials of user `alice`" in refused.stderr
    for secret in (password, wrong, base64.b64encode(f"alice:{wrong}".encode()).decode()):
        assert secret not in refused.stdout + refused.stderr


@slow
@pytest.mark.parametrize(("args", "expected"), [
    (["push", "127.0.0.1:{closed}/hello:1", "--tls-verify=false"], "is not reachable"),
    (["push", "{registry}/hello:1"], "pass --tls-verify=false"),
    (["push", "localhost:5000/Hello:1"], "is not a registry reference"),
    (["push", "localhost:5000/hello:-1"], "is not a registry reference"),
    (["push", "oci-archive:/tmp/x.tar"], "use `cimages copy"),
    (["copy", "ftp://example/hello"], "names no destination"),
    (["copy", "docker-daemon:hello:1"], "no Docker daemon answers"),
])
def test_bad_input_is_one_message_and_exit_2(registry, tmp_path, args, expected):
    args = [a.format(closed=free_port(), registry=registry.address) for a in args]
    done = cimages(args[0], str(HELLO), *args[1:], "--frozen", "-o", str(tmp_path / "out"),
                   env={"DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"})
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@slow
def test_copy_to_archives_is_readable_by_skopeo(hello, tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    oci_archive, docker_archive = archives / "hello.oci.tar", archives / "hello.docker.tar"
    for destination in (f"oci-archive:{oci_archive}", f"docker-archive:{docker_archive}"):
        done = cimages("copy", str(HELLO), destination, "--frozen", "-o",
                       str(tmp_path / "out"))
        assert done.returncode == 0, done.stderr
    assert json.loads(skopeo("inspect", f"oci-archive:{oci_archive}").stdout)["Digest"] == \
        hello.digest
    inspected = json.loads(skopeo("inspect", f"docker-archive:{docker_archive}").stdout)
    assert len(inspected["Layers"]) == len(hello.layers)
    tags = json.loads(subprocess.run(["tar", "-xOf", str(docker_archive), "manifest.json"],
                                     capture_output=True, check=True).stdout)[0]["RepoTags"]
    assert tags == ["docker.io/library/hello:latest"]
    # A file that is no archive of that kind is not written over.
    precious = archives / "notes.txt"
    precious.write_text("mine")
    done = cimages("copy", str(HELLO), f"oci-archive:{precious}", "--frozen", "-o",
                   str(tmp_path / "out"))
    assert done.returncode == 2 and "is not an oci-archive" in done.stderr
    assert precious.read_text() == "mine"
    assert sorted(p.name for p in archives.iterdir()) == \
        ["hello.docker.tar", "hello.oci.tar", "notes.txt"]  # no temporary file left


@pytest.fixture
def podman_store():
    """A store of the test's own (podman wants a runroot under 50 characters)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: `apt-get install podman` (make setup does)")
    folder = Path(tempfile.mkdtemp(prefix="cimages-podman-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@slow
def test_copy_to_podman_runs_hello(podman_store, tmp_path):
    root, run = podman_store / "root", podman_store / "run"
    store = [f"--root={root}", f"--runroot={run}", "--storage-driver=vfs",
             f"--tmpdir={podman_store}/tmp"]
    destination = f"containers-storage:[vfs@{root}+{run}]hello:copied"
    done = cimages("copy", str(HELLO), destination, "--frozen", "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    # runc, not crun: this host's hybrid cgroups are refused by Debian 12's crun. The
    # explicit limits: podman's defaults exceed the hard limits a container host may set.
    runtime = ["--runtime", "runc"] if shutil.which("runc") else []
    ran = subprocess.run(["podman", *store, *runtime, "run", "--rm", "--network=none",
                          "--ulimit=nofile=1024:1024", "--ulimit=nproc=1024:1024",
                          "hello:copied"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "Hello, world!" in ran.stdout


# Parsing, without a registry -------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("localhost:5000/web:1.2", ("localhost:5000", "web", "1.2")),
    ("docker://127.0.0.1:5000/team/web", ("127.0.0.1:5000", "team/web", "latest")),
    ("nginx", ("docker.io", "library/nginx", "latest")),
    ("someone/app:v1", ("docker.io", "someone/app", "v1")),
    ("ghcr.io/o/r.x_y__z-w:T_1.0", ("ghcr.io", "o/r.x_y__z-w", "T_1.0")),
    ("[::1]:5000/web:1", ("[::1]:5000", "web", "1")),
    ("localhost/web", ("localhost", "web", "latest")),
])
def test_references_parse_as_docker_does(text, expected):
    ref = parse(text, "latest")
    assert (ref.registry, ref.repository, ref.tag) == expected
    assert ref.endpoint == ("registry-1.docker.io" if expected[0] == "docker.io"
                            else expected[0])


@pytest.mark.parametrize(("text", "says"), [
    ("", "it is empty"),
    ("localhost:5000/Web:1", "`Web`"),
    ("localhost:5000/web:-1", "the tag `-1`"),
    ("localhost:5000/web@sha256:" + "0" * 64, "not a digest"),
    ("localhost:5000/", "the name component ``"),
    ("local_host:5000/web", "is not a host[:port]"),
    ("localhost:5000/" + "a" * 260, "longer than 255"),
    ("containers-storage:web", "use `cimages copy"),
    ("docker-daemon:web:1", "use `cimages copy"),
])
def test_a_bad_reference_is_said_with_the_syntax(text, says):
    with pytest.raises(UserError) as raised:
        parse(text, "latest")
    assert says in str(raised.value)


def test_auth_files_are_searched_in_containers_auth_order(tmp_path, monkeypatch):
    def write(path: Path, key: str, user: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        token = base64.b64encode(f"{user}:secret-of-{user}".encode()).decode()
        path.write_text(json.dumps({"auths": {key: {"auth": token}}}))
        return path

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert auth.find("r.example:5000", "web") is None
    write(tmp_path / "home/.docker/config.json", "https://r.example:5000/v2/", "docker")
    assert auth.find("r.example:5000", "web").username == "docker"
    write(tmp_path / "run/containers/auth.json", "r.example:5000", "podman")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert auth.find("r.example:5000", "web").username == "podman"
    env_file = write(tmp_path / "env.json", "r.example:5000/team", "team")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(env_file))
    assert auth.find("r.example:5000", "team/web").username == "team"  # repository-scoped
    assert auth.find("r.example:5000", "other").username == "podman"  # next file
    hub = write(tmp_path / "hub.json", "https://index.docker.io/v1/", "hubuser")
    assert auth.find("docker.io", "library/nginx", hub).username == "hubuser"
    found = auth.find("r.example:5000", "web", env_file)
    assert found is None  # --authfile alone is searched
    assert "secret" not in repr(auth.find("r.example:5000", "web"))


def test_a_broken_auth_file_is_said_without_its_content(tmp_path):
    broken = tmp_path / "auth.json"
    broken.write_text('{"auths": {"r:1": {"auth": "c2VjcmV0LXZhbHVl"')  # cut off
    with pytest.raises(UserError) as raised:
        auth.find("r:1", "web", broken)
    assert str(broken) in str(raised.value) and "c2VjcmV0" not in str(raised.value)
    broken.write_text(json.dumps({"auths": {"r:1": {"auth": "bm8tY29sb24="}}}))  # no-colon
    with pytest.raises(UserError, match="not base64 of user:password"):
        auth.find("r:1", "web", broken)
    with pytest.raises(UserError, match="does not exist"):
        auth.find("r:1", "web", tmp_path / "missing.json")


def test_credential_helpers_are_run(tmp_path, monkeypatch):
    helper = tmp_path / "bin/docker-credential-cimagestest"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread server\n[ "$1" = get ] || exit 1\n'
                      'echo "{\\"Username\\":\\"helped\\",\\"Secret\\":\\"s-$server\\"}"\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {"r.example": "cimagestest"}}))
    found = auth.find("r.example", "web", config)
    assert (found.username, found.password) == ("helped", "s-r.example")
    config.write_text(json.dumps({"credsStore": "absent"}))
    with pytest.raises(UserError, match="docker-credential-absent is not on PATH"):
        auth.find("r.example", "web", config)


@pytest.mark.parametrize(("text", "target"), [
    ("docker-daemon:hello", "docker-daemon:hello:latest"),
    ("docker-daemon:localhost:5000/team/hello:2", "docker-daemon:localhost:5000/team/hello:2"),
    ("containers-storage:hello:x", "containers-storage:hello:x"),
    ("containers-storage:[vfs@/tmp/r+/tmp/rr]hello",
     "containers-storage:[vfs@/tmp/r+/tmp/rr]hello:latest"),
    ("oci-archive:/tmp/h.tar", "oci-archive:/tmp/h.tar:latest"),
    ("docker-archive:/tmp/h.tar", "docker-archive:/tmp/h.tar:hello:latest"),
    ("docker-archive:/tmp/h.tar:web:2", "docker-archive:/tmp/h.tar:web:2"),
    ("docker://localhost:5000/hello", "docker://localhost:5000/hello"),
])
def test_destinations_are_completed_with_the_images_tag(text, target):
    assert str(parse_destination(text, "hello", "latest")) == target


@pytest.mark.parametrize(("text", "says"), [
    ("hello:latest", "names no destination"),
    ("dir:/tmp/x", "names no destination"),
    ("docker-daemon:", "names no image"),
    ("docker-daemon:Hello:1", "`Hello`"),
    ("docker-daemon:hello@sha256:" + "0" * 64, "names a digest"),
    ("containers-storage:[oops", "[DRIVER@ROOT+RUNROOT]"),
    ("oci-archive:", "names no file"),
])
def test_a_bad_destination_is_said(text, says):
    with pytest.raises(UserError) as raised:
        parse_destination(text, "hello", "latest")
    assert says in str(raised.value)


def test_challenges_parse():
    assert _challenge('Bearer realm="https://auth.example/token",service="reg",'
                      'scope="repository:a/b:pull,push"') == ("bearer", {
                          "realm": "https://auth.example/token", "service": "reg",
                          "scope": "repository:a/b:pull,push"})
    assert _challenge('Basic realm="x"') == ("basic", {"realm": "x"})
