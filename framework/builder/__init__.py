"""The embedded builder: Debian packages to reproducible OCI images, without a daemon."""

from framework.builder.pipeline import BuildResult, build

__all__ = ["BuildResult", "build"]
