"""What both tiers share: the `image` marker, the `cimages_images` ini option (where image
definitions live), name-to-definition resolution, one build per definition per session, and
the `image` fixture."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # at run time the builder imports the sandbox (image.run)
    from framework.builder import BuildResult

INI_IMAGES = "cimages_images"
DEFAULT_IMAGES = "images"

_builds: dict[Path, BuildResult] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI_IMAGES, default=DEFAULT_IMAGES,
                  help="folder of the image definitions that image(NAME) and sandbox(NAME) "
                       f"find as NAME.yaml, relative to the rootdir (default {DEFAULT_IMAGES})")


def pytest_configure(config: pytest.Config) -> None:
    # Registered here rather than in a project's ini file, so `--strict-markers` holds in
    # every repository that installs the plugin.
    config.addinivalue_line(
        "markers",
        "image(*names): the images (NAME.yaml in the cimages_images folder) a test exercises; "
        "`cimages matrix` builds its CI cells from these")


def images_folder(config: pytest.Config) -> Path:
    """The folder `cimages_images` names, resolved against the rootdir."""
    return (Path(config.rootpath) / str(config.getini(INI_IMAGES))).resolve()


def is_path(definition: str | Path) -> bool:
    """A path (it has a folder part or ends in .yaml) rather than an image name."""
    text = str(definition)
    return isinstance(definition, Path) or os.sep in text or "/" in text \
        or text.endswith(".yaml")


def definition_path(config: pytest.Config, definition: str | Path,
                    base: Path | None = None) -> Path:
    """An image name's NAME.yaml in the images folder, or a path relative to `base` (default
    the rootdir). A definition that does not exist fails the test with the names there are."""
    if is_path(definition):
        path = ((base or Path(config.rootpath)) / definition).resolve()
        if not path.is_file():
            pytest.fail(f"no image definition {path}: check the path (relative paths are "
                        f"relative to {base or config.rootpath})", pytrace=False)
        return path
    folder = images_folder(config)
    path = folder / f"{definition}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        found = (f"the images there are: {', '.join(names)}" if names
                 else "it holds no *.yaml definition" if folder.is_dir()
                 else "that folder does not exist")
        pytest.fail(f"no image `{definition}`: {path} does not exist; {found}. Fix the name, "
                    f"or point the `{INI_IMAGES}` ini option (now "
                    f"`{config.getini(INI_IMAGES)}`, relative to the rootdir "
                    f"{config.rootpath}) at the folder of your definitions", pytrace=False)
    return path


def built(definition: Path) -> BuildResult:
    """The BuildResult of a definition, built once per test session (and per worker)."""
    from framework.builder import build

    if definition not in _builds:
        _builds[definition] = build(definition)
    return _builds[definition]


@pytest.fixture(scope="session")
def image(pytestconfig: pytest.Config) -> Callable[[str], BuildResult]:
    """`image("web")`: the BuildResult of images/web.yaml, built once per session; pass it
    to `vm.load_image(...)`.

    A name is NAME.yaml in the `cimages_images` folder (ini option, default `images`,
    relative to the rootdir); a path (with a `/` or ending in `.yaml`) is taken relative to
    the rootdir. An unknown name fails the test with the names the folder holds.
    """

    def get(name: str) -> BuildResult:
        return built(definition_path(pytestconfig, name))

    return get
