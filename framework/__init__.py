"""cimages: declarative container images, built without a Docker daemon and tested in two tiers."""
