"""The builder end to end: real .debs from Debian's archive, real skopeo and bubblewrap."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from framework.builder import build
from framework.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "images" / "hello.yaml"

pytestmark = pytest.mark.slow


def cimages(*args: str, env: dict[str, str] | None = None, umask: int = 0o022,
            cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framework", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, preexec_fn=lambda: os.umask(umask), timeout=300,
    )


def hello_variant(directory: Path, extra: dict | None = None, lock_edit=None) -> Path:
    """A definition with hello's packages in `directory`, using hello's committed lock."""
    definition = directory / "variant.yaml"
    body = {"image": {"name": "variant", "entryPoint": ["/usr/bin/hello"]},
            "environment": {"systemPackages": ["hello"]}}
    for key, value in (extra or {}).items():
        body.setdefault(key, {}).update(value)
    definition.write_text(yaml.safe_dump(body))
    lock = yaml.safe_load(HELLO.with_suffix(".lock").read_text())
    if lock_edit:
        lock_edit(lock)
    definition.with_suffix(".lock").write_text(yaml.safe_dump(lock))
    return definition


@pytest.fixture(scope="module")
def hello(tmp_path_factory):
    return build(HELLO, tmp_path_factory.mktemp("hello"), frozen=True)


def test_two_builds_in_different_places_give_one_digest(tmp_path):
    outputs = []
    for name, tz, umask in (("a", "UTC", 0o022), ("b", "Asia/Tokyo", 0o077)):
        done = cimages("build", str(HELLO), "--frozen", "-o", str(tmp_path / name),
                       env={"CIMAGES_CACHE": str(tmp_path / f"cache-{name}"), "TZ": tz},
                       umask=umask)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines()[1])
    assert outputs[0] == outputs[1] and outputs[0].startswith("digest:  sha256:")
    assert (tmp_path / "a/hello.tar").read_bytes() == (tmp_path / "b/hello.tar").read_bytes()


def test_skopeo_accepts_the_layout_and_the_root_runs_hello(hello, tmp_path):
    inspect = subprocess.run(["skopeo", "inspect", f"oci:{hello.oci_dir}"],
                             capture_output=True, text=True, timeout=60)
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Digest"] == hello.digest
    copy = subprocess.run(["skopeo", "copy", f"oci:{hello.oci_dir}",
                           f"docker-archive:{tmp_path / 'copy.tar'}:hello:latest"],
                          capture_output=True, text=True, timeout=60)
    assert copy.returncode == 0, copy.stderr
    archive = subprocess.run(["skopeo", "inspect", f"docker-archive:{hello.archive}"],
                             capture_output=True, text=True, timeout=60)
    assert archive.returncode == 0, archive.stderr
    assert len(json.loads(archive.stdout)["Layers"]) == len(hello.layers)

    root = tmp_path / "root"
    root.mkdir()
    for blob in hello.layers:
        subprocess.run(["tar", "-xzf", str(blob), "-C", str(root)], check=True, timeout=60)
    assert (root / "usr/bin/hello").is_file()
    assert os.readlink(root / "bin") == "usr/bin"
    assert (root / "var/lib/dpkg/status.d/hello").read_text().startswith("Package: hello\n")
    run = subprocess.run(["bwrap", "--bind", str(root), "/", "--proc", "/proc", "--dev", "/dev",
                          "--unshare-all", "/usr/bin/hello"],
                         capture_output=True, text=True, timeout=60)
    assert run.stdout == "Hello, world!\n", run.stderr


def test_history_sbom_and_maintainer_script_inventory(hello):
    blobs = hello.oci_dir / "blobs/sha256"
    index = json.loads((hello.oci_dir / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    history = [h["created_by"] for h in config["history"]]
    assert len(history) == len(hello.layers)
    assert "cimages: package hello 2.10-3" in history
    assert history[-1].startswith("cimages: generated files")
    sbom = json.loads(hello.sbom.read_text())
    assert sbom["spdxVersion"] == "SPDX-2.3"
    assert {p["name"] for p in sbom["packages"]} >= {"hello", "libc6"}
    inventory = json.loads((hello.sbom.parent / "maintainer-scripts.json").read_text())
    assert "libc6" in inventory


def test_the_empty_image_is_under_one_megabyte(tmp_path):
    result = build(ROOT / "images/empty.yaml", tmp_path, frozen=True)
    assert result.size < 1_000_000
    assert result.archive.stat().st_size < 1_000_000


def test_rebuilds_reuse_layers_and_one_etc_change_rewrites_only_the_last(tmp_path):
    # Text unique to this run, so the shared layer cache cannot already hold the new layer.
    motd = f"one {tmp_path}\n"
    definition = hello_variant(tmp_path, {"environment": {"etc": {"motd": {"text": motd}}}})
    first = build(definition, tmp_path / "out")
    stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in first.layers]
    again = build(definition, tmp_path / "out")
    assert again.digest == first.digest and again.written_layers == 0
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in again.layers] == stamps
    definition.write_text(definition.read_text().replace("one /", "two /"))
    changed = build(definition, tmp_path / "out")
    assert changed.written_layers == 1 and changed.digest != first.digest
    assert changed.layers[:-1] == first.layers[:-1] and changed.layers[-1] != first.layers[-1]
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in changed.layers[:-1]] == stamps[:-1]


def test_max_layers_merges_the_least_popular_packages(tmp_path):
    result = build(hello_variant(tmp_path, {"image": {"maxLayers": 4}}), tmp_path / "out")
    assert len(result.layers) == 4  # base, libc6, the three others, generated


def test_unknown_package_is_refused_with_a_suggestion(tmp_path):
    definition = tmp_path / "bad.yaml"
    definition.write_text("image: {name: bad}\nenvironment: {systemPackages: [helo]}\n")
    done = cimages("lock", str(definition))
    assert done.returncode == 2
    assert "unknown Debian package `helo`" in done.stderr and "hello" in done.stderr


def test_a_changed_package_list_is_refused_until_relocked(tmp_path):
    definition = hello_variant(tmp_path, {"environment": {"systemPackages": ["hello", "zlib1g"]}})
    done = cimages("build", str(definition))
    assert done.returncode == 2
    assert "added zlib1g" in done.stderr and "cimages lock" in done.stderr


def edit_hello(**fields):
    def edit(lock):
        for package in lock["packages"]:
            if package["name"] == "hello":
                package.update(fields)
                package.pop("layer", None)
    return edit


def test_a_locked_version_gone_from_the_archive_asks_for_lock_update(tmp_path):
    gone = "http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-0gone_amd64.deb"
    definition = hello_variant(tmp_path, lock_edit=edit_hello(version="2.10-0gone", url=gone,
                                                              sha256="0" * 64))
    done = cimages("build", str(definition), "-o", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "gone from the Debian archive" in done.stderr and "lock --update" in done.stderr


def test_a_hash_mismatch_fails_and_deletes_the_download(tmp_path):
    definition = hello_variant(tmp_path, lock_edit=edit_hello(sha256="1" * 64))
    cache = tmp_path / "cache"
    done = cimages("build", str(definition), "-o", str(tmp_path / "out"),
                   env={"CIMAGES_CACHE": str(cache)})
    assert done.returncode == 2
    assert "hash mismatch for hello" in done.stderr
    assert not list((cache / "debs").glob("*1111*")) and not list((cache / "debs").glob(".*"))


def test_no_network_is_a_clear_error(tmp_path):
    definition = hello_variant(tmp_path, lock_edit=edit_hello(sha256="2" * 64))
    done = cimages("build", str(definition), "-o", str(tmp_path / "out"),
                   env={"http_proxy": "http://127.0.0.1:9", "CIMAGES_CACHE": str(tmp_path)})
    assert done.returncode == 2
    assert "no network?" in done.stderr and "tried 3 times" in done.stderr


def make_deb(directory: Path, name: str, content: bytes) -> Path:
    tree = directory / name
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\n"
        f"Description: test\n")
    (tree / "usr/share/both").mkdir(parents=True)
    (tree / "usr/share/both/file").write_bytes(content)
    deb = directory / f"{name}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(deb)],
                   check=True, capture_output=True, timeout=60)
    return deb


def test_a_file_shipped_by_two_packages_names_both(tmp_path):
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    packages = []
    for name, content in (("pkg-one", b"1\n"), ("pkg-two", b"2\n")):
        deb = make_deb(tmp_path, name, content)
        sha = hashlib.sha256(deb.read_bytes()).hexdigest()
        shutil.copy(deb, cache / "debs" / f"{sha}.deb")
        packages.append({"name": name, "version": "1.0", "architecture": "all", "sha256": sha,
                         "size": deb.stat().st_size, "installedSize": 1,
                         # Never fetched: the .debs are in the cache already.
                         "url": f"http://localhost/{deb.name}", "depends": []})
    definition = tmp_path / "two.yaml"
    definition.write_text("image: {name: two}\n"
                          "environment: {systemPackages: [pkg-one, pkg-two]}\n")
    definition.with_suffix(".lock").write_text(yaml.safe_dump(
        {"request": ["pkg-one", "pkg-two"], "packages": packages}))
    done = cimages("build", str(definition), "--frozen", "-o", str(tmp_path / "out"),
                   env={"CIMAGES_CACHE": str(cache)})
    assert done.returncode == 2
    assert "/usr/share/both/file is shipped by both pkg-one and pkg-two" in done.stderr


def test_from_a_definition_puts_its_layers_first_and_inherits_its_config(hello, tmp_path):
    definition = tmp_path / "derived.yaml"
    definition.write_text(f"image: {{name: derived, from: {HELLO}, env: {{GREETING: hi}}}}\n")
    derived = build(definition, tmp_path / "out")
    assert [p.name for p in derived.layers[:-1]] == [p.name for p in hello.layers]
    config = json.loads(subprocess.run(
        ["skopeo", "inspect", "--config", f"oci:{derived.oci_dir}"], capture_output=True,
        text=True, check=True, timeout=60).stdout)["config"]
    assert config["Entrypoint"] == ["/usr/bin/hello"] and "GREETING=hi" in config["Env"]


def run_definition(directory: Path, lines: list[str]) -> Path:
    definition = directory / "run.yaml"
    definition.write_text(yaml.safe_dump({"image": {"name": "run", "interactive": True,
                                                    "run": lines}}))
    return definition


def layer_names(blob: Path) -> list[str]:
    import tarfile
    with tarfile.open(blob) as tar:
        return tar.getnames()


def test_image_run_lines_become_the_last_layer_with_whiteouts(tmp_path):
    result = build(run_definition(tmp_path, [
        f"mkdir -p /srv && echo {tmp_path.name} > /srv/index.html",
        "rm /usr/share/doc/dash/copyright",
    ]), tmp_path / "out")
    names = layer_names(result.layers[-1])
    assert "srv/index.html" in names and "usr/share/doc/dash/.wh.copyright" in names
    assert "proc" not in names and "etc/passwd" not in names
    again = build(run_definition(tmp_path, [
        f"mkdir -p /srv && echo {tmp_path.name} > /srv/index.html",
        "rm /usr/share/doc/dash/copyright",
    ]), tmp_path / "out")
    assert again.written_layers == 0 and again.digest == result.digest


def test_a_failing_run_line_is_named(tmp_path):
    done = cimages("build", str(run_definition(tmp_path, ["echo oops; exit 3"])),
                   "-o", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "image.run line `echo oops; exit 3` failed with exit code 3: oops" in done.stderr


def test_a_package_layer_not_matching_the_lock_is_reported(tmp_path):
    def wrong_layer(lock):
        for package in lock["packages"]:
            if package["name"] == "hello":
                package["layer"] = "sha256:" + "0" * 64
    definition = hello_variant(tmp_path, lock_edit=wrong_layer)
    result = build(definition, tmp_path / "out", frozen=True)
    assert any("layers of hello differ" in w for w in result.warnings)
    assert "0" * 64 in definition.with_suffix(".lock").read_text()  # --frozen writes nothing
    build(definition, tmp_path / "out")
    assert "0" * 64 not in definition.with_suffix(".lock").read_text()


@pytest.mark.parametrize("source", ["archive", "oci_dir"])
def test_from_a_docker_archive_or_an_oci_layout(hello, tmp_path, source):
    definition = tmp_path / "derived.yaml"
    definition.write_text(f"image: {{name: derived, from: {getattr(hello, source)}}}\n")
    derived = build(definition, tmp_path / "out")
    assert [p.name for p in derived.layers[:-1]] == [p.name for p in hello.layers]


def test_a_virtual_package_is_refused_with_its_providers(tmp_path):
    definition = tmp_path / "virtual.yaml"
    definition.write_text("image: {name: virtual}\nenvironment: {systemPackages: [awk]}\n")
    done = cimages("lock", str(definition))
    assert done.returncode == 2
    assert "virtual Debian package `awk` (provided by: gawk, mawk" in done.stderr
    assert not definition.with_suffix(".lock").exists()


def test_a_lock_hash_that_is_not_a_digest_is_refused(tmp_path):
    definition = hello_variant(tmp_path, lock_edit=edit_hello(sha256="../../x"))
    done = cimages("build", str(definition), "-o", str(tmp_path / "out"),
                   env={"CIMAGES_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 2
    assert "package 'hello': sha256 '../../x' is not 64 hex digits" in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.deb").exists()


def test_a_base_layout_naming_a_path_as_digest_is_refused(hello, tmp_path):
    layout = tmp_path / "layout"
    shutil.copytree(hello.oci_dir, layout)
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest_path = blobs / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    manifest["layers"][0]["digest"] = "sha256:../../../../etc/passwd"
    manifest_path.write_text(json.dumps(manifest))  # the manifest no longer hashes to its name
    definition = hello_variant(tmp_path, {"image": {"from": str(layout)}})
    done = cimages("build", str(definition), "-o", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert "does not hash to its name" in done.stderr
    # Even with a manifest that hashes right, the layer digest is refused before use.
    data = json.dumps(manifest).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    index["manifests"][0]["digest"] = f"sha256:{digest}"
    (layout / "index.json").write_text(json.dumps(index))
    done = cimages("build", str(definition), "-o", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert "'sha256:../../../../etc/passwd' is not a sha256 digest" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_swapped_cached_deb_is_fetched_again(tmp_path):
    cache = tmp_path / "cache"
    env = {"CIMAGES_CACHE": str(cache)}
    first = cimages("build", str(HELLO), "--frozen", "-o", str(tmp_path / "a"), env=env)
    assert first.returncode == 0, first.stderr
    lock = yaml.safe_load(HELLO.with_suffix(".lock").read_text())
    sha = {p["name"]: p["sha256"] for p in lock["packages"]}
    debs = cache / "debs"
    # Another valid .deb in hello's place, and no cached layers: the unpack must notice.
    shutil.copy(debs / f"{sha['gcc-12-base']}.deb", debs / f"{sha['hello']}.deb")
    shutil.rmtree(cache / "layers")
    again = cimages("build", str(HELLO), "--frozen", "-o", str(tmp_path / "b"), env=env)
    assert again.returncode == 0, again.stderr
    assert "cached .debs of hello do not match the lock's sha256" in again.stderr
    assert first.stdout.splitlines()[1] == again.stdout.splitlines()[1]  # the same digest


def test_outputs_never_take_a_folder_they_did_not_write(tmp_path):
    target = tmp_path / "file"
    target.write_text("mine\n")
    done = cimages("build", str(HELLO), "--frozen", "-o", str(target))
    assert done.returncode == 2 and "exists and is not a folder" in done.stderr
    assert target.read_text() == "mine\n"

    folder = tmp_path / "unrelated"
    (folder / "oci" / "blobs").mkdir(parents=True)
    (folder / "oci" / "blobs" / "keep").write_text("mine\n")
    done = cimages("build", str(HELLO), "--frozen", "-o", str(folder))
    assert done.returncode == 2 and "is not a cimages output" in done.stderr
    assert (folder / "oci" / "blobs" / "keep").read_text() == "mine\n"

    out = tmp_path / "out"
    assert cimages("build", str(HELLO), "--frozen", "-o", str(out)).returncode == 0
    (out / "notes.txt").write_text("mine\n")
    done = cimages("build", str(HELLO), "--frozen", "-o", str(out))
    assert done.returncode == 2 and "did not write (notes.txt)" in done.stderr
    assert (out / "notes.txt").read_text() == "mine\n"


def test_a_failed_rebuild_leaves_the_last_output_whole(tmp_path):
    out = tmp_path / "out"
    first = cimages("build", str(HELLO), "--frozen", "-o", str(out), "--json")
    assert first.returncode == 0, first.stderr
    before = {p.relative_to(out): p.stat().st_ino for p in out.rglob("*")}
    failing = hello_variant(tmp_path, {"image": {"run": ["exit 3"]}})
    done = cimages("build", str(failing), "-o", str(out))
    assert done.returncode == 2, done.stderr
    assert {p.relative_to(out): p.stat().st_ino for p in out.rglob("*")} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == [".out.lock"]
    # Another definition into the same folder replaces the whole output: one image in it.
    other = cimages("build", str(ROOT / "images" / "empty.yaml"), "-o", str(out), "--json")
    assert other.returncode == 0, other.stderr
    index = json.loads((out / "oci" / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [json.loads(other.stdout)["digest"]]
    assert not (out / "hello.tar").exists() and (out / "empty.tar").is_file()


def test_lock_and_init_refuse_paths_that_are_not_theirs(tmp_path):
    lock = tmp_path / "hello.lock"
    shutil.copy(HELLO.with_suffix(".lock"), lock)
    before = lock.read_text()
    done = cimages("lock", str(lock))
    assert done.returncode == 2 and "is a lock file, not a definition" in done.stderr
    assert lock.read_text() == before
    home = tmp_path / "somedir"
    home.mkdir()
    (home / "thesis.tex").write_text("mine\n")
    owner = home.stat().st_uid
    done = cimages("init", str(HELLO), str(home))
    assert done.returncode == 2 and "not an earlier sandbox's folder" in done.stderr
    assert home.stat().st_uid == owner and (home / "thesis.tex").read_text() == "mine\n"


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(c) for c in text.split()}


def test_a_killed_build_leaves_no_worker_behind(tmp_path):
    """SIGKILL of a cold build while its workers unpack: they die with it."""
    cache = tmp_path / "cache"
    nginx = ROOT / "images" / "nginx.yaml"
    assert cimages("build", str(nginx), "--frozen", "-o", str(tmp_path / "warm")).returncode == 0
    # The .debs only (already downloaded): every layer must be written again.
    shutil.copytree(Path(os.environ.get("CIMAGES_CACHE", Path.home() / ".cache/cimages"))
                    / "debs", cache / "debs")
    build = subprocess.Popen(
        [sys.executable, "-m", "framework", "build", str(nginx), "--frozen", "-o",
         str(tmp_path / "out")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "CIMAGES_CACHE": str(cache)})
    workers: set[int] = set()
    deadline = time.monotonic() + 60
    while len(workers) < 2 and time.monotonic() < deadline and build.poll() is None:
        workers |= _children(build.pid)
        time.sleep(0.01)
    assert len(workers) >= 2, "the build never started its workers"
    build.kill()
    build.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if Path(f"/proc/{w}").exists()]
    assert build.stdout is not None and build.stdout.read() == b""  # nobody holds it open


def test_image_run_is_root_only_inside_its_user_namespace(tmp_path):
    """As host root, the lines run as the sandbox tier's mapped root (image uid 0 is an
    unprivileged host uid), and what they chown keeps the image's ids in the layer."""
    import tarfile

    from framework.sandbox.runner import ID_COUNT, UID_BASE

    marker = f"{tmp_path.name}"  # a line of its own, so the layer cache cannot answer
    result = build(run_definition(tmp_path, [
        f"echo {marker} > /srv-marker; cat /proc/self/uid_map > /uid-map",
        "mkdir -p /var/www && touch /var/www/page && chown -R 33:33 /var/www",
        "rm -rf /usr/share/doc && mkdir /usr/share/doc && echo new > /usr/share/doc/only",
    ]), tmp_path / "out")
    with tarfile.open(result.layers[-1]) as tar:
        members = {m.name: m for m in tar.getmembers()}
        uid_map = tar.extractfile("uid-map").read().decode().split()  # type: ignore[union-attr]
    if os.geteuid() == 0:
        assert uid_map == ["0", str(UID_BASE), str(ID_COUNT)]
    assert (members["var/www/page"].uid, members["var/www"].gid) == (33, 33)
    assert members["srv-marker"].uid == 0
    assert "usr/share/doc/.wh..wh..opq" in members  # the old content is gone below too
    assert "run/s6" not in members and "proc" not in members


