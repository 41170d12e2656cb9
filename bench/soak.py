#!/usr/bin/env python3
"""Bounded soak test (not part of CI): mixed traffic through regpin from a real docker-registry.

Starts, on 127.0.0.1, a docker-registry filled with synthetic images, and regpin in front of
it; runs bench/loadgen with 128 keep-alive connections for --minutes (default 10) over a mix of
tag HEADs, manifest GETs by tag and by digest, warm blobs, and cold blobs (layers nobody asked
for yet, one new set per minute); samples regpin's RSS and open file descriptors every
--sample seconds. Prints the samples and a summary, writes them as JSON to --out, and exits
non-zero when any request failed or RSS / descriptors grew after warm-up.

    python3 bench/soak.py --minutes 10 --out bench/soak-result.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import harness as h  # noqa: E402


def proc_stats(pid: int) -> tuple[int, int]:
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kb, fds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=128)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between RSS/fd samples")
    ap.add_argument("--cold-sets", type=int, default=10, help="sets of cold layers (one per segment)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    loadgen = ROOT / "build" / "bench" / "regpin_loadgen"
    if not loadgen.exists():
        print(f"build the load generator first: cmake --build build --target regpin_loadgen", file=sys.stderr)
        return 2

    registry = h.Registry("soak").start()
    layout = h.OciLayout(h.make_temp_dir("soak-layout"))
    warm = h.make_image(layout, "warm", seed="soak-warm", layer_sizes=(4 << 20, 1 << 20))
    h.push(layout, "soak/app:warm", registry, source_tag="warm")
    cold_sets = []
    for i in range(args.cold_sets):
        img = h.make_image(layout, f"cold{i}", seed=f"soak-cold-{i}", layer_sizes=(2 << 20,) * 4)
        h.push(layout, f"soak/app:cold{i}", registry, source_tag=f"cold{i}")
        cold_sets.append(img)
    regpin = h.Regpin([h.Upstream("docker.io", registry.url)], log_level="warn").start()
    pid = regpin.pid
    try:
        base = [
            ("HEAD /v2/soak/app/manifests/warm?ns=docker.io", 4),
            ("GET /v2/soak/app/manifests/warm?ns=docker.io", 2),
            (f"GET /v2/soak/app/manifests/{warm.digest}?ns=docker.io", 2),
        ] + [(f"GET /v2/soak/app/blobs/{d}?ns=docker.io", 1) for d in warm.layer_digests]
        segment = args.minutes * 60 / len(cold_sets)
        samples, results = [], []
        started = time.monotonic()
        for i, img in enumerate(cold_sets):
            mix = base + [(f"GET /v2/soak/app/blobs/{d}?ns=docker.io", 1) for d in img.layer_digests]
            cmd = [str(loadgen), "--target", regpin.host, "--connections", str(args.connections),
                   "--duration", str(segment), "--threads", "1",
                   "--header", "Accept: " + h.ACCEPT_ALL_MANIFESTS]
            for req, weight in mix:
                cmd += ["--request", req, "--weight", str(weight)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            seg_end = time.monotonic() + segment + 60
            while proc.poll() is None and time.monotonic() < seg_end:
                rss, fds = proc_stats(pid)
                samples.append({"t": round(time.monotonic() - started, 1), "rss_mib": round(rss / 1024, 1), "fds": fds})
                print(f"t={samples[-1]['t']:7.1f}s rss={samples[-1]['rss_mib']:7.1f} MiB fds={fds}", flush=True)
                try:
                    proc.wait(timeout=args.sample)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                proc.kill()
            out, _ = proc.communicate()
            results.append(json.loads(out))
        total = sum(r["requests"] for r in results)
        errors = sum(r["errors"] + r["non_2xx"] for r in results)
        # Flat after warm-up: the peak of the last quarter against the peak of the second
        # quarter (memtables and caches fill during the first quarter, then plateau).
        span = args.minutes * 60
        second = [s for s in samples if span / 4 <= s["t"] < span / 2] or samples
        last = [s for s in samples if s["t"] >= 3 * span / 4] or samples
        rss_growth = max(s["rss_mib"] for s in last) - max(s["rss_mib"] for s in second)
        fd_growth = max(s["fds"] for s in last) - max(s["fds"] for s in second)
        summary = {
            "minutes": args.minutes, "connections": args.connections, "requests": total, "errors": errors,
            "requests_per_second": round(total / (args.minutes * 60), 1),
            "rss_mib_max": max(s["rss_mib"] for s in samples), "rss_growth_after_warmup_mib": rss_growth,
            "fds_max": max(s["fds"] for s in samples), "fd_growth_after_warmup": fd_growth,
            "segments": results, "samples": samples,
        }
        print(json.dumps({k: v for k, v in summary.items() if k not in ("segments", "samples")}, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(summary, indent=2))
        flat = rss_growth <= 16 and fd_growth <= 8
        return 0 if errors == 0 and flat else 1
    finally:
        regpin.close()
        registry.close()


if __name__ == "__main__":
    sys.exit(main())
