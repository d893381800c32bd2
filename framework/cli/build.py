"""`cimages build FILE [-o DIR] [--frozen] [--json] [--digestfile F]`: an OCI layout and a
docker-archive."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from framework.atomic import write_atomic
from framework.builder import build
from framework.builder.pipeline import default_output


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("build", help="build an image: OCI layout + docker-archive")
    cmd.add_argument("file", help="image definition (YAML)")
    cmd.add_argument("-o", "--out", type=Path, help="output directory (default build/NAME)")
    cmd.add_argument("--frozen", action="store_true",
                     help="never resolve packages: fail unless the lock file matches")
    cmd.add_argument("--json", action="store_true",
                     help="print the result as JSON (digest, tags, paths, layer counts)")
    cmd.add_argument("--digestfile", type=Path, metavar="FILE",
                     help="write the manifest digest to FILE, as skopeo and docker do")
    cmd.add_argument("--check", action="store_true",
                     help="rebuild from the lock with no cached layer and compare every "
                          "digest with the lock and the last build in -o (exit 1 if any "
                          "differs); writes nothing")
    cmd.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.check:
        return _check(args)
    result = build(args.file, args.out, frozen=args.frozen)
    for warning in result.warnings:
        print(f"cimages: warning: {warning}", file=sys.stderr)
    if args.digestfile:
        write_atomic(args.digestfile, result.digest)
    if args.json:
        print(json.dumps({
            "name": result.name, "tag": result.tag, "digest": result.digest,
            "references": [f"{result.name}:{result.tag}"],
            "oci": str(result.oci_dir), "archive": str(result.archive),
            "sbom": str(result.sbom), "lock": str(result.lock_path),
            "layers": {"total": len(result.layers), "written": result.written_layers,
                       "reused": result.reused_layers},
            "size": result.size, "seconds": round(result.seconds, 3),
            "warnings": result.warnings,
        }, indent=2))
        return 0
    print(f"{result.name}:{result.tag}")
    print(f"digest:  {result.digest}")
    print(f"layers:  {len(result.layers)} ({result.written_layers} written, "
          f"{result.reused_layers} reused)")
    size = f"{result.size / 1e6:.1f} MB" if result.size >= 1e6 else f"{result.size / 1e3:.1f} kB"
    print(f"size:    {size} (compressed)")
    print(f"time:    {result.seconds:.2f} s")
    print(f"oci:     {result.oci_dir}")
    print(f"archive: {result.archive}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from framework.builder.check import check
    from framework.options import evaluate

    definition = Path(args.file)
    name = evaluate(definition).config["image"]["name"]
    out = args.out or default_output(name)
    report = check(definition, out)
    for line in report.compared:
        print(f"compared: {line}")
    if not report.compared:
        print("compared: nothing recorded yet (no layer digests in the lock, no last build in "
              f"{out}): build once, then check")
    for difference in report.differences:
        print(f"differs:  {difference}")
    print(f"digest:   {report.rebuilt.digest} "
          f"({'does not reproduce' if report.differences else 'reproduces'})")
    return 1 if report.differences else 0
