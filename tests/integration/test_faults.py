"""Upstream faults (issue 5): what a broken or hostile upstream does to regpin, one test per fault.

Every test breaks an upstream route (fake_upstream.FakeUpstream), asks regpin for it a few times,
and checks three things:

- the client gets a clean error (503 `UNAVAILABLE`, or a blob body cut short: never a complete-
  looking wrong body) or the right bytes;
- nothing wrong was cached: once the fake heals, the next request gets the right bytes (and
  regpin asked the upstream again);
- nothing leaked: regpin's open descriptors (`/proc/PID/fd`) and threads (`/proc/PID/status`)
  and its connections to the fake come back to the baseline taken before the fault (a bounded
  poll: closing is asynchronous). Each fault is repeated, so a leak of one descriptor per fault
  exceeds the slack.

Faults covered elsewhere and not repeated here: a blob body shorter than its Content-Length,
a manifest over 4 MiB and a manifest 429 (test_blob_integrity); an upstream that accepts and
never answers, a redirect loop and credentials across a redirect to another host
(test_upstream_client).

    REGPIN_BIN=../../build/regpin python3 -m unittest -v test_faults
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import time
import unittest
from typing import Optional

import harness as h
from fake_upstream import FakeUpstream, Route
from test_pull_through import RegpinTestCase

READ_TIMEOUT_MS = 2000
REPEAT = 3  # each fault, so that a per-fault leak exceeds the slack below
FD_SLACK = 2  # RocksDB may open a file (a new log or table) between two counts
THREAD_SLACK = 1
MEDIA_OCI_MANIFEST = h.MEDIA_OCI_MANIFEST
CONFIG_BLOB = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(label: str, pad: int = 0) -> bytes:
    """A small valid OCI manifest, distinct per `label` (an annotation), optionally padded."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": h.MEDIA_OCI_CONFIG, "digest": digest_of(CONFIG_BLOB), "size": len(CONFIG_BLOB)},
        "layers": [],
        "annotations": {"regpin.test.label": label, "regpin.test.pad": "p" * pad},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def manifest_route(body: bytes, **kwargs) -> Route:
    return Route(body=body, headers={"Content-Type": MEDIA_OCI_MANIFEST, "Docker-Content-Digest": digest_of(body)},
                 **kwargs)


def fetch(regpin: h.Regpin, path: str, headers: Optional[dict] = None, timeout: float = 30) -> tuple[str, bytes, float]:
    """GETs `path` on a fresh connection: ("complete", body) when a 200's whole announced body
    arrived, ("aborted", partial) when the body was cut short, ("status NNN", body) otherwise.
    Also returns the seconds it took."""
    started = time.monotonic()
    host, port = regpin.host.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        if resp.status != 200:
            return f"status {resp.status}", resp.read(), time.monotonic() - started
        try:
            return "complete", resp.read(), time.monotonic() - started
        except http.client.IncompleteRead as e:
            return "aborted", e.partial, time.monotonic() - started
        except (ConnectionError, TimeoutError):
            return "aborted", b"", time.monotonic() - started
    except (ConnectionError, http.client.RemoteDisconnected) as e:
        return f"connection error {e!r}", b"", time.monotonic() - started
    finally:
        conn.close()


@dataclasses.dataclass(frozen=True)
class Usage:
    fds: int
    threads: int