def test_build_check_reproduces_or_names_the_first_differing_entry(tmp_path):
    definition = hello_variant(tmp_path)
    out = tmp_path / "out"
    assert cimages("build", str(definition), "-o", str(out)).returncode == 0
    same = cimages("build", "--check", str(definition), "-o", str(out))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "package layers against" in same.stdout and "(reproduces)" in same.stdout
    before = sorted(p.name for p in tmp_path.rglob("*"))

    text = yaml.safe_load(definition.read_text())
    text["image"]["created"] = "2001-02-03T04:05:06Z"
    definition.write_text(yaml.safe_dump(text))
    differs = cimages("build", "--check", str(definition), "-o", str(out))
    assert differs.returncode == 1, differs.stdout + differs.stderr
    lines = differs.stdout.splitlines()
    assert any(line.startswith("differs:  package hello: the lock records sha256:")
               and "mtime was 1" in line and "rebuilt 981173106" in line for line in lines), lines
    assert any(line.startswith("differs:  manifest: the last build is") for line in lines)
    assert any(line.startswith("differs:  layer 0:") for line in lines)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # it wrote nothing


def test_image_layers_give_a_chosen_group_its_own_layer_first(tmp_path):
    motd = f"one {tmp_path}\n"
    group = ["libc6", "libgcc-s1", "gcc-12-base"]
    definition = hello_variant(tmp_path, {"image": {"layers": [group]},
                                          "environment": {"etc": {"motd": {"text": motd}}}})
    first = build(definition, tmp_path / "out")
    # base, the group, hello (the only other package), generated
    assert len(first.layers) == 4
    packages = {n.split("/")[-1] for n in layer_names(first.layers[1])
                if n.startswith("var/lib/dpkg/status.d/") and not n.endswith(".md5sums")}
    assert packages == set(group)
    assert "var/lib/dpkg/status.d/hello" in layer_names(first.layers[2])
    history = [h["created_by"] for h in first_history(first)]
    assert history[1].startswith("cimages: image.layers[0]: packages libc6 ")
    definition.write_text(definition.read_text().replace("one /", "two /"))
    changed = build(definition, tmp_path / "out")
    assert changed.layers[:-1] == first.layers[:-1] and changed.layers[-1] != first.layers[-1]


