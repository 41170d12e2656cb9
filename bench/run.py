#!/usr/bin/env python3
"""regpin side by side with its peers, in one run on one machine (issue 6).

Starts on 127.0.0.1: a docker-registry holding the test content (the upstream), a second
docker-registry in proxy mode in front of it (the peer: `proxy: remoteurl:`), nginx serving
the upstream's own blob files with sendfile (the near-physical reference), and regpin in front
of the same upstream. Runs the same workloads against each and writes a Markdown table with
absolute numbers, ratios and the bar for each to --out (default bench/RESULTS.md), and every
raw measurement as JSON next to it.

    python3 bench/run.py                      # everything (about 20 minutes, ~20 GiB of disk)
    python3 bench/run.py --only a,b --rounds 1
    python3 bench/run.py --profile            # also perf profiles of workloads a and b

Workloads (see bench/README.md): a warm 1 GiB blob GET, b manifest by tag HEAD/GET,
c cold herd, d peak RSS incl. a 4 GiB blob, e containerd pull, f 100,000 pins, g pins on etcd,
h rollout (64 clients' first requests for one manifest at once, upstream requests counted), i warm GETs while
eviction runs.
Load comes from build/bench/regpin_loadgen (keep-alive GET and HEAD; wrk cannot send HEAD),
the same binary against every server.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import harness as h  # noqa: E402

BUILD = Path(os.environ.get("REGPIN_BUILD_DIR", ROOT / "build"))
LOADGEN = BUILD / "bench" / "regpin_loadgen"
SEED_PINS = BUILD / "bench" / "regpin_seed_pins"
MiB = 1 << 20
GiB = 1 << 30
NOTES_HEADING = "## Notes"
# What containerd 1.6 sends when it resolves a tag.
CONTAINERD_ACCEPT = (
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"
)
# Workload h: clients asking at once, and how long after the last answer the upstream's log is
# read (requests a server makes in the background after answering count too).
ROLLOUT_CLIENTS = 64
ROLLOUT_SETTLE_SECONDS = 3.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Processes and their memory
# --------------------------------------------------------------------------------------------


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Memory:
    """Peak RSS of a set of processes over a stretch of time: VmHWM reset through
    /proc/PID/clear_refs (5) at the start, read at the end (summed over the processes)."""

    def __init__(self, pids: Callable[[], list[int]]):
        self.pids = pids

    def reset(self) -> None:
        for pid in self.pids():
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")

    def peak_mib(self) -> float:
        return sum(status_kib(pid, "VmHWM") for pid in self.pids()) / 1024

    def rss_mib(self) -> float:
        return sum(status_kib(pid, "VmRSS") for pid in self.pids()) / 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time the processes have used so far."""
        total = 0
        for pid in self.pids():
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class Nginx:
    """nginx serving `root` on 127.0.0.1 with sendfile, workers as root (the files sit in
    0700 temp dirs), no access log: the fastest static server Debian has."""

    def __init__(self, root: str):
        self.dir = h.make_temp_dir("nginx")
        self.port = h.free_port()
        self.root = root
        os.makedirs(os.path.join(self.dir, "tmp"))
        self.conf = os.path.join(self.dir, "nginx.conf")
        tmp = os.path.join(self.dir, "tmp")
        with open(self.conf, "w") as f:
            f.write(
                "user root;\n"
                "worker_processes auto;\n"
                f"pid {self.dir}/nginx.pid;\n"
                f"error_log {self.dir}/error.log warn;\n"
                "daemon off;\n"
                "events { worker_connections 1024; }\n"
                "http {\n"
                "  access_log off;\n"
                "  sendfile on;\n"
                "  tcp_nopush on;\n"
                "  keepalive_requests 1000000;\n"
                "  default_type application/octet-stream;\n"
                f"  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};\n"
                f"  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n"
                f"  server {{ listen 127.0.0.1:{self.port}; root {root}; }}\n"
                "}\n"
            )
        self.proc = h._spawn(["nginx", "-e", f"{self.dir}/error.log", "-c", self.conf],
                             os.path.join(self.dir, "stdout.log"))
        h.wait_until(lambda: self.proc.poll() is None and h.http_request(self.host, "GET", "/", timeout=2).status in (200, 403, 404),
                     timeout=15, message="nginx")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def close(self) -> None:
        h._terminate(self.proc, timeout=10)
        h.remove_temp_dir(self.dir)


def proxy_registry(upstream: h.Registry) -> h.Registry:
    """The peer: docker-registry in proxy mode in front of `upstream`, at its best: access
    log off and log level warn (regpin logs no line per request either)."""
    peer = h.Registry("peer")
    with open(peer.config_path) as f:
        config = f.read()
    config = config.replace("  level: info\n", "  level: warn\n").replace("    disabled: false\n", "    disabled: true\n")
    config += f"proxy:\n  remoteurl: {upstream.url}\n"
    with open(peer.config_path, "w") as f:
        f.write(config)
    return peer.start()


# --------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------


def random_file(path: str, size: int) -> str:
    """Writes `size` random bytes to `path`; returns the sha256 digest."""
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 8 * MiB))
            sha.update(block)
            f.write(block)
            left -= len(block)
    return "sha256:" + sha.hexdigest()


def upstream_blob_file(registry: h.Registry, digest: str) -> str:
    hexd = digest.split(":", 1)[1]
    return os.path.join(registry.storage_dir, "docker/registry/v2/blobs/sha256", hexd[:2], hexd, "data")


def upstream_blob_bytes(registry: h.Registry, digest: str) -> int:
    """Bytes the upstream sent for GETs of this blob, from its access log."""
    registry.sync_log()
    return sum(e.size for e in registry.access_log() if e.method == "GET" and e.path.endswith("/blobs/" + digest))


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


def loadgen(host: str, requests: list[str], *, connections: int, duration: float,
            max_requests: int = 0, headers: tuple[str, ...] = (), threads: int = 1) -> dict:
    cmd = [str(LOADGEN), "--target", host, "--connections", str(connections), "--duration", str(duration),
           "--threads", str(threads)]
    if max_requests:
        cmd += ["--requests", str(max_requests)]
    for r in requests:
        cmd += ["--request", r]
    for hd in headers:
        cmd += ["--header", hd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 600)
    try:
        result = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stdout} {out.stderr}")
    if result["errors"] or result["non_2xx"]:
        raise RuntimeError(f"loadgen against {host}: {result}")
    return result


def all_at_once(host: str, method: str, path: str, clients: int, timeout: float = 120.0) -> tuple[list, float]:
    """`clients` threads, each on its own connection (opened first), released together by a
    barrier to send one `method` request for `path` (containerd's Accept). Returns each
    client's (status, Docker-Content-Digest, body) or the exception it met, and the wall seconds
    from the first release to the last answer."""
    hostname, _, port = host.rpartition(":")
    barrier = threading.Barrier(clients)
    answers: list = [None] * clients
    started = [0.0] * clients
    ended = [0.0] * clients

    def one(i: int) -> None:
        conn = http.client.HTTPConnection(hostname, int(port), timeout=timeout)
        try:
            conn.connect()
            barrier.wait(timeout=60)
            started[i] = time.monotonic()
            conn.request(method, path, headers={"Accept": CONTAINERD_ACCEPT})
            resp = conn.getresponse()
            body = resp.read()
            ended[i] = time.monotonic()
            answers[i] = (resp.status, resp.getheader("Docker-Content-Digest"), body)
        except Exception as e:  # noqa: BLE001 - reported per client by the caller
            barrier.abort()  # no one waits 60 s for a client that could not connect
            answers[i] = e
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout + 70)
    answered = [e for e in ended if e]
    wall = max(answered) - min(s for s in started if s) if answered else float("nan")
    return answers, wall


