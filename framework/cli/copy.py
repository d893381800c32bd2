"""`cimages copy FILE DEST`: build, then copy the image into a Docker daemon
(docker-daemon:), Podman's store (containers-storage:) or an archive (oci-archive:,
docker-archive:); docker:// is a push."""

from __future__ import annotations

import argparse
import sys
import time

from framework.atomic import write_atomic
from framework.cli.push import add_publish_options, push


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("copy", help="build, then copy to a Docker daemon, Podman's store "
                                      "or an archive")
    add_publish_options(cmd)
    cmd.add_argument("dest", metavar="DEST",
                     help="docker-daemon:NAME[:TAG] (the daemon of $DOCKER_HOST), "
                          "containers-storage:[DRIVER@ROOT+RUNROOT]NAME[:TAG], "
                          "oci-archive:PATH, docker-archive:PATH, or docker://REF (a push)")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from framework.builder import build
    from framework.options import evaluate
    from framework.publish.copy import check_destination, copy_built, parse_destination

    if args.dest.startswith("docker://"):
        return push(args, args.dest)
    started = time.monotonic()
    image = evaluate(args.file).config["image"]
    destination = parse_destination(args.dest, image["name"], image["tag"])
    options = check_destination(destination)  # a missing daemon is said before a build
    result = build(args.file, args.out, frozen=args.frozen)
    for warning in result.warnings:
        print(f"cimages: warning: {warning}", file=sys.stderr)
    copy_built(result.oci_dir, result.archive, result.name, result.tag, destination, options)
    if args.digestfile:
        write_atomic(args.digestfile, result.digest)
    seconds = time.monotonic() - started
    if args.json:
        import json
        print(json.dumps({"image": f"{result.name}:{result.tag}",
                          "destination": str(destination), "digest": result.digest,
                          "seconds": {"total": round(seconds, 3),
                                      "build": round(result.seconds, 3)}}, indent=2))
        return 0
    print(f"{result.name}:{result.tag} -> {destination}")
    print(f"digest:  {result.digest}")
    print(f"time:    {seconds:.2f} s (build {result.seconds:.2f} s)")
    return 0
