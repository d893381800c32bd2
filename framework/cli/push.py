"""`cimages push FILE REF`: build (cheap when nothing changed: the layer cache), then send
the image to a registry, uploading only the blobs it lacks."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from framework.atomic import write_atomic


def tls_verify(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"`{text}` is not true or false")


def add_publish_options(cmd: argparse.ArgumentParser) -> None:
    """The options `push` and `copy` share (copy pushes when given docker://)."""
    cmd.add_argument("file", help="image definition (YAML)")
    cmd.add_argument("-o", "--out", type=Path, help="build output directory (default "
                                                     "build/NAME)")
    cmd.add_argument("--frozen", action="store_true",
                     help="never resolve packages: fail unless the lock file matches")
    cmd.add_argument("--digestfile", type=Path, metavar="FILE",
                     help="write the manifest digest to FILE, as skopeo and docker do")
    cmd.add_argument("--tls-verify", type=tls_verify, nargs="?", const=True, default=True,
                     metavar="BOOL",
                     help="require HTTPS with a trusted certificate (default true); "
                          "--tls-verify=false also allows a plain-HTTP registry (a local one)")
    cmd.add_argument("--authfile", type=Path, metavar="FILE",
                     help="registry credentials (default $REGISTRY_AUTH_FILE, "
                          "$XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)")
    cmd.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("push", help="build, then push to a registry (only missing blobs)")
    add_publish_options(cmd)
    cmd.add_argument("ref", metavar="REF",
                     help="[docker://]REGISTRY/NAME[:TAG], e.g. localhost:5000/web:1.2 "
                          "(TAG defaults to the image's tag)")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return push(args, args.ref)


def push(args: argparse.Namespace, text: str) -> int:
    from framework.builder import build
    from framework.publish.push import open_registry, push_layout, summary
    from framework.publish.reference import parse

    started = time.monotonic()
    ref = parse(text, "")  # a bad reference or registry is said before the build
    registry = open_registry(ref, tls_verify=args.tls_verify, authfile=args.authfile)
    # The push reads the layout only: no docker-archive (a copy of every blob) is written.
    result = build(args.file, args.out, frozen=args.frozen, archive=False)
    for warning in result.warnings:
        print(f"cimages: warning: {warning}", file=sys.stderr)
    if not ref.tag:
        ref = replace(ref, tag=result.tag)
    registry.ref = ref
    pushed = push_layout(result.oci_dir, result.digest, ref, registry=registry)
    if args.digestfile:
        write_atomic(args.digestfile, result.digest)
    seconds = time.monotonic() - started
    if args.json:
        print(json.dumps({
            "image": f"{result.name}:{result.tag}", "reference": str(ref),
            "digest": result.digest, "blobs": pushed.blobs,
            "sent": {"blobs": len(pushed.sent), "bytes": pushed.bytes_sent,
                     "layerBytes": pushed.layer_bytes_sent,
                     "configBytes": pushed.config_bytes_sent,
                     "manifestBytes": pushed.manifest_bytes},
            "skipped": {"blobs": len(pushed.present) + len(pushed.mounted),
                        "bytes": pushed.bytes_skipped, "present": len(pushed.present),
                        "mounted": len(pushed.mounted)},
            "seconds": {"total": round(seconds, 3), "build": round(result.seconds, 3),
                        "push": round(pushed.seconds, 3)},
        }, indent=2))
        return 0
    print(f"{result.name}:{result.tag} -> {ref}")
    print(f"digest:  {result.digest}")
    print(f"blobs:   {summary(pushed)}")
    print(f"sent:    {pushed.bytes_sent} bytes (layers {pushed.layer_bytes_sent}, config "
          f"{pushed.config_bytes_sent}, manifest {pushed.manifest_bytes})")
    print(f"time:    {seconds:.2f} s (build {result.seconds:.2f} s, push "
          f"{pushed.seconds:.2f} s)")
    return 0