class FaultTestCase(RegpinTestCase):
    """One fake upstream and one regpin for the class; each test uses its own paths."""

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeUpstream()
        cls.addClassCleanup(cls.fake.close)
        # One kept-alive connection per upstream host at most, so the pool adds at most one
        # descriptor to any count.
        cls.regpin = h.Regpin([h.Upstream("fake.test", cls.fake.url, connect_timeout_ms=1000,
                                          read_timeout_ms=READ_TIMEOUT_MS, max_idle_connections=1)])
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()
        cls.fake.routes["/v2/warm/app/tags/list"] = Route(
            body=b'{"name":"warm/app","tags":["a"]}', headers={"Content-Type": "application/json"})
        cls.fake.routes[f"/v2/team/app/blobs/{digest_of(CONFIG_BLOB)}"] = Route(body=CONFIG_BLOB)

    # -- resource accounting ----------------------------------------------------------------------

    def warm(self) -> None:
        """A request regpin always sends upstream (tag lists are not cached), so its connection
        pool is in the same state (one live connection) at every count."""
        resp = self.regpin.get("/v2/warm/app/tags/list")
        self.assertEqual(resp.status, 200, resp.body[:300])

    def usage(self) -> Usage:
        return Usage(self.regpin.open_fds(), self.regpin.thread_count())

    def baseline(self) -> Usage:
        self.warm()
        # Let the counts settle: the same two readings in a row (bounded).
        last: list[Usage] = [self.usage()]

        def steady() -> bool:
            now = self.usage()
            same = now == last[0]
            last[0] = now
            return same and self.fake.open_connections <= 1

        h.wait_until(steady, timeout=10, interval=0.1, message="steady descriptor and thread counts")
        return last[0]

    def assert_no_leak(self, base: Usage) -> None:
        self.assertTrue(self.regpin.running, "regpin died")
        self.warm()
        try:
            h.wait_until(lambda: (self.usage().fds <= base.fds + FD_SLACK
                                  and self.usage().threads <= base.threads + THREAD_SLACK
                                  and self.fake.open_connections <= 1),
                         timeout=15, interval=0.1, message="descriptors, threads and upstream connections back to the baseline")
        except TimeoutError:
            now = self.usage()
            self.fail(f"leak: baseline {base}, now {now}, connections open at the fake "
                      f"{self.fake.open_connections}; descriptors: {self.regpin.open_fd_targets()}")

    # -- assertions -----------------------------------------------------------------------------

    def assert_clean_blob_error(self, outcome: str, body: bytes, data: bytes, what: str) -> None:
        """A failed blob: a 503 with an OCI error body, or a 200 whose body was cut short.
        Never the whole announced body."""
        if outcome == "complete":
            self.assertNotEqual(len(body), len(data), f"{what}: a complete-looking body")
            self.fail(f"{what}: a complete 200 of {len(body)} bytes")
        if outcome.startswith("status"):
            self.assertEqual(outcome, "status 503", f"{what}: {body[:300]!r}")
            self.assertIn("UNAVAILABLE", [e.get("code") for e in json.loads(body)["errors"]], body[:300])
        else:
            self.assertIn(outcome, ("aborted",), what)
            self.assertLess(len(body), len(data), f"{what}: the whole body arrived before the abort")

    def assert_503(self, resp: h.Response, what: str) -> None:
        self.assertEqual(resp.status, 503, f"{what}: {resp.status} {resp.body[:300]!r}")
        if resp.body:  # HEAD answers carry no body
            self.assertIn("UNAVAILABLE", resp.error_codes(), f"{what}: {resp.body[:300]!r}")

    def assert_blob_heals(self, path: str, data: bytes, upstream_gets_before: int) -> None:
        self.fake.routes[path] = Route(body=data)
        outcome, body, _ = fetch(self.regpin, path)
        self.assertEqual((outcome, digest_of(body)), ("complete", path.rsplit("/", 1)[1]),
                         "after the upstream healed")
        self.assertGreater(self.fake.count("GET", path), upstream_gets_before,
                           "the healed request did not go upstream: something was cached")
        outcome, body, _ = fetch(self.regpin, path)  # and now it is cached whole
        self.assertEqual((outcome, len(body), digest_of(body)), ("complete", len(data), path.rsplit("/", 1)[1]))

    def get_manifest(self, path: str, method: str = "GET") -> h.Response:
        return self.regpin.request(method, path, {"Accept": MEDIA_OCI_MANIFEST})

    def assert_manifest_heals(self, path: str, good: bytes) -> None:
        self.fake.routes[path] = manifest_route(good)
        resp = self.get_manifest(path)
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual((resp.header("Docker-Content-Digest"), digest_of(resp.body)), (digest_of(good), digest_of(good)))
        self.assertEqual(resp.body, good)


