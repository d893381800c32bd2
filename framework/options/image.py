"""`image.*`: what the OCI image config says, and how the image is assembled."""

from pathlib import Path

from framework.modules import Config, Module, option
from framework.modules import types as t
from framework.modules.nodes import Node

# image.from values that name a registry (as the builder reads them back).
REGISTRY_PREFIX = "docker://"

# `image.interactive`: a /bin/sh (dash ships the link) and the usual tools.
INTERACTIVE_PACKAGES = ["coreutils", "dash"]


def _config(cfg: Config) -> dict:
    if not cfg["image"]["interactive"]:
        return {}
    return {"environment": {"systemPackages": INTERACTIVE_PACKAGES}}


def _is_registry_reference(node: Node) -> bool:
    """`docker://...`, or a first component that is a registry host (has a `.` or a `:`,
    or is localhost) of a value that names no file beside the module."""
    text = str(node.value)
    if text.startswith(REGISTRY_PREFIX):
        return True
    first, slash, _ = text.partition("/")
    if not slash or first in (".", "..") or first.startswith("."):
        return False
    if not ("." in first or ":" in first or first == "localhost"):
        return False
    if text.endswith((".yaml", ".yml", ".tar")):
        return False
    return not (Path(node.loc.file).parent / text).exists()


def _base(node: Node) -> str:
    if _is_registry_reference(node):
        text = str(node.value)
        return text if text.startswith(REGISTRY_PREFIX) else REGISTRY_PREFIX + text
    return t.path.convert(node)


base_image = t.Scalar("a path or a registry reference", lambda v: isinstance(v, str), _base)
exposed_port = t.either(t.port, t.string(r"\d{1,5}(/(tcp|udp|sctp))?", "a port like 5000/tcp"))

MODULE = Module(
    name="image",
    source=__file__,
    options={
        "image": {
            "name": option(
                # 128: the output folder and archive are named after it (a file name holds
                # 255 bytes) and registries refuse longer repository names anyway.
                t.string(r"(?=.{1,128}\Z)[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*",
                         "an image name of up to 128 lowercase letters, digits, . _ - / "
                         "(e.g. web/nginx)"),
                description="The image's repository name (required).",
                example="nginx",
            ),
            "tag": option(
                t.string(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", "a tag (letters, digits, . _ -)"),
                "latest",
                "The image tag.",
            ),
            "entryPoint": option(
                t.null_or(t.list_of(t.str_)),
                None,
                "The container's entry point. With s6 services defined and no entry point "
                "set, it is the s6 init.",
                ["/bin/hello"],
            ),
            "cmd": option(t.null_or(t.list_of(t.str_)), None, "Default arguments.", ["-g"]),
            "env": option(
                t.attrs_of(t.str_, t.env_name), {}, "Environment variables of the image config.",
                {"KEY": "value"},
            ),
            "workingDir": option(t.null_or(t.absolute_path), None, "Working directory.", "/srv"),
            "user": option(
                t.null_or(t.str_), None, "User (name or uid[:gid]) the container runs as.",
                "alice",
            ),
            "exposedPorts": option(
                t.list_of(exposed_port), [], "Ports the image declares (port or port/proto).",
                [80, "5000/udp"],
            ),
            "labels": option(t.attrs_of(t.str_), {}, "OCI labels.",
                             {"org.opencontainers.image.source": "https://example.org"}),
            "maxLayers": option(
                t.integer(2, 125),
                100,
                "Most layers the image may have; packages beyond it share layers "
                "(the least popular packages are merged first).",
            ),
            "created": option(
                t.string(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "a UTC timestamp like "
                         "1970-01-01T00:00:01Z"),
                "1970-01-01T00:00:01Z",
                "Creation time in the config and the mtime of every file: fixed, so builds "
                "are reproducible.",
            ),
            "from": option(
                t.null_or(base_image),
                None,
                "A base image, whose layers come first: an OCI layout directory, a "
                "docker-archive tar, another definition file (relative to this file), or a "
                "registry reference (`docker.io/library/debian:bookworm-slim`, "
                "`localhost:5000/web@sha256:...`; `docker://` is optional when the first "
                "component is a host). A registry image is pinned by manifest digest in the "
                "lock's `from:` (for linux/amd64 when the reference names an index), later "
                "builds pull that digest, a tag that moved since is reported, and "
                "`cimages lock --update` pins it again. Registry credentials come from the "
                "usual auth files, as for `cimages push`.",
                "./hello.yaml",
            ),
            "layers": option(
                t.list_of(t.list_of(t.str_)),
                [],
                "Groups of packages that get layers of their own, as nix2container's "
                "buildLayer: a list of lists of package names, one layer per inner list, in "
                "this order, after the base and before the other packages' layers. Every name "
                "must be in the image's package closure (see its .lock). The remaining "
                "packages get a layer each, or share layers by popularity when image.maxLayers "
                "is reached. Put the rarely changing part of an image here, so that an edit to "
                "the rest pushes only the rest.",
                [["libc6", "libgcc-s1", "gcc-12-base"]],
            ),
            "run": option(
                t.list_of(t.str_), [], "Shell lines run at build time on the image root, in a "
                "sandbox.", ["mkdir -p /srv/www"],
            ),
            "interactive": option(
                t.bool_, False, "Adds a shell and coreutils, for `docker run -it IMAGE sh`."
            ),
        }
    },
    config=_config,
)
