"""The sandbox tier: an image's root unpacked from its layers, its init run under
bubblewrap as an unprivileged user in its own PID and network namespaces.

Public API:
    unpacked_root(layers, digest, uid_shift=0) -> Path   (framework.sandbox.rootfs)
    Sandbox.start(root, ...) -> Sandbox                  (framework.sandbox.runner)
    start_image(definition_or_build, ...) -> Sandbox     (framework.sandbox.image)
"""
