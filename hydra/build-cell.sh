#!/bin/sh
# The builder of one Hydra job (hydra/release.nix): `make setup` and `cimages ci-cell "$cell"
# --out "$out"` in a writable copy of the source, on a Debian 12 machine prepared with
# `make setup` as root. Nix passes src, cell, cacheDir and out in the environment.
set -eu
src=${src:?set by Nix} cell=${cell:?set by Nix} out=${out:?set by Nix}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME="$TMPDIR/home"
mkdir -p "$HOME"

# Persistent caches when the machine provides a writable folder; else every build is cold.
if [ -n "${cacheDir:-}" ] && [ -d "$cacheDir" ] && [ -w "$cacheDir" ]; then
    export CIMAGES_CACHE="$cacheDir/cimages" PIP_CACHE_DIR="$cacheDir/pip"
else
    echo "build-cell: no writable cache folder ${cacheDir:-}: starting with empty caches"
fi

# The store copy is read-only; the venv, builds and locks' neighbours are written in the tree.
mkdir "$TMPDIR/src"
cp -R "$src/." "$TMPDIR/src/"
chmod -R u+w "$TMPDIR/src"
cd "$TMPDIR/src"

# As the build user: checks the apt packages are there (it cannot install them), makes .venv.
make setup

status=0
.venv/bin/cimages ci-cell "$cell" --out "$out" || status=$?
# Failing tests still make a build with products (and nix-support/failed) for Hydra to show;
# only a cell that could not run at all (no products) fails the build.
if [ ! -e "$out/nix-support/hydra-build-products" ]; then
    exit "$status"
fi
