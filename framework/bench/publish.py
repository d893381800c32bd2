"""The nix2container loop on images/nginx.yaml: change one /etc file, rebuild, push to a local
registry (Debian's docker-registry on 127.0.0.1, behind a relay that counts every byte the
client sends). In the same run, for comparison:

- `ours`: framework.publish.push (HEAD every blob, upload the missing ones, manifest last);
- `skopeoOci`: `skopeo copy oci:build/... docker://...` of the same layout, the alternative
  to writing the protocol by hand;
- `fullArchive`: `skopeo copy docker-archive:build/.../nginx.tar docker://...`, what
  dockerTools.buildImage users do, into a repository holding the previous version (`loop`)
  and into an empty one (`cold`).

Each `loop` is the median of RUNS edit-build-push rounds straight to the registry, build
included; `loopCounted` is one more round through the counting relay (slower: a Python
relay), for the bytes; `cliLoopSeconds` is one round of the `cimages push` command as a user
runs it (Python's start included). Bytes: `payload` is what our push sent as blob and
manifest bodies, `wire` everything the client sent (request lines and headers too: a HEAD
per blob is about 150 bytes); `changedBytes` is the changed layers + config + manifest, what
an ideal push sends.

Measured on the project's 2-core machine (other jobs running), the decision between skopeo
and the protocol by hand (framework/publish/push.py) rests on these rounds: see the report in
bench/results.json (`publish`).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from framework.bench.subject import current_lock, variant
from framework.builder import BuildResult, build
from framework.publish.local_registry import CountingProxy, LocalRegistry
from framework.publish.push import push_layout
from framework.publish.reference import parse

RUNS = 5
SKOPEO_TIMEOUT = 300


def _manifest(result: BuildResult) -> dict[str, Any]:
    blob = result.oci_dir / "blobs" / "sha256" / result.digest.split(":", 1)[1]
    manifest: dict[str, Any] = json.loads(blob.read_bytes())
    manifest["_size"] = blob.stat().st_size
    return manifest


def _changed_bytes(before: dict[str, Any] | None, after: dict[str, Any]) -> int:
    """Layers of `after` that `before` lacks, + config + manifest: what a push must send."""
    old = {layer["digest"] for layer in before["layers"]} if before else set()
    return (sum(layer["size"] for layer in after["layers"] if layer["digest"] not in old)
            + int(after["config"]["size"]) + int(after["_size"]))


def _skopeo(source: str, destination: str) -> None:
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", source, destination],
                   check=True, capture_output=True, timeout=SKOPEO_TIMEOUT)


class _Loop:
    """Rounds of one push method against a registry of its own (fresh: no tool has a record
    of what it holds), behind a relay counting the bytes sent."""

    def __init__(self, tmp: Path, method: str, registry: LocalRegistry,
                 proxy: CountingProxy) -> None:
        self.tmp, self.method, self.registry, self.proxy = tmp, method, registry, proxy
        self.out = tmp / f"out-{method}"
        self.stamps = 0
        self.last: dict[str, Any] | None = None  # what the registry holds

    def round(self, *, change: bool = True, counted: bool = True) -> dict[str, Any]:
        """One round: (a change to the /etc file,) a build, a push; `counted` through the
        relay (which costs time), else straight to the registry."""
        if change:
            self.stamps += 1
        definition = variant(self.tmp, f"stamp {self.stamps}\n")
        self.proxy.reset()
        started = time.monotonic()
        # As `cimages push` does, only the full-archive copy has a docker-archive written.
        result = build(definition, self.out, frozen=True,
                       archive=self.method == "fullArchive")
        built = time.monotonic()
        address = self.proxy.address if counted else self.registry.address
        destination = f"{address}/nginx:dev"
        measured: dict[str, Any] = {}
        if self.method == "ours":
            pushed = push_layout(result.oci_dir, result.digest, parse(destination, "dev"),
                                 tls_verify=False)
            measured = {"payloadBytes": pushed.bytes_sent,
                        "layerBytesSent": pushed.layer_bytes_sent,
                        "blobsSent": len(pushed.sent),
                        "blobsSkipped": len(pushed.present) + len(pushed.mounted),
                        **{f"{k}Seconds": v for k, v in pushed.phases.items()}}
        elif self.method == "skopeoOci":
            _skopeo(f"oci:{result.oci_dir}:{result.tag}", f"docker://{destination}")
        else:
            _skopeo(f"docker-archive:{result.archive}", f"docker://{destination}")
        done = time.monotonic()
        manifest = _manifest(result)
        changed = _changed_bytes(self.last, manifest)
        self.last = manifest
        wire = {"wireBytes": self.proxy.reset()} if counted else {}
        return {"seconds": done - started, "buildSeconds": built - started,
                "pushSeconds": done - built, **wire, "changedBytes": changed, **measured}

    def cli_round(self) -> float:
        """One round as a user runs it: `cimages push` (Python's start included)."""
        self.stamps += 1
        definition = variant(self.tmp, f"stamp {self.stamps}\n")
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "framework", "push", str(definition),
                        f"{self.registry.address}/nginx:dev", "--frozen", "--tls-verify=false",
                        "-o", str(self.out)], check=True, capture_output=True, timeout=300)
        return round(time.monotonic() - started, 3)


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rounds[0] if isinstance(rounds[0][k], int | float)]
    summary: dict[str, Any] = {}
    for key in keys:
        value = statistics.median(r[key] for r in rounds)
        summary[key] = round(value, 3) if isinstance(value, float) else value
    summary["runs"] = len(rounds)
    summary["secondsEach"] = [round(r["seconds"], 3) for r in rounds]
    return summary


