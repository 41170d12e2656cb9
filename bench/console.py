#!/usr/bin/env python3
"""The console's API with many pins (issue 16: "quick with 100,000 pins").

Starts on 127.0.0.1 a docker-registry with one image, and two regpins on their own data
folders: one with 10 pins, one with --pins (default 100,000), both seeded through the pin store
by bench/regpin_seed_pins after a real first pull (as bench/run.py's workload f does). Then
times, on each, what the console's pages ask for (median and worst of --repeat requests, one
connection, keep-alive like a browser):

- the console's files (/ui/, console.js);
- the pins page: the first page, a page in the middle (`after`), a search that matches 11 tags
  near the end of the key order (`q=t9999`: the worst case, a scan of nearly every pin), a
  search that matches nothing (every pin scanned), a state filter that matches nothing;
- a pin page (GET /api/v1/pin and the two audit queries it makes);
- the events page's first look (`last=100`).

    python3 bench/console.py [--pins 100000] [--repeat 20] [--out bench/console-result.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import harness as h  # noqa: E402

SEED_PINS = ROOT / "build" / "bench" / "regpin_seed_pins"
ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json, "
          "application/vnd.docker.distribution.manifest.v2+json, */*")
TOKEN = "bench-console-token-0123456789"


def timed(host: str, paths: list[str], repeat: int) -> dict:
    """Median and worst milliseconds of `repeat` loads of a page (GETs of every path, one after
    the other, on one kept-alive connection, with the admin token)."""
    hostname, port = host.rsplit(":", 1)
    conn = http.client.HTTPConnection(hostname, int(port), timeout=60)
    samples = []
    size = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        size = 0
        for path in paths:
            conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
            size += len(body)
        samples.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return {"median_ms": round(statistics.median(samples), 2), "max_ms": round(max(samples), 2),
            "bytes": size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pins", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if not SEED_PINS.exists():
        print(f"missing {SEED_PINS}: cmake --build build --target regpin_seed_pins", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="regpin-bench-console-")
    upstream = h.Registry("bench-console").start()
    results: dict = {"pins": {}}
    try:
        layout = h.OciLayout(os.path.join(work, "layout"))
        img = h.make_image(layout, "t0", seed="bench-console", platforms=("linux/amd64", "linux/arm64"))
        h.push(layout, "bench/console:t0", upstream, source_tag="t0")
        for count in (10, args.pins):
            data = os.path.join(work, f"data-{count}")
            os.makedirs(data)
            rp = h.Regpin([h.Upstream(upstream.host, upstream.url)], data_dir=data, log_level="warn",
                          admin_tokens=[h.AdminToken("bench", TOKEN)]).start()
            first = rp.request("GET", h.with_query("/v2/bench/console/manifests/t0", ns=upstream.host),
                               {"Accept": ACCEPT})
            assert first.status == 200, first.body
            rp.stop()
            t0 = time.monotonic()
            subprocess.run([str(SEED_PINS), "--data", data, "--registry", upstream.host, "--repository",
                            "bench/console", "--prefix", "t", "--first", "1", "--count", str(count - 1),
                            "--digest", first.header("Docker-Content-Digest"), "--media-type",
                            first.header("Content-Type"), "--size", str(len(first.body)), "--accept", ACCEPT],
                           check=True, capture_output=True, timeout=7200)
            seeded = time.monotonic() - t0
            rp.start()
            pins = lambda **q: "/api/v1/pins?" + urllib.parse.urlencode({"limit": 50, **q})  # noqa: E731
            middle = f"{upstream.host}\nbench/console\nt{count // 2}\n0"
            pin_query = urllib.parse.urlencode({"registry": upstream.host, "repository": "bench/console",
                                                "tag": f"t{count // 2}"})
            audit = "/api/v1/audit?" + urllib.parse.urlencode(
                {"digest": img.digest, "ref": f"{upstream.host}/bench/console"})
            cases = {
                "ui_files": ["/ui/", "/ui/console.js"],
                "pins_first_page": [pins()],
                "pins_middle_page": [pins(after=middle)],
                "pins_search_near_end": [pins(q="t9999")],
                "pins_search_no_match": [pins(q="no-such-tag")],
                "pins_state_no_match": [pins(state="rejected")],
                "pin_page": [f"/api/v1/pin?{pin_query}", audit, audit],
                "events_last_100": ["/api/v1/events?last=100"],
            }
            cell = {"seed_seconds": round(seeded, 1)}
            for name, paths in cases.items():
                cell[name] = timed(rp.admin_host, paths, args.repeat)
                print(f"{count:>7} pins  {name:<22} median {cell[name]['median_ms']:8.2f} ms  "
                      f"max {cell[name]['max_ms']:8.2f} ms", flush=True)
            results["pins"][str(count)] = cell
            rp.close()
    finally:
        upstream.close()
        h.remove_temp_dir(work)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
