"""Publishing built images: `cimages push` (to a registry, by hand: only the missing blobs)
and `cimages copy` (to a Docker daemon, Podman's store or an archive, through skopeo)."""
