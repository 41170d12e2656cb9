#!/usr/bin/env python3
"""The size cap under a pull stream (issue 15, point 3): 1 GiB of distinct images pulled
through a regpin whose data folder may hold 256 MiB.

Starts on 127.0.0.1 a docker-registry holding 64 images of 16 MiB each (layers of 10, 4 and
2 MiB of random bytes, and a config), plus one 64 MiB "warm" layer, and regpin in front of it
with cache.max_bytes 256 MiB, min_free_percent 0 and protect "none" (every image here is pulled
by tag, so with protect "pinned" all of it would be protected and regpin would stop keeping
new blobs at the limit instead of evicting: test_eviction covers that). Then:

1. reads the warm layer with bench/loadgen (4 connections) while nothing else runs: idle;
2. pulls the 64 images (manifest by tag, config and layers, every byte checked) with 4
   client threads, while loadgen keeps reading the warm layer in 1.5 s windows;
3. waits for the evictor's passes to settle and reads the data folder's size on disk, the
   bytes regpin wrote (/proc/PID/write_bytes) against the bytes it ingested, evictions and
   reclaimed bytes (GET /api/v1/cache).

The same run without a limit (--no-limit, or a second pass with --control) measures warm
reads during the same ingest without eviction. --regpin BIN runs another build (a build
before the cap: run it with --no-limit, it knows no cache key).

    python3 bench/evict.py --control --out bench/evict-result.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import harness as h  # noqa: E402

MiB = 1 << 20
LOADGEN = ROOT / "build" / "bench" / "regpin_loadgen"
LAYERS = (10 * MiB, 4 * MiB, 2 * MiB)
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push(registry: h.Registry, repo: str, layer_sizes: tuple[int, ...], seed: str) -> dict:
    layers = []
    for i, size in enumerate(layer_sizes):
        data = os.urandom(size)
        d = digest(data)
        registry.upload_blob(repo, d, data)
        layers.append({"mediaType": MEDIA_LAYER, "digest": d, "size": size})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
                         "history": [{"created_by": seed}]}).encode()
    registry.upload_blob(repo, digest(config), config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": h.MEDIA_OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": len(config)},
        "layers": layers}).encode()
    registry.put_manifest(repo, "v1", manifest, h.MEDIA_OCI_MANIFEST)
    return {"repo": repo, "blobs": [digest(config)] + [l["digest"] for l in layers],
            "bytes": len(config) + sum(layer_sizes)}


def pull(regpin: h.Regpin, image: dict) -> int:
    resp = regpin.get(f"/v2/{image['repo']}/manifests/v1", {"Accept": h.MEDIA_OCI_MANIFEST})
    if resp.status != 200:
        raise RuntimeError(f"manifest of {image['repo']}: {resp.status}")
    total = 0
    for d in image["blobs"]:
        r = regpin.get(f"/v2/{image['repo']}/blobs/{d}", timeout=120)
        if r.status != 200 or digest(r.body) != d:
            raise RuntimeError(f"blob {d} of {image['repo']}: {r.status}")
        total += len(r.body)
    return total


def loadgen(host: str, path: str, seconds: float) -> dict:
    out = subprocess.run([str(LOADGEN), "--target", host, "--connections", "4", "--duration",
                          str(seconds), "--request", f"GET {path}"],
                         capture_output=True, text=True, timeout=seconds + 120)
    r = json.loads(out.stdout)
    if r["errors"] or r["non_2xx"]:
        raise RuntimeError(f"loadgen: {r}")
    return r


def write_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def folder_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def eviction_alone(regpin: h.Regpin, warm_path: str, args: argparse.Namespace) -> dict:
    """Warm reads while an eviction runs and nothing else does: the regpin that ingested
    without a limit restarts with one, so its first pass evicts most of what it holds; the
    load generator reads the warm layer in 0.2 s windows from the moment regpin answers, and
    the windows before the pass ended are compared with those after."""
    regpin.stop()
    regpin.config["cache"] = {"max_bytes": args.limit_mib * MiB, "min_free_percent": 0,
                              "protect": "none"}
    with open(regpin.config_path, "w") as f:
        json.dump(regpin.config, f)
    regpin.start()
    windows = []
    t0 = time.time()
    while time.time() - t0 < 4.0:
        began = time.time()
        r = loadgen(regpin.host, warm_path, 0.2)
        windows.append((began, time.time(), r["bytes"] / r["seconds"]))
    status = json.loads(regpin.admin_request("GET", "/api/v1/cache").body)
    pass_end = status["last_pass_ms"] / 1000 if status["passes"] == 1 else None
    # The first pass is the eviction; with more passes, take the first one's end from the log.
    for line in regpin.log().splitlines():
        if "cache: evicted" in line:
            stamp = line.split()[0]
            pass_end = datetime.datetime.fromisoformat(stamp).timestamp()
            break
    during = [w[2] for w in windows if pass_end is not None and w[0] < pass_end]
    after = [w[2] for w in windows if pass_end is not None and w[0] >= pass_end + 0.2]
    return {
        "evicted_bytes": status["evicted_bytes"],
        "pass_seconds": status["pass_seconds"],
        "windows_during": len(during),
        "warm_during_bytes_per_second": statistics.median(during) if during else None,
        "warm_after_bytes_per_second": statistics.median(after) if after else None,
    }


def run(registry: h.Registry, images: list[dict], warm: dict, args: argparse.Namespace,
        limit: bool) -> dict:
    settings = {}
    if limit:
        settings["cache"] = {"max_bytes": args.limit_mib * MiB, "min_free_percent": 0,
                             "protect": "none"}
    if args.regpin:
        os.environ["REGPIN_BIN"] = args.regpin
    regpin = h.Regpin([h.Upstream("bench.test", registry.url, read_timeout_ms=60000)],
                      admin_tokens=[h.AdminToken("bench", "bench-token-0123456789abcdef")],
                      log_level="info", settings=settings).start()
    try:
        pid = regpin.pid
        ingested = pull(regpin, warm)
        warm_path = f"/v2/{warm['repo']}/blobs/{warm['blobs'][1]}"
        loadgen(regpin.host, warm_path, 1.0)  # warm-up
        idle = loadgen(regpin.host, warm_path, args.idle_seconds)
        written_before = write_bytes(pid)

        done = threading.Event()
        windows = []

        def reader() -> None:
            while not done.is_set():
                windows.append(loadgen(regpin.host, warm_path, 1.5))

        t = threading.Thread(target=reader)
        t.start()
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            ingested += sum(pool.map(lambda img: pull(regpin, img), images))
        ingest_seconds = time.monotonic() - start
        done.set()
        t.join()

        status = {}
        if limit:
            # Passes come every 10 s and after growth: wait for one that starts after the last
            # pull and finds the folder within its limit.
            def settled() -> bool:
                nonlocal status
                resp = regpin.admin_request("GET", "/api/v1/cache")
                status = json.loads(resp.body)
                return status["last_pass_ms"] / 1000 > time.time() - 2 and \
                    status["data_folder_bytes"] <= status["limit_bytes"]
            try:
                h.wait_until(settled, timeout=60, interval=0.5, message="a settled eviction pass")
                status["settled"] = True
            except TimeoutError:
                status["settled"] = False
        written = write_bytes(pid) - written_before
        folder = folder_bytes(regpin.data_dir)
        evict_only = {}
        if not limit and args.evict_only:
            evict_only = eviction_alone(regpin, warm_path, args)
        during_bytes = sum(w["bytes"] for w in windows)
        during_seconds = sum(w["seconds"] for w in windows)
        return {
            "limit_bytes": args.limit_mib * MiB if limit else None,
            "ingested_bytes": ingested,
            "ingest_seconds": round(ingest_seconds, 2),
            "data_folder_bytes": folder,
            "written_bytes": written,
            "written_per_ingested": round(written / ingested, 3),
            "warm_idle_bytes_per_second": idle["bytes_per_second"],
            "warm_during_ingest_bytes_per_second": during_bytes / during_seconds if during_seconds else 0,
            "cache": status,
            "eviction_alone": evict_only,
        }
    finally:
        regpin.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--limit-mib", type=int, default=256)
    ap.add_argument("--idle-seconds", type=float, default=4.0)
    ap.add_argument("--no-limit", action="store_true", help="run without cache.max_bytes only")
    ap.add_argument("--control", action="store_true", help="also run without a limit, for comparison")
    ap.add_argument("--regpin", default="", help="the regpin binary (default build/regpin)")
    ap.add_argument("--evict-only", action="store_true",
                    help="after the run without a limit, restart with one and read the warm "
                         "layer while the first pass evicts (no ingest)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if not LOADGEN.exists():
        print("build the load generator first: cmake --build build --target regpin_loadgen", file=sys.stderr)
        return 2

    registry = h.Registry("evict").start()
    try:
        print(f"pushing {args.images} images of {sum(LAYERS) // MiB} MiB and a warm layer", flush=True)
        warm = push(registry, "bench/warm", (64 * MiB,), "warm")
        images = [push(registry, f"bench/app{i}", LAYERS, f"app{i}") for i in range(args.images)]
        results = {}
        if not args.no_limit:
            results["limit"] = run(registry, images, warm, args, limit=True)
            print(json.dumps(results["limit"], indent=2), flush=True)
        if args.no_limit or args.control:
            results["no_limit"] = run(registry, images, warm, args, limit=False)
            print(json.dumps(results["no_limit"], indent=2), flush=True)
    finally:
        registry.close()

    if "limit" in results:
        r = results["limit"]
        over = r["data_folder_bytes"] / r["limit_bytes"]
        warm_ratio = r["warm_during_ingest_bytes_per_second"] / r["warm_idle_bytes_per_second"]
        print(f"data folder {r['data_folder_bytes'] / MiB:.1f} MiB = {over:.3f}x the limit (bar 1.15x); "
              f"written {r['written_per_ingested']}x the bytes ingested (bar 1.5x); "
              f"warm reads during ingest and eviction {warm_ratio:.2f}x idle (bar 0.8x)")
        if "no_limit" in results:
            c = results["no_limit"]
            print(f"without a limit: data folder {c['data_folder_bytes'] / MiB:.1f} MiB, written "
                  f"{c['written_per_ingested']}x, warm during ingest "
                  f"{c['warm_during_ingest_bytes_per_second'] / c['warm_idle_bytes_per_second']:.2f}x idle; "
                  f"with eviction / without: "
                  f"{r['warm_during_ingest_bytes_per_second'] / c['warm_during_ingest_bytes_per_second']:.2f}x")
        print(f"eviction: {r['cache'].get('evictions')} blobs, "
              f"{r['cache'].get('evicted_bytes', 0) / MiB:.0f} MiB, in passes that took "
              f"{r['cache'].get('pass_seconds', 0):.2f} s of the evictor's thread over "
              f"{r['ingest_seconds']} s of ingest")
    alone = results.get("no_limit", {}).get("eviction_alone")
    if alone and alone.get("warm_during_bytes_per_second") and alone.get("warm_after_bytes_per_second"):
        print(f"eviction alone ({alone['evicted_bytes'] / MiB:.0f} MiB in {alone['pass_seconds']:.2f} s): "
              f"warm reads {alone['warm_during_bytes_per_second'] / 1e9:.2f} GB/s during it over "
              f"{alone['windows_during']} window(s), {alone['warm_after_bytes_per_second'] / 1e9:.2f} GB/s after: "
              f"{alone['warm_during_bytes_per_second'] / alone['warm_after_bytes_per_second']:.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