def first_history(result) -> list[dict]:
    index = json.loads((result.oci_dir / "index.json").read_text())
    blobs = result.oci_dir / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    return [h for h in config["history"] if not h.get("empty_layer")]


def test_image_layers_over_max_layers_group_the_rest_by_popularity(tmp_path):
    result = build(hello_variant(tmp_path, {"image": {"maxLayers": 4,
                                                      "layers": [["gcc-12-base"]]}}),
                   tmp_path / "out")
    assert len(result.layers) == 4  # base, gcc-12-base, the three others, generated
    assert {n for n in layer_names(result.layers[1]) if "status.d" in n} >= {
        "var/lib/dpkg/status.d/gcc-12-base"}


def test_image_layers_outside_the_closure_are_named(tmp_path):
    definition = hello_variant(tmp_path, {"image": {"layers": [["libc6", "nginx", "zsh"]]}})
    with pytest.raises(UserError, match="nginx, zsh, not in the image's package closure"):
        build(definition, tmp_path / "out")


def test_a_build_without_archive_writes_none_and_keeps_only_a_matching_one(tmp_path):
    definition = hello_variant(tmp_path)
    out = tmp_path / "out"
    bare = build(definition, out, archive=False)
    assert bare.archive is None and not list(out.glob("*.tar"))
    full = build(definition, out)
    assert full.archive is not None and full.archive.is_file() and full.digest == bare.digest
    kept = build(definition, out, archive=False)  # the same image: its archive stays
    assert kept.archive == full.archive and kept.archive.is_file()
    text = definition.read_text()
    definition.write_text(text.replace("name: variant", "name: variant\n  tag: x"))
    other = build(definition, out, archive=False)  # another image: no stale archive
    assert other.archive is None and not list(out.glob("*.tar"))
