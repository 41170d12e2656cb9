"""Digest verification and streaming, against an upstream that misbehaves on demand.

A real registry never serves wrong bytes or holds a body half-sent, so these tests use
fake_upstream.FakeUpstream; everything else in the suite uses a real docker-registry.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
import unittest

import harness as h
from fake_upstream import FakeUpstream, Route

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fetch(regpin: h.Regpin, path: str) -> tuple[str, bytes]:
    """GETs `path`; ("complete", body) when the whole announced body arrived, else
    ("aborted", what arrived)."""
    host, port = regpin.host.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200:
            return (f"status {resp.status}", resp.read())
        try:
            return ("complete", resp.read())
        except http.client.IncompleteRead as e:
            return ("aborted", e.partial)
        except ConnectionError:
            return ("aborted", b"")
    finally:
        conn.close()


class BlobIntegrityTest(unittest.TestCase):
    def setUp(self) -> None:
        self.fake = FakeUpstream()
        self.addCleanup(self.fake.close)
        self.regpin = h.Regpin([h.Upstream("fake.test", self.fake.url, read_timeout_ms=10000)]).start()
        self.addCleanup(self.regpin.close)

    def blob_path(self, d: str) -> str:
        return f"/v2/team/app/blobs/{d}"

    def test_blob_whose_bytes_do_not_match_its_digest_is_aborted_and_not_cached(self):
        good = os.urandom(3 * 1024 * 1024 + 5)
        d = digest_of(good)
        wrong = bytearray(good)
        wrong[-1] ^= 0xFF  # same length, one byte off: only the digest can tell
        self.fake.routes[self.blob_path(d)] = Route(body=bytes(wrong))

        outcome, got = fetch(self.regpin, self.blob_path(d))
        self.assertEqual(outcome, "aborted", "a wrong body reached the client looking complete")
        self.assertLess(len(got), len(good))

        # Nothing wrong was cached: once the upstream heals, the right bytes come through.
        self.fake.routes[self.blob_path(d)] = Route(body=good)
        outcome, got = fetch(self.regpin, self.blob_path(d))
        self.assertEqual(outcome, "complete")
        self.assertEqual(digest_of(got), d)
        self.assertEqual(self.fake.count("GET", self.blob_path(d)), 2)

    def test_blob_body_shorter_than_its_content_length_is_aborted_and_not_cached(self):
        good = os.urandom(2 * 1024 * 1024)
        d = digest_of(good)
        self.fake.routes[self.blob_path(d)] = Route(body=good, cut_after=1024 * 1024)
        outcome, _ = fetch(self.regpin, self.blob_path(d))
        self.assertEqual(outcome, "aborted")
        self.fake.routes[self.blob_path(d)] = Route(body=good)
        outcome, got = fetch(self.regpin, self.blob_path(d))
        self.assertEqual((outcome, digest_of(got)), ("complete", d))

    def test_blob_streams_to_the_client_before_the_upstream_finished_sending(self):
        good = os.urandom(4 * 1024 * 1024)
        d = digest_of(good)
        half = len(good) // 2
        route = Route(body=good, hold_after=half)
        self.fake.routes[self.blob_path(d)] = route

        host, port = self.regpin.host.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.addCleanup(conn.close)
        conn.request("GET", self.blob_path(d))
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(int(resp.getheader("Content-Length")), len(good))
        # The upstream is stuck at half: these bytes can only come from the live download.
        first = resp.read(half - 1)
        self.assertFalse(route.release.is_set())
        self.assertEqual(first, good[: half - 1])
        route.release.set()
        rest = resp.read()
        self.assertEqual(digest_of(first + rest), d)

    def test_concurrent_clients_share_one_download_and_each_streams_before_it_ends(self):
        good = os.urandom(3 * 1024 * 1024)
        d = digest_of(good)
        half = len(good) // 2
        route = Route(body=good, hold_after=half)
        self.fake.routes[self.blob_path(d)] = route

        host, port = self.regpin.host.rsplit(":", 1)
        conns, firsts = [], []
        for _ in range(4):
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            self.addCleanup(conn.close)
            conn.request("GET", self.blob_path(d))
            conns.append(conn.getresponse())
        for resp in conns:
            self.assertEqual(resp.status, 200)
            firsts.append(resp.read(1024 * 1024))
        self.assertFalse(route.release.is_set())
        route.release.set()
        for first, resp in zip(firsts, conns):
            self.assertEqual(digest_of(first + resp.read()), d)
        self.assertEqual(self.fake.count("GET", self.blob_path(d)), 1)

    def test_manifest_that_does_not_match_docker_content_digest_is_503_and_pins_nothing(self):
        good = b'{"schemaVersion":2,"mediaType":"%s","layers":[]}' % MEDIA_OCI_MANIFEST.encode()
        tampered = good.replace(b"[]", b"[ ]")
        path = "/v2/team/app/manifests/v1"
        headers = {"Content-Type": MEDIA_OCI_MANIFEST, "Docker-Content-Digest": digest_of(good)}
        self.fake.routes[path] = Route(body=tampered, headers=headers)
        resp = self.regpin.get(path, headers={"Accept": MEDIA_OCI_MANIFEST})
        self.assertEqual(resp.status, 503)
        self.assertIn("UNAVAILABLE", resp.error_codes())

        self.fake.routes[path] = Route(body=good, headers=headers)
        resp = self.regpin.get(path, headers={"Accept": MEDIA_OCI_MANIFEST})
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("Docker-Content-Digest"), digest_of(good))
        self.assertEqual(resp.body, good)

    def test_manifest_by_digest_with_other_bytes_is_503_and_not_cached(self):
        good = b'{"schemaVersion":2,"mediaType":"%s","layers":[]}' % MEDIA_OCI_MANIFEST.encode()
        d = digest_of(good)
        path = f"/v2/team/app/manifests/{d}"
        self.fake.routes[path] = Route(body=good + b" ", headers={"Content-Type": MEDIA_OCI_MANIFEST})
        self.assertEqual(self.regpin.get(path).status, 503)
        self.fake.routes[path] = Route(body=good, headers={"Content-Type": MEDIA_OCI_MANIFEST})
        resp = self.regpin.get(path)
        self.assertEqual((resp.status, resp.body), (200, good))

    def test_manifest_larger_than_4_mib_is_refused_and_not_pinned(self):
        big = b'{"schemaVersion":2,"pad":"' + b"x" * (4 * 1024 * 1024) + b'"}'
        path = "/v2/team/app/manifests/huge"
        self.fake.routes[path] = Route(body=big, headers={"Content-Type": MEDIA_OCI_MANIFEST,
                                                          "Docker-Content-Digest": digest_of(big)})
        resp = self.regpin.get(path, headers={"Accept": MEDIA_OCI_MANIFEST})
        self.assertEqual(resp.status, 503)
        self.assertIn("larger than", resp.body.decode())

    def test_upstream_429_becomes_503_never_429(self):
        path = "/v2/team/app/manifests/limited"
        self.fake.routes[path] = Route(status=429, body=b"rate limited", headers={"Retry-After": "60"})
        resp = self.regpin.get(path)
        self.assertEqual(resp.status, 503)
        self.assertIn("UNAVAILABLE", resp.error_codes())


if __name__ == "__main__":
    unittest.main()
