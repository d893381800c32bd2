"""The VM tier: a QEMU machine whose root is an image built by the builder, running Docker."""
