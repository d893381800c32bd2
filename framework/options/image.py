"""`image.*`: what the OCI image config says, and how the image is assembled."""

from framework.modules import Config, Module, option
from framework.modules import types as t

# `image.interactive`: a /bin/sh (dash ships the link) and the usual tools.
INTERACTIVE_PACKAGES = ["coreutils", "dash"]


def _config(cfg: Config) -> dict:
    if not cfg["image"]["interactive"]:
        return {}
    return {"environment": {"systemPackages": INTERACTIVE_PACKAGES}}


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
                t.null_or(t.path),
                None,
                "A base image: an OCI layout directory, a docker-archive tar, or another "
                "definition file (relative to this file). Its layers come first.",
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