def served_right(answers: list, method: str, digest: str) -> tuple[int, list[str]]:
    """How many answers are a 200 with `digest` as Docker-Content-Digest (and, for a GET, a
    body that hashes to it); the first few wrong ones, described."""
    ok, wrong = 0, []
    for i, a in enumerate(answers):
        if isinstance(a, tuple) and a[0] == 200 and a[1] == digest and (
                method == "HEAD" or "sha256:" + hashlib.sha256(a[2]).hexdigest() == digest):
            ok += 1
        elif len(wrong) < 5:
            wrong.append(f"client {i}: {a[0]} {a[1]} {a[2][:120]!r}" if isinstance(a, tuple) else f"client {i}: {a!r}")
    return ok, wrong


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.results: dict[str, Any] = {"workloads": {}}
        self.work = h.make_temp_dir("bench")
        self.upstream = h.Registry("bench-upstream").start()
        self.peer = proxy_registry(self.upstream)
        self.regpin = self.new_regpin()
        self.nginx_root = os.path.join(self.work, "www")
        self.nginx = Nginx(self.nginx_root)
        self.mem = {
            "regpin": Memory(lambda: [self.regpin.pid]),
            "peer": Memory(lambda: [self.peer._proc.pid]),
            "nginx": Memory(self.nginx.pids),
        }
        self.hosts = {"regpin": self.regpin.host, "peer": self.peer.host, "nginx": self.nginx.host}
        # --before BIN: another regpin build (the commit before a change) beside this one, in
        # every cell of a, b and f, interleaved with it.
        self.before: Optional[h.Regpin] = None
        if args.before:
            self.before = self.new_regpin(binary=args.before)
            self.mem["before"] = Memory(lambda: [self.before.pid])
            self.hosts["before"] = self.before.host

    def regpins(self) -> tuple[str, ...]:
        """The regpin systems of a cell: this build, and the --before build when given."""
        return ("regpin", "before") if self.before else ("regpin",)

    def fresh_regpin(self) -> None:
        """Replaces regpin by one on an empty data folder, so workloads that compare regpin's
        memory (the 1 GiB and the 4 GiB blob) start from the same state."""
        self.regpin.close()
        self.regpin = self.new_regpin()
        self.hosts["regpin"] = self.regpin.host
        if self.before:
            self.before.close()
            self.before = self.new_regpin(binary=self.args.before)
            self.hosts["before"] = self.before.host

    def new_regpin(self, data_dir: Optional[str] = None, binary: Optional[str] = None,
                   upstream: Optional[h.Registry] = None, settings: Optional[dict] = None) -> h.Regpin:
        upstream = upstream or self.upstream
        up = h.Upstream(upstream.host, upstream.url, read_timeout_ms=60000)
        rp = h.Regpin([up], log_level="info", data_dir=data_dir, settings=settings)
        if binary:
            rp.binary = binary
        return rp.start()

    def close(self) -> None:
        for thing in (self.nginx, self.regpin, self.before, self.peer, self.upstream):
            if thing is None:
                continue
            try:
                thing.close()
            except Exception as e:  # noqa: BLE001 - best effort cleanup
                log(f"cleanup: {e}")
        h.remove_temp_dir(self.work)

    def record(self, workload: str, key: str, value: Any) -> None:
        self.results["workloads"].setdefault(workload, {})[key] = value

    def measured(self, system: str, fn: Callable[[], dict]) -> dict:
        """Runs fn with system's peak RSS reset before and read after."""
        self.mem[system].reset()
        out = fn()
        out["peak_rss_mib"] = round(self.mem[system].peak_mib(), 1)
        return out

    def interleaved(self, systems: tuple[str, ...], fn: Callable[[str], dict], key: str, *,
                    rounds: int = 0, alternate: bool = False) -> dict[str, dict]:
        """`rounds` (default --rounds) runs of fn(system) for each system, interleaved (a, b, c,
        a, b, c, ...; with `alternate` every other round reversed: a, b, b, a, ...) so drift on
        the machine hits every system alike; per system the median run by `key`, with every
        run's value and the highest peak RSS."""
        runs: dict[str, list[dict]] = {s: [] for s in systems}
        for rnd in range(rounds or self.args.rounds):
            for system in systems[::-1] if alternate and rnd % 2 else systems:
                runs[system].append(self.measured(system, lambda: fn(system)))
        out = {}
        for system, rs in runs.items():
            rs.sort(key=lambda r: r[key])
            best = dict(rs[len(rs) // 2])
            best["runs"] = [r[key] for r in rs]
            best["peak_rss_mib"] = max(r["peak_rss_mib"] for r in rs)
            out[system] = best
        return out

    def blob(self, name: str, size: int, sync: bool = True) -> str:
        """Pushes `size` random bytes to the upstream; `sync`: then writes back the dirty pages
        (a caller pushing many blobs syncs once, after the last)."""
        path = os.path.join(self.work, name)
        digest = random_file(path, size)
        self.upstream.upload_blob("bench/blobs", digest, path)
        os.unlink(path)
        if sync:
            os.sync()
        return digest

    def link_for_nginx(self, digest: str) -> str:
        target = f"/v2/bench/blobs/blobs/{digest}"
        path = self.nginx_root + target
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            os.symlink(upstream_blob_file(self.upstream, digest), path)
        return target

    # -- a + d: warm blob GETs, cold first fetch, RSS by blob size --------------------------

    def blob_workload(self, label: str, size: int, client_counts: tuple[int, ...], gets_per_client: int) -> None:
        log(f"{label}: pushing a {size // MiB} MiB blob")
        digest = self.blob(label, size)
        self.fresh_regpin()
        target = self.link_for_nginx(digest)
        path = f"/v2/bench/blobs/blobs/{digest}"
        for system in self.regpins() + ("peer",):
            log(f"{label}: cold fetch through {system}")
            cold = self.measured(system, lambda: loadgen(self.hosts[system], [f"GET {path}"], connections=1,
                                                         duration=3600, max_requests=1))
            if cold["bytes"] != size:
                raise RuntimeError(f"{system} served {cold['bytes']} of {size} bytes")
            self.record(label, f"cold/{system}", cold)
        os.sync()  # the pushes' and cold fetches' writeback must not run during warm GETs
        for clients in client_counts:
            log(f"{label}: warm GET, {clients} client(s), {self.args.rounds} round(s)")
            cells = self.interleaved(
                ("nginx",) + self.regpins() + ("peer",),
                lambda system: loadgen(self.hosts[system], [f"GET {target if system == 'nginx' else path}"],
                                       connections=clients, duration=3600, max_requests=clients * gets_per_client),
                "bytes_per_second")
            for system, r in cells.items():
                self.record(label, f"warm{clients}/{system}", r)

    # -- b: manifests by tag ---------------------------------------------------------------

    def app_image(self) -> str:
        """A small image in the upstream (once); returns its manifest-by-tag path."""
        if not getattr(self, "_app_pushed", False):
            log("pushing a small image")
            layout = h.OciLayout(os.path.join(self.work, "layout-b"))
            h.make_image(layout, "v1", seed="bench-b", layer_sizes=(4096,))
            h.push(layout, "bench/app:v1", self.upstream, source_tag="v1")
            self._app_pushed = True
        return "/v2/bench/app/manifests/v1"

    def manifest_workload(self) -> None:
        path = self.app_image()
        hdr = (f"Accept: {CONTAINERD_ACCEPT}",)
        for system in self.regpins() + ("peer",):  # first sight: pins, caches
            loadgen(self.hosts[system], [f"GET {path}"], connections=1, duration=30, max_requests=1, headers=hdr)
        for method in ("HEAD", "GET"):
            for conns in (1, 16, 64):
                log(f"b: {method} by tag, {conns} connection(s)")
                cells = self.interleaved(
                    self.regpins() + ("peer",),
                    lambda system: loadgen(self.hosts[system], [f"{method} {path}"], connections=conns,
                                           duration=self.args.seconds, headers=hdr),
                    "requests_per_second")
                for system, r in cells.items():
                    self.record("b", f"{method}{conns}/{system}", r)

    # -- c: cold herd ------------------------------------------------------------------------

    def herd_workload(self) -> None:
        size = self.args.herd_mib * MiB
        for rnd in range(self.args.rounds):
            for system in ("regpin", "peer"):
                log(f"c: round {rnd + 1}, {system}: one cold client, then 16 at once")
                one = self.blob(f"c-{system}-one-{rnd}", size)
                herd = self.blob(f"c-{system}-herd-{rnd}", size)
                host = self.hosts[system]
                single = self.measured(system, lambda: loadgen(host, [f"GET /v2/bench/blobs/blobs/{one}"], connections=1,
                                                               duration=3600, max_requests=1))
                many = self.measured(system, lambda: loadgen(host, [f"GET /v2/bench/blobs/blobs/{herd}"], connections=16,
                                                             duration=3600, max_requests=16))
                if many["requests"] != 16 or many["bytes"] != 16 * size:
                    raise RuntimeError(f"herd through {system}: {many}")
                # The same 16 clients again, warm: what delivering 16 copies costs by itself.
                warm = self.measured(system, lambda: loadgen(host, [f"GET /v2/bench/blobs/blobs/{herd}"], connections=16,
                                                             duration=3600, max_requests=16))
                self.results["workloads"].setdefault("c", {}).setdefault(system, []).append({
                    "single_seconds": single["seconds"],
                    "herd_seconds": many["seconds"],
                    "herd_warm_seconds": warm["seconds"],
                    "upstream_bytes_single": upstream_blob_bytes(self.upstream, one),
                    "upstream_bytes_herd": upstream_blob_bytes(self.upstream, herd),
                    "blob_bytes": size,
                    "peak_rss_mib": max(single["peak_rss_mib"], many["peak_rss_mib"]),
                })
            # The physical reference: nginx sending the same 16 copies of the upstream's file.
            log(f"c: round {rnd + 1}, nginx: 16 clients")
            target = self.link_for_nginx(herd)
            warm = self.measured("nginx", lambda: loadgen(self.hosts["nginx"], [f"GET {target}"], connections=16,
                                                          duration=3600, max_requests=16))
            if warm["bytes"] != 16 * size:
                raise RuntimeError(f"herd through nginx: {warm}")
            self.results["workloads"]["c"].setdefault("nginx", []).append(
                {"herd_warm_seconds": warm["seconds"], "peak_rss_mib": warm["peak_rss_mib"]})

    # -- i: warm GETs while eviction runs ---------------------------------------------------

    def eviction_workload(self) -> None:
        """Warm 1 GiB GETs (1 client) on a regpin whose cache is capped (cache.max_bytes), alone
        and while a second client pulls never-seen blobs through it, so that every pass of the
        evictor removes blobs during the GETs; and the same pulls on a regpin without a cap (no
        eviction), which separates what the evictions cost from what the downloads cost."""
        churn_size, churn_per_run = 64 * MiB, 8
        cap = GiB + 512 * MiB  # the hot GiB, and about 6 churn blobs beside it
        log("i: pushing a 1 GiB blob and the churn blobs")
        hot = self.blob("i-hot", GiB, sync=False)
        rounds = self.args.rounds
        churn = {s: [[self.blob(f"i-{s}-{r}-{k}", churn_size, sync=False) for k in range(churn_per_run)]
                     for r in range(rounds)] for s in ("capped", "uncapped")}
        os.sync()
        servers = {
            "capped": self.new_regpin(settings={"cache": {"max_bytes": cap, "min_free_percent": 0}}),
            "uncapped": self.new_regpin(),
        }
        try:
            hot_path = f"/v2/bench/blobs/blobs/{hot}"
            for rp in servers.values():
                loadgen(rp.host, [f"GET {hot_path}"], connections=1, duration=3600, max_requests=1)
            os.sync()

            def warm(system: str) -> dict:
                return loadgen(servers[system].host, [f"GET {hot_path}"], connections=1, duration=3600,
                               max_requests=5)

            def evictions(system: str) -> float:
                return h.metric_value(servers[system].metrics_text(), "regpin_cache_evictions_total")

            out: dict[str, list[dict]] = {"alone": [], "capped": [], "uncapped": []}
            for rnd in range(rounds):
                log(f"i: round {rnd + 1}: warm GETs alone, then beside cold pulls, capped and not")
                out["alone"].append(warm("capped"))
                for system in ("capped", "uncapped") if rnd % 2 == 0 else ("uncapped", "capped"):
                    done = threading.Event()
                    pulled: list[int] = []

                    def pull_churn(sys_name: str = system) -> None:
                        for d in churn[sys_name][rnd]:  # bounded: churn_per_run blobs at most
                            if done.is_set():
                                break
                            r = loadgen(servers[sys_name].host, [f"GET /v2/bench/blobs/blobs/{d}"], connections=1,
                                        duration=600, max_requests=1)
                            pulled.append(r["bytes"])

                    before = evictions(system)
                    t = threading.Thread(target=pull_churn)
                    t.start()
                    try:
                        cell = warm(system)
                    finally:
                        done.set()
                        t.join()
                    cell["evictions"] = evictions(system) - before
                    cell["churn_pulled_bytes"] = sum(pulled)
                    out[system].append(cell)
            hot_up = upstream_blob_bytes(self.upstream, hot)
        finally:
            for rp in servers.values():
                rp.close()
        if hot_up != 2 * GiB:  # one cold fetch per regpin: the hot blob was never evicted
            raise RuntimeError(f"i: the upstream sent the hot blob {hot_up} bytes, not 2 GiB: it was evicted")
        if not any(c["evictions"] for c in out["capped"]):
            raise RuntimeError("i: no eviction ran beside the warm GETs")
        self.results["workloads"]["i"] = {
            k: sorted(v, key=lambda r: r["bytes_per_second"]) for k, v in out.items()} | {
            "cap_bytes": cap, "churn_blob_bytes": churn_size}

    # -- e: containerd pull ------------------------------------------------------------------

    def pull_workload(self) -> None:
        log("e: building and pushing a 10-layer image")
        layout = h.OciLayout(os.path.join(self.work, "layout-e"))
        layer = self.args.pull_mib * MiB // 10
        h.make_image(layout, "v1", seed="bench-e", layer_sizes=(layer,) * 10)
        h.push(layout, "bench/pull:v1", self.upstream, source_tag="v1")
        shutil.rmtree(layout.path)
        ref = f"{self.upstream.host}/bench/pull:v1"
        with h.Containerd() as ctrd:
            def pull(system: str) -> dict:
                """One `ctr images pull`, timed in its two parts: `ctr content fetch` (the
                mirror's work: resolve, manifests, blobs into containerd's content store), then
                `ctr images pull` of the fetched image (unpacking into snapshots: containerd's
                work, with the server's CPU time meanwhile recorded to show it). The sync first
                keeps the previous pull's writeback out of this one."""
                log(f"e: pull through {system}")
                ctrd.forget_everything()
                os.sync()
                h.write_hosts_toml(ctrd.hosts_dir, self.upstream.host, "http://" + self.hosts[system])
                started = time.monotonic()
                ctrd.fetch(ref)
                fetched, cpu = time.monotonic(), self.mem[system].cpu_seconds()
                ctrd.pull(ref)
                done = time.monotonic()
                return {"seconds": done - started, "fetch_seconds": fetched - started, "unpack_seconds": done - fetched,
                        "server_cpu_seconds_in_unpack": self.mem[system].cpu_seconds() - cpu}

            systems = ("regpin", "peer")
            for system in systems:  # first sight: the cold pulls
                self.record("e", f"cold/{system}", pull(system))
            # Pulls vary more than the other cells (containerd unpacks on the same 2 cores, and
            # the machine's page cache is full of the earlier workloads): at least 6 rounds, the
            # order reversed every other round so neither side always follows the other.
            cells = self.interleaved(systems, pull, "seconds", rounds=max(self.args.rounds, 6), alternate=True)
            for system, r in cells.items():
                self.record("e", f"warm/{system}", r)

    # -- f: 10, 100,000 and 1,000,000 pins ---------------------------------------------------

    def scale_workload(self) -> None:
        """A regpin on its own data folder for 10 pins and for each count of --pins, all
        seeded through the pin store after a real first pull of the same manifest; start-up
        (to the first answered request) and idle RSS of each; tag HEADs at 64 connections
        against each, interleaved."""
        log("f: pushing the scale image")
        layout = h.OciLayout(os.path.join(self.work, "layout-f"))
        h.make_image(layout, "t0", seed="bench-f", layer_sizes=(4096,))
        h.push(layout, "bench/scale:t0", self.upstream, source_tag="t0")
        hdr = f"Accept: {CONTAINERD_ACCEPT}"
        cases = {f"pins{n}": n for n in [10, *self.args.pin_counts]}
        if self.before:
            cases.update({f"before/{name}": n for name, n in list(cases.items())})
        servers: dict[str, h.Regpin] = {}
        info: dict[str, dict] = {}
        try:
            for name, count in cases.items():
                data = os.path.join(self.work, f"scale-{name.replace('/', '-')}")
                os.makedirs(data)
                binary = self.args.before if name.startswith("before/") else None
                rp = servers[name] = self.new_regpin(data_dir=data, binary=binary)
                first = h.http_request(rp.host, "GET", "/v2/bench/scale/manifests/t0", {"Accept": CONTAINERD_ACCEPT})
                if first.status != 200:
                    raise RuntimeError(f"f: first pull {first.status}")
                rp.stop()
                log(f"f: seeding {count} pins")
                t0 = time.monotonic()
                subprocess.run([str(SEED_PINS), "--data", data, "--registry", self.upstream.host, "--repository",
                                "bench/scale", "--prefix", "t", "--first", "1", "--count", str(count - 1), "--digest",
                                first.header("Docker-Content-Digest"), "--media-type", first.header("Content-Type"),
                                "--size", str(len(first.body)), "--accept", CONTAINERD_ACCEPT],
                               check=True, capture_output=True, timeout=3600)
                seeded = time.monotonic() - t0
                t0 = time.monotonic()
                rp.start()
                startup = time.monotonic() - t0
                info[name] = {"pins": count, "seed_seconds": round(seeded, 1), "startup_seconds": round(startup, 3),
                              "idle_rss_mib": round(status_kib(rp.pid, "VmRSS") / 1024, 1)}
                self.mem[name] = Memory(lambda rp=rp: [rp.pid])
                self.hosts[name] = rp.host
            step = {name: max(1, count // 10) for name, count in cases.items()}
            log(f"f: tag HEADs at 64 connections, {self.args.rounds} round(s)")
            cells = self.interleaved(
                tuple(cases),
                lambda name: loadgen(self.hosts[name], [f"HEAD /v2/bench/scale/manifests/t{i * step[name]}" for i in range(10)],
                                     connections=64, duration=self.args.seconds, headers=(hdr,)),
                "requests_per_second")
            for name, rp in servers.items():
                t0 = time.monotonic()
                metrics = h.http_request(rp.admin_host, "GET", "/metrics")
                cells[name]["metrics_scrape_seconds"] = round(time.monotonic() - t0, 4)
                cells[name]["metrics_pins"] = [ln for ln in metrics.body.decode().splitlines() if ln.startswith("regpin_pins ")]
                cells[name].update(info[name])
                self.record("f", name, cells[name])
        finally:
            for rp in servers.values():
                rp.close()

    # -- g: pins on etcd (issue 13) ------------------------------------------------------------

    def etcd_regpin(self, prefix: str, **kwargs: Any) -> h.Regpin:
        up = h.Upstream(self.upstream.host, self.upstream.url, read_timeout_ms=60000)
        settings = {"pin_store": {"backend": "etcd", "endpoints": self.etcd.endpoints, "prefix": prefix}}
        settings.update(kwargs.pop("settings", {}))
        return h.Regpin([up], log_level="info", settings=settings, **kwargs).start()

    def etcd_workload(self) -> None:
        """Against a 3-member etcd cluster on the same machine: tag HEADs and GETs at 1, 16 and 64
        connections, the embedded pin store against the etcd one, interleaved; start-up with
        --pins pins in etcd; and the upstream manifest requests of background checks with 1
        replica against 3."""
        self.etcd = h.EtcdCluster(3).start()
        try:
            path = self.app_image()
            hdr = (f"Accept: {CONTAINERD_ACCEPT}",)
            shared = self.etcd_regpin("/bench-b/")
            self.hosts["regpin-etcd"] = shared.host
            self.mem["regpin-etcd"] = Memory(lambda: [shared.pid])
            try:
                for system in ("regpin", "regpin-etcd"):  # first sight: pins, caches
                    loadgen(self.hosts[system], [f"GET {path}"], connections=1, duration=30, max_requests=1, headers=hdr)
                for method in ("HEAD", "GET"):
                    for conns in (1, 16, 64):
                        log(f"g: {method} by tag, {conns} connection(s), embedded vs etcd")
                        cells = self.interleaved(
                            ("regpin", "regpin-etcd"),
                            lambda system: loadgen(self.hosts[system], [f"{method} {path}"], connections=conns,
                                                   duration=self.args.seconds, headers=hdr),
                            "requests_per_second", alternate=True)
                        for system, r in cells.items():
                            self.record("g", f"{method}{conns}/{system}", r)
                first = h.http_request(shared.host, "GET", path, {"Accept": CONTAINERD_ACCEPT})
            finally:
                shared.close()
            self.etcd_startup(first)
            self.etcd_checks()
        finally:
            self.etcd.close()

    def etcd_startup(self, first: h.Response) -> None:
        count = self.args.pin_counts[0]
        log(f"g: seeding {count} pins into etcd")
        t0 = time.monotonic()
        subprocess.run([str(SEED_PINS), "--etcd", self.etcd.endpoints[0], "--etcd-prefix", "/bench-scale/",
                        "--registry", self.upstream.host, "--repository", "bench/app", "--prefix", "t",
                        "--first", "1", "--count", str(count), "--digest", first.header("Docker-Content-Digest"),
                        "--media-type", first.header("Content-Type"), "--size", str(len(first.body)),
                        "--accept", CONTAINERD_ACCEPT], check=True, capture_output=True, timeout=3600)
        seeded = time.monotonic() - t0
        size = self.etcd.status(0).get("dbSize")
        t0 = time.monotonic()
        rp = self.etcd_regpin("/bench-scale/")
        startup = time.monotonic() - t0
        try:
            self.record("g", "startup", {"pins": count, "seed_seconds": round(seeded, 1),
                                         "startup_seconds": round(startup, 3),
                                         "etcd_db_bytes": int(size) if size else None,
                                         "idle_rss_mib": round(status_kib(rp.pid, "VmRSS") / 1024, 1)})
        finally:
            rp.close()

    def etcd_checks(self, tags: int = 20, due_s: int = 5, window: float = 30.0) -> None:
        """`tags` pins due every `due_s` seconds, swept every second (fewer than one replica can
        check in that time, so one replica checks each pin once per interval): upstream manifest
        requests in `window` seconds with one replica, then with three sharing the pins. Without
        the split, three replicas would check each pin up to three times per interval."""
        layout = h.OciLayout(os.path.join(self.work, "layout-g"))
        h.make_image(layout, "v1", seed="bench-g", layer_sizes=(4096,))
        h.push(layout, "bench/checks:v1", self.upstream, source_tag="v1")
        for i in range(tags):
            self.upstream.put_manifest("bench/checks", f"t{i}", *self.upstream_manifest("bench/checks", "v1"))
        out = {}
        for n in (1, 3):
            prefix = f"/bench-checks-{n}/"
            replicas = [self.etcd_regpin(prefix, policies=[h.PolicyRule("**", "pin", revalidate_after_s=due_s)],
                                         pin_checks=h.PinChecks(sweep_interval_s=1, sweep_batch=200, concurrency=8),
                                         settings={"pin_content": "none"}) for _ in range(n)]
            try:
                for i in range(tags):
                    h.http_request(replicas[0].host, "GET", f"/v2/bench/checks/manifests/t{i}", {"Accept": CONTAINERD_ACCEPT})
                h.wait_until(lambda: all(len([1 for ln in r.metrics_text().splitlines()
                                              if ln.startswith("regpin_pins ") and float(ln.split()[1]) >= tags]) for r in replicas),
                             timeout=30, message="every replica holds the pins")
                def manifest_requests() -> int:
                    self.upstream.sync_log()
                    return sum(self.upstream.access_log_count(m, r"/v2/bench/checks/manifests/.*")
                               for m in ("HEAD", "GET"))

                before = manifest_requests()
                time.sleep(window)  # a measurement window, not synchronisation
                after = manifest_requests()
                out[f"replicas{n}"] = {"upstream_manifest_requests": after - before, "seconds": window, "pins": tags,
                                       "due_seconds": due_s}
            finally:
                for r in replicas:
                    r.close()
        self.record("g", "checks", out)

    def upstream_manifest(self, repo: str, tag: str) -> tuple[bytes, str]:
        resp = self.upstream.request("GET", f"/v2/{repo}/manifests/{tag}", {"Accept": CONTAINERD_ACCEPT})
        return resp.body, resp.header("Content-Type")

    # -- h: rollout (single flight for manifests) -------------------------------------------

    def rollout_workload(self) -> None:
        """A Deployment rolled out to 64 nodes at once, through regpin and through the peer, each
        in front of a fresh upstream of its own: a 2-platform image pushed under two tags, and
        a second 2-platform image asked for only by a platform manifest's digest (so nothing of
        it is fetched before, not even by regpin's background pin content). Three herds, in
        order: 64 first HEADs of one tag, 64 first GETs of the other, 64 GETs of the platform
        manifest by digest. Counted from each upstream's access log: the manifest GETs and
        HEADs of the tag and of the digest (for a tag, the index's)."""
        layout = h.OciLayout(os.path.join(self.work, "layout-h"))
        platforms = ("linux/amd64", "linux/arm64")
        image = h.make_image(layout, "app", seed="bench-h", platforms=platforms)
        kids = h.make_image(layout, "kids", seed="bench-h-kids", platforms=platforms)
        child = kids.manifest_for("linux/arm64")
        cases = (("head", "HEAD", "bench/rollout", "head", image.digest),
                 ("get", "GET", "bench/rollout", "get", image.digest),
                 ("child", "GET", "bench/rollout-kids", child, child))
        for rnd in range(self.args.rounds):
            for system in ("regpin", "peer"):
                log(f"h: round {rnd + 1}, {system} on a fresh upstream: 3 herds of {ROLLOUT_CLIENTS}")
                upstream = h.Registry(f"h-{system}-upstream").start()
                target: Optional[h.Regpin | h.Registry] = None
                try:
                    for tag in ("head", "get"):
                        h.push(layout, f"bench/rollout:{tag}", upstream, source_tag="app")
                    h.push(layout, "bench/rollout-kids:v1", upstream, source_tag="kids")
                    target = self.new_regpin(upstream=upstream) if system == "regpin" else proxy_registry(upstream)
                    run = {name: self.rollout_herd(upstream, target.host, method, repo, ref, digest)
                           for name, method, repo, ref, digest in cases}
                    self.results["workloads"].setdefault("h", {}).setdefault(system, []).append(run)
                finally:
                    if target is not None:
                        target.close()
                    upstream.close()
        self.record("h", "summary", rollout_summary(self.results["workloads"]["h"]))

    def rollout_herd(self, upstream: h.Registry, host: str, method: str, repo: str, reference: str,
                     digest: str) -> dict:
        """One herd of ROLLOUT_CLIENTS; the upstream's manifest requests for `reference` and
        `digest` (GET and HEAD each), counted before and ROLLOUT_SETTLE_SECONDS after the last
        answer."""
        paths = {"digest": f"/v2/{repo}/manifests/{digest}"}
        if reference != digest:
            paths["tag"] = f"/v2/{repo}/manifests/{reference}"

        def counts() -> dict[str, int]:
            upstream.sync_log()
            return {f"{kind}_{m}": upstream.access_log_count(m, re.escape(path))
                    for kind, path in sorted(paths.items()) for m in ("GET", "HEAD")}

        before = counts()
        answers, wall = all_at_once(host, method, f"/v2/{repo}/manifests/{reference}", ROLLOUT_CLIENTS)
        time.sleep(ROLLOUT_SETTLE_SECONDS)  # a measurement window, not synchronisation
        after = counts()
        ok, wrong = served_right(answers, method, digest)
        up = {k: after[k] - before[k] for k in after}
        return {"method": method, "reference": reference, "digest": digest, "clients": ROLLOUT_CLIENTS,
                "served_right": ok, "wrong": wrong, "wall_seconds": round(wall, 4), "upstream": up,
                "upstream_gets": sum(v for k, v in up.items() if k.endswith("_GET")),
                "upstream_heads": sum(v for k, v in up.items() if k.endswith("_HEAD"))}

    # -- profiles -----------------------------------------------------------------------------

    def profile(self) -> None:
        """perf record (cpu-clock: the hardware counters are not exposed on this VM kind) of
        regpin during a warm 1 GiB GET (4 clients) and a tag HEAD load (64 connections)."""
        out_dir = ROOT / "bench" / "profiles"
        out_dir.mkdir(exist_ok=True)
        blob = self.blob("profile", GiB)
        tag_path = self.app_image()
        cases = {
            "cold-blob-get": ([f"GET /v2/bench/blobs/blobs/{blob}"], 1, (), 1),
            "a-blob-get": ([f"GET /v2/bench/blobs/blobs/{blob}"], 4, (), 8),
            "b-tag-head": ([f"HEAD {tag_path}"], 64, (f"Accept: {CONTAINERD_ACCEPT}",), 0),
        }
        for name, (requests, conns, hdr, count) in cases.items():
            data = os.path.join(self.work, f"{name}.perf")
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", str(self.regpin.pid),
                                     "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                loadgen(self.regpin.host, requests, connections=conns, duration=self.args.seconds if not count else 3600,
                        max_requests=count, headers=hdr)
            finally:
                perf.send_signal(2)
                perf.wait(timeout=60)
            report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--percent-limit", "1.5",
                                     "--sort", "dso,symbol", "-g", "none"], capture_output=True, text=True)
            # perf pads every line to a very wide symbol column: trim it.
            lines = [re.sub(r"\s+-\s+-\s*$", "", ln).rstrip()[:160] for ln in report.stdout.splitlines()]
            (out_dir / f"{name}.txt").write_text("\n".join(ln for ln in lines if ln and not ln.startswith("# ....")) + "\n")
            log(f"profile written: bench/profiles/{name}.txt")


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def version_of(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        text = (p.stdout + p.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine() -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "os": version_of(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "regpin": rev + ("+local changes" if dirty else ""),
        "docker-registry": version_of(["docker-registry", "--version"]),
        "nginx": version_of(["nginx", "-v"]),
        "containerd": version_of(["containerd", "--version"]),
    }


# Workload h's herds, in the order they run.
ROLLOUT_CASES = {
    "head": "64 first HEADs of a tag",
    "get": "64 first GETs of another tag",
    "child": "64 GETs of a never-fetched platform manifest by digest",
}


def rollout_summary(hw: dict) -> dict:
    """Per herd and system over the rounds: the most upstream requests of any round, the
    fewest clients served right, the median wall time; for regpin whether the bar held (at
    most 1 GET and 1 HEAD upstream, every client served right, and no GET by tag for HEADs)."""
    out: dict[str, dict] = {}
    for case in ROLLOUT_CASES:
        for system in ("regpin", "peer"):
            runs = [r[case] for r in hw.get(system, []) if case in r]
            if not runs:
                continue
            most = {k: max(r["upstream"][k] for r in runs) for k in runs[0]["upstream"]}
            cell = {"rounds": len(runs), "clients": runs[0]["clients"], "upstream": most,
                    "upstream_gets": max(r["upstream_gets"] for r in runs),
                    "upstream_heads": max(r["upstream_heads"] for r in runs),
                    "served_right": min(r["served_right"] for r in runs),
                    "wall_seconds": statistics.median(r["wall_seconds"] for r in runs)}
            if system == "regpin":
                cell["bar_met"] = (cell["upstream_gets"] <= 1 and cell["upstream_heads"] <= 1
                                   and cell["served_right"] == cell["clients"]
                                   and (case != "head" or most.get("tag_GET", 0) == 0))
            out.setdefault(case, {})[system] = cell
    return out


def rollout_cell(cell: dict) -> str:
    """'GETs / HEADs' upstream, split by tag and digest where a tag was asked for."""
    up = cell["upstream"]
    text = f"{cell['upstream_gets']} / {cell['upstream_heads']}"
    if "tag_GET" in up:
        text += f" (tag {up['tag_GET']} / {up['tag_HEAD']}, index digest {up['digest_GET']} / {up['digest_HEAD']})"
    if cell["served_right"] != cell["clients"]:
        text += f"; **{cell['served_right']} of {cell['clients']} served right**"
    return text


def rollout_table(hw: dict, args: argparse.Namespace) -> list[str]:
    """Workload h: upstream manifest requests of each herd, regpin beside the peer."""
    summary = hw.get("summary") or rollout_summary(hw)
    lines = ["", "## h. Rollout: 64 clients' first requests for one manifest at once", "",
             f"regpin and the peer each in front of a fresh docker-registry of its own holding a 2-platform image "
             f"under two tags; {ROLLOUT_CLIENTS} threads, one connection each, released by a barrier, containerd's "
             f"Accept. Upstream manifest GETs / HEADs of the tag and of the digest, from the upstream's access log "
             f"{ROLLOUT_SETTLE_SECONDS:.0f} s after the last answer; the most of {args.rounds} round(s). Every client "
             "checked for a 200 with the right Docker-Content-Digest (and body, for GETs). Wall: first release to "
             "last answer, median (informational).",
             "", "| case | regpin upstream GETs / HEADs | peer upstream GETs / HEADs | wall, regpin / peer | bar | |",
             "|---|---|---|---|---|---|"]
    for case, title in ROLLOUT_CASES.items():
        cells = summary.get(case, {})
        rg, pe = cells.get("regpin"), cells.get("peer")
        if not rg or not pe:
            continue
        bar = "regpin <= 1 GET and 1 HEAD" + (", no GET by tag" if case == "head" else "")
        lines.append(f"| {title} | {rollout_cell(rg)} | {rollout_cell(pe)} | "
                     f"{rg['wall_seconds'] * 1000:.0f} / {pe['wall_seconds'] * 1000:.0f} ms | {bar} | {verdict(rg['bar_met'])} |")
    return lines


def fmt_rate(bps: float) -> str:
    return f"{bps / GiB:.2f} GiB/s"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(results: dict, args: argparse.Namespace) -> str:
    m = results["machine"]
    w = results["workloads"]
    lines = [
        "# regpin performance, side by side",
        "",
        f"Written by `python3 bench/run.py` ({' '.join(sys.argv[1:]) or 'no options'}) on {m['date']}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, kernel {m['kernel']}.",
        f"Versions: regpin {m['regpin']} (Release build); peer {m['docker-registry']} in proxy mode "
        f"(access log off, log level warn); {m['nginx']} (sendfile, `worker_processes auto`); {m['containerd']}.",
        "Everything on 127.0.0.1 on the same 2 cores as the load generator (build/bench/regpin_loadgen, one thread, "
        f"the same binary against every server). Median of {args.rounds} round(s) per cell; ratios are regpin / other.",
        "",
        "| workload | regpin | peer (docker-registry proxy) | nginx (sendfile) | ratio | bar | |",
        "|---|---|---|---|---|---|---|",
    ]
    rows: list[tuple[str, ...]] = []
    if "a" in w:
        a = w["a"]
        for clients in (1, 4):
            if f"warm{clients}/regpin" not in a:
                continue
            rg, pe, ng = (a[f"warm{clients}/{s}"]["bytes_per_second"] for s in ("regpin", "peer", "nginx"))
            rn, rp = ratio(rg, ng), ratio(rg, pe)
            rows.append((f"a. warm 1 GiB blob GET, {clients} client(s)", fmt_rate(rg), fmt_rate(pe), fmt_rate(ng),
                         f"{rn:.2f}x nginx, {rp:.2f}x peer", ">= 0.9x nginx, >= 1.1x peer", verdict(rn >= 0.9 and rp >= 1.1)))
        c = a.get("cold/regpin"), a.get("cold/peer")
        if all(c):
            rows.append(("a'. cold 1 GiB blob, first GET", fmt_rate(c[0]["bytes_per_second"]), fmt_rate(c[1]["bytes_per_second"]), "",
                         f"{ratio(c[0]['bytes_per_second'], c[1]['bytes_per_second']):.2f}x peer", "(reported)", ""))
    if "b" in w:
        b = w["b"]
        for method in ("HEAD", "GET"):
            for conns in (1, 16, 64):
                if f"{method}{conns}/regpin" not in b:
                    continue
                rg, pe = b[f"{method}{conns}/regpin"], b[f"{method}{conns}/peer"]
                rr = ratio(rg["requests_per_second"], pe["requests_per_second"])
                p99 = rg["latency_us"]["p99"] / 1000
                bar, ok = "(reported)", None
                if conns == 64:
                    bar, ok = ">= 20x peer, p99 < 5 ms", rr >= 20 and p99 < 5
                rows.append((f"b. manifest by tag, {method}, {conns} conn.",
                             f"{rg['requests_per_second']:,.0f} req/s, p99 {p99:.2f} ms",
                             f"{pe['requests_per_second']:,.0f} req/s, p99 {pe['latency_us']['p99'] / 1000:.2f} ms", "",
                             f"{rr:.1f}x peer", bar, "" if ok is None else verdict(ok)))
    if "c" in w:
        for system in ("regpin", "peer"):
            runs = w["c"].get(system, [])
            if not runs:
                continue
            single = statistics.median(r["single_seconds"] for r in runs)
            herd = statistics.median(r["herd_seconds"] for r in runs)
            herd_warm = statistics.median(r["herd_warm_seconds"] for r in runs)
            up = max(r["upstream_bytes_herd"] for r in runs) / runs[0]["blob_bytes"]
            # Each round's cold herd over the warm herd that follows it on the same blob: paired,
            # so drift between rounds cancels out.
            over_warm = statistics.median(r["herd_seconds"] / r["herd_warm_seconds"] for r in runs)
            w["c"][f"{system}_summary"] = {"single": single, "herd": herd, "herd_warm": herd_warm, "upstream_x": up,
                                          "cold_over_warm": over_warm}
        rs, ps = w["c"].get("regpin_summary"), w["c"].get("peer_summary")
        if rs and ps:
            mib = w["c"]["regpin"][0]["blob_bytes"] // MiB
            # Issue 18: the warm herd measures delivering 16 copies alone, so the cold herd over
            # it is what the first download adds. (The bar before, herd <= 1.5x one cold client,
            # was bounded by the 2 cores the 16 clients share: nginx alone took 1.7-2.0x.)
            ok = rs["upstream_x"] == 1 and rs["cold_over_warm"] <= 1.3
            rows.append((f"c. cold herd, 16 clients, one {mib} MiB blob",
                         f"upstream {rs['upstream_x']:.0f}x blob; {rs['herd']:.2f} s; cold herd / warm herd {rs['cold_over_warm']:.2f}",
                         f"upstream {ps['upstream_x']:.0f}x blob; {ps['herd']:.2f} s; cold herd / warm herd {ps['cold_over_warm']:.2f}", "",
                         f"{ratio(ps['herd'], rs['herd']):.2f}x faster than peer",
                         "upstream 1x, cold herd <= 1.3x warm herd", verdict(ok)))
            nginx = statistics.median(r["herd_warm_seconds"] for r in w["c"].get("nginx", [{"herd_warm_seconds": 0}]))
            rows.append(("c'. the same 16 clients again, warm (delivering 16 copies alone); one cold client",
                         f"{rs['herd_warm']:.2f} s; 1 cold client {rs['single']:.2f} s (herd/single {rs['herd'] / rs['single']:.2f})",
                         f"{ps['herd_warm']:.2f} s; 1 cold client {ps['single']:.2f} s (herd/single {ps['herd'] / ps['single']:.2f})",
                         f"{nginx:.2f} s ({nginx / rs['single']:.2f}x regpin's one cold client)",
                         "", "(reported)", ""))
    # d: peak RSS per workload
    peaks: dict[str, dict[str, float]] = {}
    for name, cells in w.items():
        if name == "f":
            continue
        for key, val in cells.items():
            items = val if isinstance(val, list) else [val]
            system = key.split("/")[-1] if "/" in key else key
            for item in items:
                if isinstance(item, dict) and "peak_rss_mib" in item and system in ("regpin", "peer", "nginx"):
                    peaks.setdefault(name, {})[system] = max(peaks.get(name, {}).get(system, 0), item["peak_rss_mib"])
    for name in sorted(peaks):
        p = peaks[name]
        title = {"a": "1 GiB blob (cold + warm)", "big": f"{args.big_gib} GiB blob (cold + warm)", "b": "manifests by tag",
                 "c": "cold herd", "e": "containerd pulls"}.get(name, name)
        rows.append((f"d. peak RSS, {title}", f"{p.get('regpin', 0):.0f} MiB", f"{p.get('peer', 0):.0f} MiB",
                     f"{p['nginx']:.0f} MiB" if "nginx" in p else "", "", "<= 128 MiB", verdict(p.get("regpin", 1e9) <= 128)))
    if "a" in peaks and "big" in peaks:
        small, big = peaks["a"]["regpin"], peaks["big"]["regpin"]
        rows.append((f"d. peak RSS, {args.big_gib} GiB vs 1 GiB blob", f"{big:.0f} vs {small:.0f} MiB", "", "",
                     f"{ratio(big, small):.2f}x", "the same (<= 1.1x)", verdict(big <= 1.1 * small)))
    if "e" in w and "warm/regpin" in w["e"]:
        e = w["e"]
        rg, pe = e["warm/regpin"]["seconds"], e["warm/peer"]["seconds"]
        rows.append((f"e. containerd pull, 10 layers, {args.pull_mib} MiB, warm", f"{rg:.2f} s", f"{pe:.2f} s", "",
                     f"{ratio(rg, pe):.2f}x peer time", "<= peer time", verdict(rg <= pe)))
        rows.append(("e'. the same pulls' fetch part (`ctr content fetch`: the mirror's share)",
                     f"{e['warm/regpin']['fetch_seconds']:.2f} s", f"{e['warm/peer']['fetch_seconds']:.2f} s", "",
                     f"{ratio(e['warm/regpin']['fetch_seconds'], e['warm/peer']['fetch_seconds']):.2f}x",
                     "(reported)", ""))
        rows.append(("e''. same, first (cold) pull; its fetch part", f"{e['cold/regpin']['seconds']:.2f} s; {e['cold/regpin']['fetch_seconds']:.2f} s",
                     f"{e['cold/peer']['seconds']:.2f} s; {e['cold/peer']['fetch_seconds']:.2f} s", "",
                     f"{ratio(e['cold/regpin']['seconds'], e['cold/peer']['seconds']):.2f}x; "
                     f"{ratio(e['cold/regpin']['fetch_seconds'], e['cold/peer']['fetch_seconds']):.2f}x", "(reported)", ""))
    if "f" in w and "pins10" in w["f"]:
        f10 = w["f"]["pins10"]
        many = sorted((c for name, c in w["f"].items() if name.startswith("pins") and c["pins"] > 10),
                      key=lambda c: c["pins"])
        for fm in many:
            rr = ratio(fm["requests_per_second"], f10["requests_per_second"])
            pr = ratio(fm["latency_us"]["p99"], f10["latency_us"]["p99"])
            rows.append((f"f. tag HEAD, 64 conn., {fm['pins']:,} pins vs 10",
                         f"{fm['requests_per_second']:,.0f} vs {f10['requests_per_second']:,.0f} req/s; "
                         f"p99 {fm['latency_us']['p99'] / 1000:.2f} vs {f10['latency_us']['p99'] / 1000:.2f} ms", "", "",
                         f"rps {rr:.2f}x, p99 {pr:.2f}x", "within 10%", verdict(rr >= 0.9 and pr <= 1.1)))
        for fm in [f10, *many]:
            ok = fm["startup_seconds"] <= 1.0 and fm["idle_rss_mib"] <= 128
            rows.append((f"f. start-up to the first answer, idle RSS, {fm['pins']:,} pins",
                         f"start {fm['startup_seconds']:.2f} s; idle RSS {fm['idle_rss_mib']:.0f} MiB; "
                         f"peak {fm['peak_rss_mib']:.0f} MiB; /metrics {fm['metrics_scrape_seconds'] * 1000:.1f} ms; "
                         f"seeded in {fm['seed_seconds']:.0f} s",
                         "", "", "", "<= 1 s, <= 128 MiB (issue 18)", verdict(ok)))
    if "g" in w:
        g = w["g"]
        for method in ("HEAD", "GET"):
            for conns in (1, 16, 64):
                if f"{method}{conns}/regpin" not in g:
                    continue
                em, et = g[f"{method}{conns}/regpin"], g[f"{method}{conns}/regpin-etcd"]
                rr = ratio(et["requests_per_second"], em["requests_per_second"])
                bar, ok = "(reported)", None
                if method == "HEAD" and conns == 64:
                    bar, ok = "etcd >= 0.9x embedded", rr >= 0.9
                rows.append((f"g. pins on etcd: manifest by tag, {method}, {conns} conn.",
                             f"etcd {et['requests_per_second']:,.0f} vs embedded {em['requests_per_second']:,.0f} req/s; "
                             f"p99 {et['latency_us']['p99'] / 1000:.2f} vs {em['latency_us']['p99'] / 1000:.2f} ms",
                             "", "", f"{rr:.2f}x embedded", bar, verdict(ok) if ok is not None else ""))
        if "startup" in g:
            st = g["startup"]
            db = f"; etcd db {st['etcd_db_bytes'] / MiB:.0f} MiB" if st.get("etcd_db_bytes") else ""
            rows.append((f"g. start-up with {st['pins']:,} pins in etcd",
                         f"start {st['startup_seconds']:.2f} s; seeded in {st['seed_seconds']:.0f} s{db}; idle RSS "
                         f"{st['idle_rss_mib']:.0f} MiB", "", "", "", "(reported)", ""))
        if "checks" in g and "replicas1" in g["checks"]:
            one, three = g["checks"]["replicas1"], g["checks"]["replicas3"]
            rr = ratio(three["upstream_manifest_requests"], one["upstream_manifest_requests"])
            rows.append((f"g. background checks, {one['pins']} pins due every {one.get('due_seconds', 2)} s, "
                         f"{one['seconds']:.0f} s",
                         f"3 replicas {three['upstream_manifest_requests']} vs 1 replica "
                         f"{one['upstream_manifest_requests']} upstream manifest requests", "", "",
                         f"{rr:.2f}x", "about 1x, not 3x", verdict(rr <= 1.5)))
    if "i" in w:
        i = w["i"]

        def med(cells: list[dict], key: str) -> float:
            return statistics.median(c[key] for c in cells)

        alone, capped, uncapped = (med(i[k], "bytes_per_second") for k in ("alone", "capped", "uncapped"))
        rows.append((f"i. warm 1 GiB blob GET, 1 client, while another pulls new {i['churn_blob_bytes'] // MiB} MiB "
                     f"blobs through a cache capped at {i['cap_bytes'] / GiB:.1f} GiB (eviction running)",
                     f"{fmt_rate(capped)} ({med(i['capped'], 'evictions'):.0f} evictions per run); "
                     f"same pulls, no cap {fmt_rate(uncapped)}; alone {fmt_rate(alone)}", "", "",
                     f"{ratio(capped, uncapped):.2f}x no cap, {ratio(capped, alone):.2f}x alone", "(reported)", ""))
    if "h" in w:
        summary = w["h"].get("summary") or rollout_summary(w["h"])
        cells = [summary[c] for c in ROLLOUT_CASES if "regpin" in summary.get(c, {}) and "peer" in summary[c]]
        if cells:
            def counts(system: str) -> str:
                return "upstream GETs / HEADs " + ", ".join(f"{c[system]['upstream_gets']}/{c[system]['upstream_heads']}"
                                                            for c in cells)
            rows.append((f"h. rollout, {ROLLOUT_CLIENTS} clients at once: first HEADs of a tag, first GETs of a tag, "
                         "a platform manifest by digest (section h below)", counts("regpin"), counts("peer"), "", "",
                         "<= 1 GET and 1 HEAD upstream per herd", verdict(all(c["regpin"]["bar_met"] for c in cells))))
    for r in rows:
        lines.append("| " + " | ".join(r) + " |")
    if "h" in w:
        lines += rollout_table(w["h"], args)
    if args.before:
        lines += before_table(w, args)
    lines += ["", "Raw numbers (every run): `" + os.path.relpath(args.json, ROOT) + "`.", ""]
    return "\n".join(lines)


def before_table(w: dict, args: argparse.Namespace) -> list[str]:
    """This build beside --before, cell by cell, interleaved in the same rounds."""
    lines = ["", f"## This build beside `{args.before}` (--before)", "",
             "The same cells, each run by both builds in the same interleaved rounds; ratio = this build / before.",
             "", "| cell | this build | before | ratio |", "|---|---|---|---|"]
    cells: list[tuple[str, float, float, str]] = []
    for clients in (1, 4):
        if f"warm{clients}/before" in w.get("a", {}):
            cells.append((f"a. warm 1 GiB blob GET, {clients} client(s)", w["a"][f"warm{clients}/regpin"]["bytes_per_second"],
                          w["a"][f"warm{clients}/before"]["bytes_per_second"], "rate"))
    for method in ("HEAD", "GET"):
        for conns in (1, 16, 64):
            if f"{method}{conns}/before" in w.get("b", {}):
                cells.append((f"b. manifest by tag, {method}, {conns} conn.",
                              w["b"][f"{method}{conns}/regpin"]["requests_per_second"],
                              w["b"][f"{method}{conns}/before"]["requests_per_second"], "rps"))
    for case in sorted((c for c in w.get("f", {}) if c.startswith("pins")), key=lambda c: int(c[4:])):
        if f"before/{case}" in w.get("f", {}):
            now, then = w["f"][case], w["f"][f"before/{case}"]
            cells.append((f"f. tag HEAD, 64 conn., {now['pins']:,} pins", now["requests_per_second"],
                          then["requests_per_second"], "rps"))
            cells.append((f"f. startup, {now['pins']:,} pins", now["startup_seconds"], then["startup_seconds"], "s"))
    for name, now, then, unit in cells:
        show = {"rate": fmt_rate, "rps": lambda v: f"{v:,.0f} req/s", "s": lambda v: f"{v:.2f} s"}[unit]
        lines.append(f"| {name} | {show(now)} | {show(then)} | {ratio(now, then):.3f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="a,b,c,d,e,f,g,h,i", help="workloads to run (d adds the big blob; RSS is read in all)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per cell (the median is reported)")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each timed request-rate run")
    ap.add_argument("--herd-mib", type=int, default=256)
    ap.add_argument("--big-gib", type=int, default=4)
    ap.add_argument("--pull-mib", type=int, default=500)
    ap.add_argument("--pins", default="100000,1000000",
                    help="pin counts of workload f, beside 10 (comma-separated); g seeds etcd with the first")
    ap.add_argument("--profile", action="store_true", help="perf profiles of a and b into bench/profiles/")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--json", default="")
    ap.add_argument("--before", default="", metavar="BIN",
                    help="another regpin binary (the build before a change) run beside this one in a, b and f")
    args = ap.parse_args()
    args.json = args.json or str(Path(args.out).with_suffix(".json"))
    args.pin_counts = [int(n) for n in args.pins.split(",")]
    for tool in (LOADGEN, SEED_PINS):
        if not tool.exists():
            print(f"missing {tool}: cmake --build {BUILD} --target regpin regpin_loadgen regpin_seed_pins", file=sys.stderr)
            return 2
    for prog in ("nginx", "docker-registry", "containerd", "skopeo") + (("perf",) if args.profile else ()):
        if shutil.which(prog) is None:
            print(f"missing {prog}: deploy/debian-deps.sh --test --bench installs it", file=sys.stderr)
            return 2
    only = set(args.only.split(","))
    bench = Bench(args)
    started = time.monotonic()
    try:
        bench.results["machine"] = machine()
        if "a" in only:
            bench.blob_workload("a", GiB, (1, 4), gets_per_client=5)
        if "b" in only:
            bench.manifest_workload()
        if "c" in only:
            bench.herd_workload()
        if "d" in only:
            bench.blob_workload("big", args.big_gib * GiB, (1,), gets_per_client=1)
        if "e" in only:
            bench.pull_workload()
        if "f" in only:
            bench.scale_workload()
        if "g" in only:
            bench.etcd_workload()
        if "h" in only:
            bench.rollout_workload()
        if "i" in only:
            bench.eviction_workload()
        if args.profile:
            bench.profile()
    finally:
        bench.results["seconds"] = round(time.monotonic() - started, 1)
        with open(args.json, "w") as f:
            json.dump(bench.results, f, indent=1)
        bench.close()
    text = report(bench.results, args)
    # A hand-written "## Notes" section (what the numbers mean, what was fixed) survives reruns.
    if os.path.exists(args.out):
        with open(args.out) as f:
            old = f.read()
        if NOTES_HEADING in old:
            text += "\n" + old[old.index(NOTES_HEADING):]
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