def _one(round_: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in round_.items()}


def _method(tmp: Path, method: str) -> dict[str, Any]:
    with LocalRegistry(tmp / f"registry-{method}", log_level="error") as registry, \
            CountingProxy(registry.port) as proxy:
        loop = _Loop(tmp, method, registry, proxy)
        cold = loop.round(change=False)
        unchanged = loop.round(change=False)
        counted = loop.round()
        rounds = [loop.round(counted=False) for _ in range(RUNS)]
        measured = {"coldPush": _one(cold), "unchangedPush": _one(unchanged),
                    "loop": _median(rounds), "loopCounted": _one(counted),
                    "layers": len(loop.last["layers"]) if loop.last else 0}
        if method == "ours":
            measured["cliLoopSeconds"] = loop.cli_round()
    return measured


def run() -> dict[str, Any]:
    current_lock()
    with tempfile.TemporaryDirectory(prefix="cimages-bench-publish-") as tmp_name:
        tmp = Path(tmp_name)
        methods = {method: _method(tmp, method)
                   for method in ("ours", "skopeoOci", "fullArchive")}
    ours, skopeo, archive = (methods[m] for m in ("ours", "skopeoOci", "fullArchive"))
    loop, counted = ours["loop"], ours["loopCounted"]
    return {
        "image": "images/nginx.yaml",
        **methods,
        "goals": {
            "loopSecondsAtMost1": loop["seconds"] <= 1.0,
            "payloadWithin10PercentOfChanged":
                counted["payloadBytes"] <= 1.1 * counted["changedBytes"],
            "payloadOverChanged": round(counted["payloadBytes"] / counted["changedBytes"], 3),
            "wireOverChanged": round(counted["wireBytes"] / counted["changedBytes"], 3),
            "speedupVsFullArchiveLoop": round(archive["loop"]["seconds"] / loop["seconds"], 2),
            "speedupVsFullArchiveCold":
                round(archive["coldPush"]["seconds"] / loop["seconds"], 2),
            "speedupVsSkopeoOciLoop": round(skopeo["loop"]["seconds"] / loop["seconds"], 2),
            "unchangedPushLayerBytes": ours["unchangedPush"]["layerBytesSent"],
        },
    }