class ConnectionFaultTest(FaultTestCase):
    def test_connection_reset_mid_blob_aborts_the_client_and_caches_nothing(self):
        base = self.baseline()
        data = os.urandom(2 * 1024 * 1024 + 17)
        path = f"/v2/team/reset/blobs/{digest_of(data)}"
        for attempt in range(REPEAT):
            with self.subTest(attempt=attempt):
                self.fake.routes[path] = Route(body=data, reset_after=1024 * 1024)
                outcome, body, _ = fetch(self.regpin, path)
                self.assert_clean_blob_error(outcome, body, data, "blob reset mid-body")
        self.assert_blob_heals(path, data, REPEAT)
        self.assert_no_leak(base)

    def test_connection_reset_mid_manifest_is_503_and_pins_nothing(self):
        base = self.baseline()
        good = manifest_bytes("reset", pad=8000)
        path = "/v2/team/reset-manifest/manifests/v1"
        for attempt in range(REPEAT):
            with self.subTest(attempt=attempt):
                self.fake.routes[path] = manifest_route(good, reset_after=len(good) // 2)
                self.assert_503(self.get_manifest(path), "manifest reset mid-body")
        self.assert_manifest_heals(path, good)
        self.assert_no_leak(base)

    def test_body_longer_than_content_length_serves_the_announced_bytes_and_does_not_poison_the_next_answer(self):
        """The upstream sends the blob plus a whole extra HTTP response after it, on a kept-alive
        connection. regpin must take exactly Content-Length bytes, and must not read the extra
        bytes as the answer to its next request on that connection (here: a tag, which would
        then be pinned to a manifest the upstream never served for it)."""
        base = self.baseline()
        data = os.urandom(512 * 1024)
        blob_path = f"/v2/team/longer/blobs/{digest_of(data)}"
        real = manifest_bytes("longer-real")
        evil = manifest_bytes("longer-evil")
        smuggled = (b"HTTP/1.1 200 OK\r\nContent-Type: " + MEDIA_OCI_MANIFEST.encode()
                    + b"\r\nDocker-Content-Digest: " + digest_of(evil).encode()
                    + b"\r\nContent-Length: " + str(len(evil)).encode() + b"\r\n\r\n" + evil)
        tag_path = "/v2/team/longer/manifests/v1"
        self.fake.routes[tag_path] = manifest_route(real)
        self.fake.routes[blob_path] = Route(body=data, extra_after_body=smuggled)
        self.warm()  # the pool holds one live connection: the blob request takes it
        outcome, body, _ = fetch(self.regpin, blob_path)
        self.assertEqual((outcome, len(body), digest_of(body)), ("complete", len(data), digest_of(data)))
        resp = self.get_manifest(tag_path)
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(resp.header("Docker-Content-Digest"), digest_of(real),
                         "the bytes after the blob were taken for the next answer: the tag is pinned to a "
                         "manifest the upstream never served for it")
        self.assertEqual(resp.body, real)
        outcome, body, _ = fetch(self.regpin, blob_path)
        self.assertEqual((outcome, digest_of(body)), ("complete", digest_of(data)))
        self.assert_no_leak(base)


class ErrorStatusTest(FaultTestCase):
    def test_upstream_500_502_503_and_429_become_503_never_429_and_cache_nothing(self):
        base = self.baseline()
        for status in (500, 502, 503, 429):
            data = os.urandom(64 * 1024)
            blob_path = f"/v2/team/status{status}/blobs/{digest_of(data)}"
            good = manifest_bytes(f"status{status}")
            tag_path = f"/v2/team/status{status}/manifests/v1"
            headers = {"Content-Type": "application/json"}
            if status in (429, 503):
                headers["Retry-After"] = "120"
            error_body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
            for attempt in range(REPEAT):
                with self.subTest(status=status, attempt=attempt):
                    self.fake.routes[tag_path] = Route(status=status, body=error_body, headers=headers)
                    self.fake.routes[blob_path] = Route(status=status, body=error_body, headers=headers)
                    started = time.monotonic()
                    self.assert_503(self.get_manifest(tag_path), f"GET manifest, upstream {status}")
                    self.assert_503(self.get_manifest(tag_path, "HEAD"), f"HEAD manifest, upstream {status}")
                    self.assert_503(self.regpin.get(blob_path), f"GET blob, upstream {status}")
                    self.assert_503(self.regpin.head(blob_path), f"HEAD blob, upstream {status}")
                    self.assertLess(time.monotonic() - started, 5.0, "regpin waited for Retry-After")
            with self.subTest(status=status, healed=True):
                self.assert_manifest_heals(tag_path, good)
                self.assert_blob_heals(blob_path, data, self.fake.count("GET", blob_path))
        self.assert_no_leak(base)


class SlowUpstreamTest(FaultTestCase):
    """An upstream that drips one byte per second: it never trips the read timeout (a byte
    arrives every second), only the low-speed limit (default 1024 B/s over a read_timeout_ms
    window) and the whole-manifest deadline (read_timeout_ms)."""

    BOUND = 3 * READ_TIMEOUT_MS / 1000 + 3.0

    def test_a_blob_dripping_one_byte_per_second_is_abandoned_in_bounded_time_and_not_cached(self):
        base = self.baseline()
        data = os.urandom(64 * 1024)
        path = f"/v2/team/drip/blobs/{digest_of(data)}"
        for attempt in range(2):
            with self.subTest(attempt=attempt):
                self.fake.routes[path] = Route(body=data, drip_interval=1.0, drip_chunk=1)
                outcome, body, elapsed = fetch(self.regpin, path, timeout=self.BOUND + 10)
                self.assert_clean_blob_error(outcome, body, data, "dripping blob")
                self.assertLess(elapsed, self.BOUND, f"the dripping blob held the client {elapsed:.1f}s")
        self.assert_blob_heals(path, data, 2)
        self.assert_no_leak(base)

    def test_a_manifest_dripping_one_byte_per_second_is_503_after_about_the_read_timeout(self):
        base = self.baseline()
        good = manifest_bytes("drip", pad=2000)
        path = "/v2/team/drip-manifest/manifests/v1"
        for attempt in range(2):
            with self.subTest(attempt=attempt):
                self.fake.routes[path] = manifest_route(good, drip_interval=1.0, drip_chunk=1)
                started = time.monotonic()
                resp = self.get_manifest(path)
                elapsed = time.monotonic() - started
                self.assert_503(resp, "dripping manifest")
                self.assertLess(elapsed, READ_TIMEOUT_MS / 1000 + 3.0,
                                f"a manifest must arrive whole within read_timeout_ms; took {elapsed:.1f}s")
        self.assert_manifest_heals(path, good)
        self.assert_no_leak(base)

    def test_a_blob_streaming_fast_enough_in_small_pieces_is_served_whole(self):
        """The low-speed limit must not cut a download that is slow but above the limit:
        64 KiB every 50 ms (about 1.3 MB/s) for 1.5 MiB."""
        base = self.baseline()
        data = os.urandom(1536 * 1024)
        path = f"/v2/team/steady/blobs/{digest_of(data)}"
        self.fake.routes[path] = Route(body=data, drip_interval=0.05, drip_chunk=64 * 1024)
        outcome, body, _ = fetch(self.regpin, path)
        self.assertEqual((outcome, len(body), digest_of(body)), ("complete", len(data), digest_of(data)))
        self.assert_no_leak(base)


class MalformedResponseTest(FaultTestCase):
    HUGE_HEADERS = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"h" * 1000) for i in range(70))  # > 64 KiB

    RAW_HEADS = {
        "garbage status line": b"GARBAGE\r\n\r\n",
        "non-numeric status": b"HTTP/1.1 2OO OK\r\nContent-Length: 5\r\n\r\n",
        "binary noise": b"\x16\x03\x01\x00\x05\x00\xff\xfe\r\n\r\n",
        "header line without a colon": b"HTTP/1.1 200 OK\r\nthis is not a header\r\nContent-Length: 5\r\n\r\n",
        "two different Content-Lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
        "negative Content-Length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
        "headers over 64 KiB": b"HTTP/1.1 200 OK\r\n" + HUGE_HEADERS + b"Content-Length: 5\r\n\r\n",
        "closed without an answer": b"",
    }

    def test_huge_response_headers_are_refused_with_503_and_nothing_is_cached(self):
        base = self.baseline()
        data = os.urandom(32 * 1024)
        blob_path = f"/v2/team/huge-headers/blobs/{digest_of(data)}"
        good = manifest_bytes("huge-headers")
        tag_path = "/v2/team/huge-headers/manifests/v1"
        pad = {f"X-Pad-{i}": "h" * 1000 for i in range(70)}
        for attempt in range(REPEAT):
            with self.subTest(attempt=attempt):
                self.fake.routes[blob_path] = Route(body=data, headers=pad)
                self.fake.routes[tag_path] = Route(body=good, headers={
                    **pad, "Content-Type": MEDIA_OCI_MANIFEST, "Docker-Content-Digest": digest_of(good)})
                outcome, body, _ = fetch(self.regpin, blob_path)
                self.assert_clean_blob_error(outcome, body, data, "blob with 70 KiB of headers")
                self.assert_503(self.get_manifest(tag_path), "manifest with 70 KiB of headers")
        self.assert_manifest_heals(tag_path, good)
        self.assert_blob_heals(blob_path, data, REPEAT)
        self.assert_no_leak(base)

    def test_malformed_status_lines_and_headers_are_clean_errors_and_nothing_is_cached(self):
        base = self.baseline()
        for i, (name, raw) in enumerate(self.RAW_HEADS.items()):
            data = os.urandom(16 * 1024)
            blob_path = f"/v2/team/malformed{i}/blobs/{digest_of(data)}"
            good = manifest_bytes(f"malformed{i}")
            tag_path = f"/v2/team/malformed{i}/manifests/v1"
            for attempt in range(REPEAT):
                with self.subTest(fault=name, attempt=attempt):
                    tail = b"hello" if raw else b""  # "closed without an answer" sends nothing at all
                    self.fake.routes[blob_path] = Route(raw_head=raw, body=tail)
                    self.fake.routes[tag_path] = Route(raw_head=raw, body=tail)
                    outcome, body, _ = fetch(self.regpin, blob_path)
                    self.assert_clean_blob_error(outcome, body, data, f"blob, {name}")
                    self.assert_503(self.get_manifest(tag_path), f"manifest, {name}")
                    self.assert_503(self.get_manifest(tag_path, "HEAD"), f"HEAD manifest, {name}")
            with self.subTest(fault=name, healed=True):
                self.assert_manifest_heals(tag_path, good)
                self.assert_blob_heals(blob_path, data, self.fake.count("GET", blob_path))
        self.assert_no_leak(base)


if __name__ == "__main__":
    unittest.main()
