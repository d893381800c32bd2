"""The VM tier's layer groups (framework/vm/grouped.py), the load records that find a
derived snapshot's nearest earlier load (framework/vm/derived.py) and the file server's
streamed bodies. Pure: no VM (vmtests/ loads images into a real dockerd)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.errors import UserError
from framework.vm import derived
from framework.vm.fileserver import GUEST_HOST_ADDR, served
from framework.vm.grouped import OPAQUE, WHITEOUT, GroupedImage, grouped, runs

# A layer: (path, content) entries; content None is a directory. Whiteouts and opaque
# markers are entries named as in the OCI layer spec.
Layer = list[tuple[str, bytes | None]]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CIMAGES_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def layer_tar(entries: Layer) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def archive(path: Path, layers: list[Layer], history: list[str], tags: list[str]) -> Path:
    blobs = [layer_tar(layer) for layer in layers]
    config = {"config": {"Env": ["K=v"]},
              "rootfs": {"type": "layers",
                         "diff_ids": [f"sha256:{hashlib.sha256(b).hexdigest()}" for b in blobs]},
              "history": [{"created_by": line} for line in history]}
    names = [f"l{i}.tar" for i in range(len(blobs))]
    with tarfile.open(path, "w") as tar:
        for name, data in [*zip(names, blobs, strict=True),
                           ("c.json", json.dumps(config).encode()),
                           ("manifest.json", json.dumps([{"Config": "c.json", "RepoTags": tags,
                                                          "Layers": names}]).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def apply(tree: dict[str, bytes | None], layer: tarfile.TarFile) -> None:
    """Applies a layer as dockerd does: every entry's missing parent directories are made
    (whiteouts' too), a whiteout removes what is there, an opaque marker what lower layers
    put in its directory, every other entry is written."""
    written: set[str] = set()
    for member in layer:
        name = member.name.removeprefix("./")
        parent, _, base = name.rpartition("/")
        ancestors = name.split("/")[:-1]
        for depth in range(1, len(ancestors) + 1):  # dockerd creates missing parents
            tree.setdefault("/".join(ancestors[:depth]), None)
        if base == OPAQUE:
            for path in [p for p in tree if p.startswith(f"{parent}/") and p not in written]:
                del tree[path]
        elif base.startswith(WHITEOUT):
            gone = f"{parent}/{base[len(WHITEOUT):]}".lstrip("/")
            for path in [p for p in tree if p == gone or p.startswith(f"{gone}/")]:
                del tree[path]
        else:
            extracted = layer.extractfile(member) if member.isfile() else None
            tree[name] = extracted.read() if extracted else None
            written.add(name)


def tree_of_archive(path: Path) -> dict[str, bytes | None]:
    tree: dict[str, bytes | None] = {}
    with tarfile.open(path) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]
        for name in manifest["Layers"]:
            with tarfile.open(fileobj=tar.extractfile(name)) as layer:
                apply(tree, layer)
    return tree


def tree_of_groups(image: GroupedImage) -> dict[str, bytes | None]:
    tree: dict[str, bytes | None] = {}
    for group in image.groups:
        with tarfile.open(group.path) as layer:
            apply(tree, layer)
    return tree


OWN = "cimages: generated files (accounts, /etc, services)"
PACKAGE = "cimages: package p 1"


def test_groups_are_runs_of_one_kind_and_other_builders_keep_their_top_layer():
    assert runs(["from base", "from base", "cimages: merged-/usr symlinks", PACKAGE, PACKAGE,
                 OWN, "cimages: image.run: make"]) == [(0, 2), (2, 5), (5, 7)]
    assert runs(["cimages: merged-/usr symlinks", PACKAGE, OWN]) == [(0, 2), (2, 3)]
    assert runs(["RUN a", "RUN b", "COPY c"]) == [(0, 2), (2, 3)]
    assert runs(["RUN a"]) == [(0, 1)]
    assert runs([]) == []


def test_merged_groups_give_the_same_tree_with_whiteouts_across_groups(tmp_path: Path):
    layers: list[Layer] = [
        [("etc", None), ("etc/a", b"1"), ("etc/b", b"old"), ("etc/gone", b"x"),
         ("var", None), ("var/lib", None), ("var/lib/x", b"x")],
        [("etc/b", b"new"), ("opt", None), ("opt/tool", b"t")],
        [("etc/.wh.gone", b""), ("var/lib/.wh..wh..opq", b""), ("var/lib/y", b"y"),
         ("opt/.wh.tool", b""), ("opt/tool", b"again")],
    ]
    path = archive(tmp_path / "image.tar", layers, [PACKAGE, PACKAGE, OWN], ["t:latest"])
    image = grouped(path)
    assert len(image.groups) == 2
    assert tree_of_groups(image) == tree_of_archive(path)
    assert tree_of_groups(image)["etc/b"] == b"new" and "etc/gone" not in tree_of_groups(image)
    config = json.loads(image.config)
    assert config["config"] == {"Env": ["K=v"]}
    assert config["rootfs"]["diff_ids"] == [g.diff_id for g in image.groups]
    for group in image.groups:
        assert group.diff_id == f"sha256:{hashlib.sha256(group.path.read_bytes()).hexdigest()}"


# Paths of a small tree: `a` and `b` are always directories, the others files.
DIRS = ["a", "b"]
FILES = ["a/x", "a/y", "b/x", "c"]
entry = st.one_of(
    st.tuples(st.sampled_from(FILES), st.binary(max_size=3)),
    st.tuples(st.sampled_from(DIRS), st.none()),
    st.sampled_from(DIRS + FILES).map(
        lambda p: (f"{p.rpartition('/')[0]}/{WHITEOUT}{p.rpartition('/')[2]}".lstrip("/"), b"")),
    st.sampled_from(DIRS).map(lambda d: (f"{d}/{OPAQUE}", b"")),
)


def _one_per_path(entries: Layer) -> Layer:
    """A layer names a path once (a whiteout and an entry for one path make no sense)."""
    seen: dict[str, tuple[str, bytes | None]] = {}
    for name, data in entries:
        parent, _, base = name.rpartition("/")
        target = parent if base == OPAQUE else name.replace(WHITEOUT, "")
        seen.setdefault(target, (name, data))
    return list(seen.values())


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(entry, max_size=6).map(_one_per_path), min_size=1, max_size=5),
       st.integers(min_value=0, max_value=4))
def test_any_grouping_of_layers_gives_the_tree_the_layers_give(tmp_path_factory, layers,
                                                               split):
    split = min(split, len(layers) - 1)
    history = [PACKAGE] * split + [OWN] * (len(layers) - split)
    path = archive(tmp_path_factory.mktemp("g") / "image.tar", layers, history, [])
    assert tree_of_groups(grouped(path)) == tree_of_archive(path)


def test_a_layer_that_is_not_its_diff_id_is_refused(tmp_path: Path):
    path = archive(tmp_path / "image.tar", [[("a", b"1")], [("b", b"2")]], [PACKAGE, OWN], [])
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    members["l0.tar"] = layer_tar([("a", b"evil")])
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UserError, match=r"l0\.tar does not match its diff ID"):
        grouped(path)


def test_unchanged_groups_come_from_the_cache_and_a_skip_leaves_their_files_out(
        tmp_path: Path):
    base: Layer = [("usr", None), ("usr/big", b"b" * 4096)]
    first = grouped(archive(tmp_path / "1.tar", [base, [("etc/x", b"1")]], [PACKAGE, OWN],
                            ["t:latest"]))
    second = grouped(archive(tmp_path / "2.tar", [base, [("etc/x", b"2")]], [PACKAGE, OWN],
                             ["t:latest"]))
    assert first.groups[0] == second.groups[0]
    assert first.chain_ids[0] == second.chain_ids[0] != first.chain_ids[1] != second.chain_ids[1]
    out = io.BytesIO()
    second.write_archive(out, skip=1)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))[0]
        assert manifest["RepoTags"] == ["t:latest"] and len(manifest["Layers"]) == 2
        assert manifest["Layers"][0] not in tar.getnames()  # dockerd has it
        assert tar.extractfile(manifest["Layers"][1]).read() == second.groups[1].path.read_bytes()
        assert tar.extractfile(manifest["Config"]).read() == second.config


def test_nearest_earlier_load_shares_the_most_bytes_of_the_same_tags_and_parent(
        tmp_path: Path):
    parent = tmp_path / "boot.state"
    big, small = [("usr", None), ("usr/big", b"b" * 8192)], [("usr", None), ("usr/s", b"s")]

    def image(name: str, layers: list[Layer], tags: list[str]) -> GroupedImage:
        return grouped(archive(tmp_path / f"{name}.tar", layers, [PACKAGE, OWN], tags))

    def loaded(name: str, built: GroupedImage, on: Path = parent) -> Path:
        snapshot = derived.derived_path(on, name)
        snapshot.write_bytes(b"state")
        derived.save_record(snapshot, on, "t:latest", built)
        return snapshot

    old = loaded("old", image("old", [big, [("etc/x", b"1")]], ["t:latest"]))
    loaded("other-base", image("ob", [small, [("etc/x", b"1")]], ["t:latest"]))
    loaded("other-tags", image("ot", [big, [("etc/x", b"1")]], ["u:latest"]))
    loaded("other-parent", image("op", [big, [("etc/x", b"1")]], ["t:latest"]),
           tmp_path / "other.state")
    edited = image("new", [big, [("etc/x", b"2")]], ["t:latest"])
    found = derived.nearest(parent, edited)
    assert found is not None and (found.snapshot, found.shared) == (old, 1)
    assert derived.record_of(old).image_id == found.record.image_id
    assert derived.nearest(parent, image("none", [[("z", b"z")], [("y", b"y")]],
                                         ["t:latest"])) is None
    assert derived.nearest(parent, image("untagged", [big, [("etc/x", b"1")]], [])) is None
    record = old.with_suffix(derived.RECORD_SUFFIX)
    record.write_text(record.read_text().replace(found.record.image_id, "../containers/x"))
    assert derived.record_of(old) is None, "an image ID that is no digest is no record"


def test_a_streamed_body_is_served_whole_and_a_failing_one_fails_the_transfer():
    def body(out):
        for _ in range(3):
            out.write(b"x" * 700_000)

    with served(body) as url, \
            urllib.request.urlopen(url.replace(GUEST_HOST_ADDR, "127.0.0.1"), timeout=30) as r:
        assert r.read() == b"x" * 2_100_000

    def failing(out):
        out.write(b"x" * 2_000_000)
        raise OSError("disk gone")

    with served(failing) as url, pytest.raises(Exception, match=r"IncompleteRead|incomplete"):
        urllib.request.urlopen(url.replace(GUEST_HOST_ADDR, "127.0.0.1"), timeout=30).read()
