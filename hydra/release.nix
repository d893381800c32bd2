# The Hydra jobset of cimages (hydra/spec.json declares it): one job per CI matrix cell, the
# same cells the GitHub workflow runs. Each job runs `cimages ci-cell CELL --out $out`, whose
# nix-support/hydra-build-products lists junit.xml, allure-results/ and the logs, and whose
# nix-support/failed marks a cell with failing tests (the build itself succeeds, so Hydra keeps
# and shows its reports).
#
# The cells come from hydra/cells.json, written by `cimages matrix --hydra > hydra/cells.json`
# (a unit test fails when it is stale): the list is not maintained here a second time.
#
# What a build machine needs, because a cell is a test run, not a pure build:
# - network (pip installs the Python dependencies, the builder fetches locked .debs from the
#   Debian archive), the host's QEMU, bubblewrap, skopeo, s6, chromium, ... and /dev/kvm:
#   the jobs are `__noChroot = true`, which Nix allows only with `sandbox = relaxed` (or
#   false) in the machine's nix.conf;
# - Debian 12 prepared once as root with `make setup` (the apt packages of the Makefile),
#   advertised as the system feature `cimages-debian12`, and `kvm` (the VM tier falls back to
#   TCG without it, slower): in nix.conf `system-features = kvm cimages-debian12 ...`, and
#   the same features in the Hydra machines file. The nixbld users must be able to open
#   /dev/kvm (group kvm) and create user namespaces (Debian 12's default) for bubblewrap;
# - optionally a cache folder writable by the nixbld users (the `cacheDir` input, default
#   /var/cache/cimages): .debs, layer blobs and pip's downloads are kept there between
#   builds; without it every build starts cold.
{
  # Hydra passes the git input `src` (hydra/spec.json); by hand (`nix-build hydra/release.nix
  # -A nginx-vm`) it is this checkout without its local state.
  src ? builtins.path {
    name = "cimages-src";
    path = ./..;
    filter = path: type:
      !(builtins.elem (baseNameOf path) [
        ".git" ".venv" "build" "out" "state" "allure-results" "allure-report" "__pycache__"
        ".pytest_cache" ".ruff_cache" ".hypothesis" "cimages.egg-info"
      ]);
  },
  system ? "x86_64-linux",
  cacheDir ? "/var/cache/cimages",
}:
let
  cells = builtins.fromJSON (builtins.readFile ./cells.json);

  job = cell:
    derivation {
      name = "cimages-${cell.name}";
      inherit system src cacheDir;
      # The host's shell and tools: Debian's, not Nixpkgs' (see above).
      builder = "/bin/sh";
      args = [ ./build-cell.sh ];
      cell = cell.name;
      __noChroot = true;
      requiredSystemFeatures = [ "kvm" "cimages-debian12" ];
      # A test run: never substitute its result from a binary cache.
      allowSubstitutes = false;
    }
    // {
      # Hydra reads these from the job; outside the derivation so they stay plain data.
      inherit (cell) image tier;
      meta = {
        description = "cimages CI cell ${cell.name}: `cimages ci-cell ${cell.name}`";
        # ci-cell prints pytest's output when the cell ends and stops a cell after 30 min.
        maxSilent = 2400;
        timeout = 3600;
      };
    };
in
builtins.listToAttrs (map (cell: { inherit (cell) name; value = job cell; }) cells)
