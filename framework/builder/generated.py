"""Generators of the last (generated) layer: each is `image_files(cfg) -> list[ImageFile]`.

Other parts of the framework append theirs (the s6 init appends
`framework.s6.files.image_files`). Accounts are not listed here: the builder writes them
itself because they also depend on the packages in the image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from framework.builder import etc
from framework.image_files import ImageFile
from framework.s6 import files as s6_files

Generator = Callable[[dict[str, Any]], list[ImageFile]]

GENERATORS: list[Generator] = [etc.image_files, s6_files.image_files]
