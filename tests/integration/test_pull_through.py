"""regpin end to end: real upstreams (docker-registry), real clients (containerd's ctr, skopeo,
http.client), all on loopback.

Each test class starts what it needs in setUpClass (or setUp, where a test stops or restarts
a server) and uses its own repositories, so tests do not depend on each other's order.
Run one test with, e.g.:

    python3 -m unittest -v test_pull_through.PinningTest
"""

from __future__ import annotations

import hashlib
import re
import http.client
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
from pathlib import Path
from typing import Optional

import harness as h

DOCKER_HUB = "docker.io"


class RegpinTestCase(h.LogsOnFailure):
    """Prints the tail of regpin's log when a test fails or errors."""

    regpin: Optional[h.Regpin] = None

    # failure_report: the default (self.regpin's log) from h.LogsOnFailure

    # -- fixtures ---------------------------------------------------------------------------------

    @classmethod
    def start_registry(cls, name: str) -> h.Registry:
        registry = h.Registry(name).start()
        cls.addClassCleanup(registry.close)
        return registry

    @classmethod
    def start_regpin(cls, *upstreams: h.Upstream) -> h.Regpin:
        regpin = h.Regpin(upstreams)
        cls.addClassCleanup(regpin.close)  # registered first: runs even if start() fails
        return regpin.start()

    @classmethod
    def start_containerd(cls) -> h.Containerd:
        containerd = h.Containerd().start()
        cls.addClassCleanup(containerd.close)
        return containerd

    @classmethod
    def new_layout(cls) -> h.OciLayout:
        layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        cls.addClassCleanup(h.remove_temp_dir, str(layout.path))
        return layout

    # -- assertions against regpin ------------------------------------------------------------

    def resolve(self, regpin: h.Regpin, repo: str, tag: str, **query: str) -> str:
        """HEAD manifests/<tag> through regpin with containerd's Accept; returns the digest."""
        resp = regpin.head(h.with_query(f"/v2/{repo}/manifests/{tag}", **query), {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual(resp.status, 200, f"HEAD {repo}:{tag} {query} via regpin")
        digest = resp.header("Docker-Content-Digest")
        self.assertIsNotNone(digest, "HEAD answer lacks Docker-Content-Digest")
        return digest

    def get_manifest_digest(self, regpin: h.Regpin, repo: str, ref: str, **query: str) -> str:
        """GET manifests/<ref> through regpin; returns sha256 of the body, after checking that it
        equals Docker-Content-Digest."""
        resp = regpin.get(h.with_query(f"/v2/{repo}/manifests/{ref}", **query), {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual(resp.status, 200, f"GET manifest {repo}:{ref} {query} via regpin: {resp.body[:300]!r}")
        digest = h.sha256_digest(resp.body)
        self.assertEqual(resp.header("Docker-Content-Digest"), digest, "Docker-Content-Digest != sha256(body)")
        return digest

    def assert_oci_error(self, resp: h.Response, status: int, code: str) -> None:
        self.assertEqual(resp.status, status, resp.body[:300])
        self.assertIn(code, resp.error_codes(), f"error body: {resp.body[:300]!r}")

    def assert_pulled(self, containerd: h.Containerd, ref: str, image: h.Image) -> None:
        """containerd recorded `ref` at the image's top digest and holds all its blobs."""
        self.assertEqual(containerd.image_digest(ref), image.digest, f"digest containerd recorded for {ref}")
        missing = set(image.blobs) - containerd.content_digests()
        self.assertFalse(missing, f"blobs of {ref} missing from containerd's content store")


# ------------------------------------------------------------------------------------------------
# a. containerd pulls through regpin
# ------------------------------------------------------------------------------------------------


class ContainerdPullThroughRegpinTest(RegpinTestCase):
    """ctr with a fail-closed hosts.toml per registry: regpin is the only endpoint it may use."""

    @classmethod
    def setUpClass(cls):
        cls.hub = cls.start_registry("docker-hub")
        cls.other = cls.start_registry("other")
        layout = cls.new_layout()
        cls.mini = h.make_image(layout, "mini", seed="pull-mini", revision="mini-1")
        cls.app = h.make_image(layout, "app", seed="pull-app", layer_sizes=(2048, 8192))
        cls.multi = h.make_image(layout, "multi", seed="pull-multi", platforms=("linux/amd64", "linux/arm64"))
        h.push(layout, "library/mini:1.0", cls.hub, source_tag="mini")
        h.push(layout, "team/app:v1", cls.other, source_tag="app")
        h.push(layout, "team/multi:v1", cls.other, source_tag="multi")
        cls.regpin = cls.start_regpin(
            h.Upstream.of(DOCKER_HUB, cls.hub), h.Upstream.of(cls.other.host, cls.other)
        )
        cls.containerd = cls.start_containerd()
        cls.containerd.mirror(DOCKER_HUB, cls.regpin.url)
        cls.containerd.mirror(cls.other.host, cls.regpin.url)

    def setUp(self):
        self.containerd.forget_everything()

    def test_ctr_pull_of_a_docker_io_library_reference_through_regpin_gets_the_upstream_digest(self):
        ref = "docker.io/library/mini:1.0"
        self.containerd.pull(ref)
        self.assert_pulled(self.containerd, ref, self.mini)
        self.hub.sync_log()
        self.assertGreater(self.hub.access_log_count("GET", r"/v2/library/mini/blobs/" + self.mini.layer_digests[0]), 0)

    def test_ctr_pull_of_an_upstream_host_port_reference_through_regpin_gets_the_upstream_digest(self):
        ref = f"{self.other.host}/team/app:v1"
        self.containerd.pull(ref)
        self.assert_pulled(self.containerd, ref, self.app)

    def test_ctr_pull_of_a_multi_arch_index_for_all_platforms_gets_the_upstream_index_and_manifests(self):
        ref = f"{self.other.host}/team/multi:v1"
        self.containerd.pull(ref, all_platforms=True)
        self.assert_pulled(self.containerd, ref, self.multi)
        image = self.containerd.images()[ref]
        self.assertEqual(image.media_type, h.MEDIA_OCI_INDEX)
        self.assertEqual(image.platforms, "linux/amd64,linux/arm64")

    def test_ctr_fetch_of_one_platform_of_an_index_gets_that_platforms_manifest_only(self):
        ref = f"{self.other.host}/team/multi:v1"
        self.containerd.fetch(ref, platform="linux/arm64")
        self.assertEqual(self.containerd.image_digest(ref), self.multi.digest)
        content = self.containerd.content_digests()
        self.assertIn(self.multi.manifest_for("linux/arm64"), content)
        self.assertNotIn(self.multi.manifest_for("linux/amd64"), content)


# ------------------------------------------------------------------------------------------------
# b. skopeo through regpin as a path-prefix mirror
# ------------------------------------------------------------------------------------------------


class SkopeoThroughRegpinTest(RegpinTestCase):
    """skopeo has no `ns`: it reaches an upstream through a repository-name prefix. The upstream
    is registered under a DNS-style name, because a docker reference cannot hold a path
    component like "127.0.0.1:5000" (skopeo: "invalid reference format")."""

    NAME = "registry.test"

    @classmethod
    def setUpClass(cls):
        cls.hub = cls.start_registry("docker-hub")  # the default upstream, which lacks the repo
        cls.upstream = cls.start_registry("registry-test")
        layout = cls.new_layout()
        cls.multi = h.make_image(layout, "multi", seed="skopeo-multi", platforms=("linux/amd64", "linux/arm64"))
        cls.app = h.make_image(layout, "app", seed="skopeo-app")
        h.push(layout, "team/multi:v1", cls.upstream, source_tag="multi")
        h.push(layout, "team/app:v1", cls.upstream, source_tag="app")
        cls.regpin = cls.start_regpin(h.Upstream.of(DOCKER_HUB, cls.hub), h.Upstream.of(cls.NAME, cls.upstream))

    def new_dir(self) -> str:
        d = tempfile.mkdtemp(prefix="regpin-it-copy-")
        self.addCleanup(h.remove_temp_dir, d)
        return d

    def test_skopeo_copy_of_an_index_by_path_prefix_preserves_the_upstream_digests(self):
        skopeo = h.default_skopeo()
        dest = self.new_dir()
        digest = skopeo.copy_to_oci(
            f"docker://{self.regpin.host}/{self.NAME}/team/multi:v1", dest, "copied", "--src-tls-verify=false"
        )
        self.assertEqual(digest, self.multi.digest)
        for blob in self.multi.blobs:
            stored = Path(dest, "blobs", "sha256", blob.split(":")[1])
            self.assertTrue(stored.exists(), f"{blob} not copied")
            self.assertEqual(h.sha256_digest(stored.read_bytes()), blob)

    def test_skopeo_through_a_registries_conf_mirror_on_regpin_gets_the_upstream_manifest_bytes(self):
        # References name a registry nobody serves; the only way to it is the mirror on regpin.
        nowhere = f"127.0.0.1:{h.free_port()}"
        skopeo = h.Skopeo(h.mirror_registries_conf(nowhere, f"{self.regpin.host}/{self.NAME}"))
        self.addCleanup(skopeo.close)
        raw = skopeo.inspect_raw(f"docker://{nowhere}/team/app:v1")
        self.assertEqual(h.sha256_digest(raw), self.app.digest)
        digest = skopeo.copy_to_oci(f"docker://{nowhere}/team/app:v1", self.new_dir())
        self.assertEqual(digest, self.app.digest)


# ------------------------------------------------------------------------------------------------
# c. pins
# ------------------------------------------------------------------------------------------------


class PinningTest(RegpinTestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = cls.start_registry("upstream")
        cls.layout = cls.new_layout()
        cls.regpin = cls.start_regpin(h.Upstream.of(cls.upstream.host, cls.upstream))
        cls.containerd = cls.start_containerd()
        cls.containerd.mirror(cls.upstream.host, cls.regpin.url)

    def test_tag_repushed_upstream_with_new_content_still_pulls_the_first_digest_through_regpin(self):
        first = h.make_image(self.layout, "first", seed="pin-first", revision="1")
        second = h.make_image(self.layout, "second", seed="pin-second", revision="2")
        self.assertNotEqual(first.digest, second.digest)
        ref = f"{self.upstream.host}/team/pinned:v1"

        h.push(self.layout, "team/pinned:v1", self.upstream, source_tag="first")
        self.containerd.forget_everything()
        self.containerd.pull(ref)
        self.assert_pulled(self.containerd, ref, first)

        h.push(self.layout, "team/pinned:v1", self.upstream, source_tag="second")
        self.assertEqual(self.upstream.manifest_digest("team/pinned", "v1"), second.digest,
                         "the upstream itself now answers the new digest")

        self.containerd.forget_everything()
        self.containerd.pull(ref)
        self.assert_pulled(self.containerd, ref, first)
        self.assertEqual(self.resolve(self.regpin, "team/pinned", "v1"), first.digest)
        self.assertEqual(self.get_manifest_digest(self.regpin, "team/pinned", "v1"), first.digest)

    def test_tag_first_seen_after_a_repush_is_pinned_to_the_digest_seen_then(self):
        # Pins start at first sight through regpin, not at first push upstream.
        old = h.make_image(self.layout, "late-old", seed="late-old")
        new = h.make_image(self.layout, "late-new", seed="late-new")
        h.push(self.layout, "team/late:v1", self.upstream, source_tag="late-old")
        h.push(self.layout, "team/late:v1", self.upstream, source_tag="late-new")
        self.assertEqual(self.resolve(self.regpin, "team/late", "v1"), new.digest)
        h.push(self.layout, "team/late:v1", self.upstream, source_tag="late-old")
        self.assertEqual(self.upstream.manifest_digest("team/late", "v1"), old.digest)
        self.assertEqual(self.resolve(self.regpin, "team/late", "v1"), new.digest)


# ------------------------------------------------------------------------------------------------
# d. upstream outages, regpin restarts
# ------------------------------------------------------------------------------------------------


class UpstreamOutageAndRestartTest(RegpinTestCase):
    """Each test stops or restarts servers, so each gets its own upstream and regpin."""

    @classmethod
    def setUpClass(cls):
        cls.containerd = cls.start_containerd()
        cls.layout = cls.new_layout()
        cls.first = h.make_image(cls.layout, "first", seed="outage-first", layer_sizes=(4096, 4096))
        cls.second = h.make_image(cls.layout, "second", seed="outage-second")

    def setUp(self):
        self.upstream = h.Registry("upstream").start()
        self.addCleanup(self.upstream.close)
        self.regpin = h.Regpin([h.Upstream.of(self.upstream.host, self.upstream)])
        self.addCleanup(self.regpin.close)
        self.regpin.start()
        self.containerd.mirror(self.upstream.host, self.regpin.url)
        self.containerd.forget_everything()
        self.ref = f"{self.upstream.host}/team/app:v1"
        h.push(self.layout, "team/app:v1", self.upstream, source_tag="first")

    def test_pull_of_a_cached_image_succeeds_while_the_upstream_is_stopped(self):
        self.containerd.pull(self.ref)
        self.containerd.forget_everything()
        self.upstream.stop()
        self.containerd.pull(self.ref)
        self.assert_pulled(self.containerd, self.ref, self.first)

    def test_regpin_restarted_on_the_same_data_dir_keeps_the_pin_while_the_upstream_is_stopped(self):
        self.containerd.pull(self.ref)
        self.containerd.forget_everything()
        h.push(self.layout, "team/app:v1", self.upstream, source_tag="second")
        self.upstream.stop()
        port, data_dir = self.regpin.port, self.regpin.data_dir
        self.regpin.restart()
        self.assertEqual((self.regpin.port, self.regpin.data_dir), (port, data_dir))
        self.assertEqual(self.resolve(self.regpin, "team/app", "v1"), self.first.digest)
        self.containerd.pull(self.ref)
        self.assert_pulled(self.containerd, self.ref, self.first)

    def test_pin_survives_sigkill_of_regpin_right_after_the_pull(self):
        self.containerd.pull(self.ref)
        self.regpin.kill()
        # The upstream stays up and now answers another digest: only a durable pin keeps the first.
        h.push(self.layout, "team/app:v1", self.upstream, source_tag="second")
        self.regpin.start()
        self.assertEqual(self.resolve(self.regpin, "team/app", "v1"), self.first.digest)

    def test_uncached_tag_with_the_upstream_stopped_fails_fast_with_a_server_error(self):
        self.upstream.stop()
        started = time.monotonic()
        resp = self.regpin.get("/v2/team/never-pulled/manifests/v1", {"Accept": h.ACCEPT_ALL_MANIFESTS})
        elapsed = time.monotonic() - started
        # 5xx (not 404, not 429) makes containerd fall back to the next endpoint at once.
        self.assertTrue(500 <= resp.status < 600, f"status {resp.status}: {resp.body[:200]!r}")
        self.assertLess(elapsed, 10.0, "regpin should give up on a refused upstream connection quickly")


# ------------------------------------------------------------------------------------------------
# e. one upstream fetch for concurrent requests
# ------------------------------------------------------------------------------------------------


class ConcurrentBlobFetchTest(RegpinTestCase):
    CLIENTS = 8

    @classmethod
    def setUpClass(cls):
        cls.upstream = cls.start_registry("upstream")
        layout = cls.new_layout()
        cls.big = h.make_large_image(layout, "big", seed="concurrent-big", size=8 << 20)
        h.push(layout, "team/big:v1", cls.upstream, source_tag="big")
        cls.regpin = cls.start_regpin(h.Upstream.of(cls.upstream.host, cls.upstream))

    def fetch_blob(self, path: str, barrier: threading.Barrier, results: list, i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.regpin.port, timeout=60)
        try:
            conn.connect()
            barrier.wait(timeout=30)
            conn.request("GET", path)
            resp = conn.getresponse()
            hasher, size = hashlib.sha256(), 0
            while chunk := resp.read(256 * 1024):
                hasher.update(chunk)
                size += len(chunk)
            results[i] = (resp.status, "sha256:" + hasher.hexdigest(), size)
        except Exception as e:  # noqa: BLE001 - reported by the test thread
            results[i] = e
        finally:
            conn.close()

    def test_eight_concurrent_gets_of_one_uncached_blob_cause_exactly_one_upstream_get(self):
        (layer,) = self.big.layer_digests
        size = len(self.big.blobs[layer])
        self.assertGreater(size, 8 << 20)
        path = f"/v2/team/big/blobs/{layer}"
        upstream_path = r"/v2/team/big/blobs/" + layer
        self.upstream.sync_log()
        self.assertEqual(self.upstream.access_log_count("GET", upstream_path), 0, "blob fetched before the test")

        barrier = threading.Barrier(self.CLIENTS)
        results: list = [None] * self.CLIENTS
        threads = [
            threading.Thread(target=self.fetch_blob, args=(path, barrier, results, i)) for i in range(self.CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        self.assertFalse(any(t.is_alive() for t in threads), "a client did not finish")

        for i, r in enumerate(results):
            self.assertNotIsInstance(r, Exception, f"client {i}: {r!r}")
            self.assertEqual(r, (200, layer, size), f"client {i}")
        self.upstream.sync_log()
        self.assertEqual(self.upstream.access_log_count("GET", upstream_path), 1)

        # Later requests are served from the cache.
        resp = self.regpin.get(path)
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, layer))
        self.upstream.sync_log()
        self.assertEqual(self.upstream.access_log_count("GET", upstream_path), 1)


# ------------------------------------------------------------------------------------------------
# f. routing by ns, path prefix and default upstream
# ------------------------------------------------------------------------------------------------


class NamespaceRoutingTest(RegpinTestCase):
    @classmethod
    def setUpClass(cls):
        cls.hub = cls.start_registry("docker-hub")
        cls.other = cls.start_registry("other")
        layout = cls.new_layout()
        # The same repository name in both upstreams, with different content.
        cls.hub_app = h.make_image(layout, "hub-app", seed="route-hub-app")
        cls.other_app = h.make_image(layout, "other-app", seed="route-other-app")
        cls.mini = h.make_image(layout, "mini", seed="route-mini")
        h.push(layout, "shared/app:v1", cls.hub, source_tag="hub-app")
        h.push(layout, "shared/app:v1", cls.other, source_tag="other-app")
        h.push(layout, "library/mini:1.0", cls.hub, source_tag="mini")
        cls.regpin = cls.start_regpin(h.Upstream.of(DOCKER_HUB, cls.hub), h.Upstream.of(cls.other.host, cls.other))

    def test_ns_query_selects_the_upstream_registered_under_that_name(self):
        self.assertNotEqual(self.hub_app.digest, self.other_app.digest)
        self.assertEqual(self.resolve(self.regpin, "shared/app", "v1", ns=DOCKER_HUB), self.hub_app.digest)
        self.assertEqual(self.resolve(self.regpin, "shared/app", "v1", ns=self.other.host), self.other_app.digest)
        self.assertEqual(
            self.get_manifest_digest(self.regpin, "shared/app", self.other_app.digest, ns=self.other.host),
            self.other_app.digest,
        )
        layer = self.other_app.layer_digests[0]
        resp = self.regpin.get(h.with_query(f"/v2/shared/app/blobs/{layer}", ns=self.other.host))
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, layer))

    def test_unknown_ns_is_refused_with_404_name_unknown(self):
        for path in (
            "/v2/shared/app/manifests/v1",
            f"/v2/shared/app/blobs/{self.hub_app.layer_digests[0]}",
            "/v2/shared/app/tags/list",
        ):
            with self.subTest(path=path):
                resp = self.regpin.get(h.with_query(path, ns="unknown.example.com"))
                self.assert_oci_error(resp, 404, "NAME_UNKNOWN")

    def test_path_prefix_selects_the_upstream_registered_under_that_name(self):
        repo = f"{self.other.host}/shared/app"
        self.assertEqual(self.resolve(self.regpin, repo, "v1"), self.other_app.digest)
        self.assertEqual(self.get_manifest_digest(self.regpin, repo, "v1"), self.other_app.digest)

    def test_request_without_ns_or_prefix_goes_to_the_first_upstream(self):
        self.assertEqual(self.resolve(self.regpin, "shared/app", "v1"), self.hub_app.digest)

    def test_host_like_path_prefix_that_no_upstream_claims_is_404_and_reaches_no_upstream(self):
        # Closed world: a first component that looks like a registry host ("my.team", with a
        # dot) is a registry prefix; one no upstream claims is refused, never tried anywhere.
        self.hub.sync_log()
        before = self.hub.access_log_count("GET", r"/v2/.*my\.team.*") + self.hub.access_log_count(
            "HEAD", r"/v2/.*my\.team.*")
        resp = self.regpin.get("/v2/my.team/app/manifests/v1")
        self.assert_oci_error(resp, 404, "NAME_UNKNOWN")
        self.hub.sync_log()
        after = self.hub.access_log_count("GET", r"/v2/.*my\.team.*") + self.hub.access_log_count(
            "HEAD", r"/v2/.*my\.team.*")
        self.assertEqual(after, before)

    def test_one_component_docker_io_name_is_looked_up_under_library(self):
        self.assertEqual(self.get_manifest_digest(self.regpin, "mini", "1.0", ns=DOCKER_HUB), self.mini.digest)
        self.hub.sync_log()
        self.assertGreater(self.hub.access_log_count("GET", r"/v2/library/mini/manifests/.+")
                           + self.hub.access_log_count("HEAD", r"/v2/library/mini/manifests/.+"), 0)
        self.assertEqual(self.hub.access_log_count("GET", r"/v2/mini/manifests/.+"), 0)


# ------------------------------------------------------------------------------------------------
# g. Range requests
# ------------------------------------------------------------------------------------------------


class RangeRequestTest(RegpinTestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = cls.start_registry("upstream")
        layout = cls.new_layout()
        image = h.make_image(layout, "ranged", seed="range", layer_sizes=(64 * 1024,))
        h.push(layout, "team/ranged:v1", cls.upstream, source_tag="ranged")
        cls.regpin = cls.start_regpin(h.Upstream.of(cls.upstream.host, cls.upstream))
        (cls.layer,) = image.layer_digests
        cls.data = image.blobs[cls.layer]
        cls.path = f"/v2/team/ranged/blobs/{cls.layer}"
        resp = cls.regpin.get(cls.path)  # caches the blob
        if (resp.status, h.sha256_digest(resp.body)) != (200, cls.layer):
            raise AssertionError(f"could not fetch the blob through regpin: {resp.status}")

    def test_range_requests_on_a_cached_blob_return_206_and_the_exact_slice(self):
        total = len(self.data)
        cases = [
            ("bytes=0-0", 0, 0),
            ("bytes=0-9", 0, 9),
            ("bytes=100-1099", 100, 1099),
            ("bytes=-100", total - 100, total - 1),  # suffix: the last 100 bytes
            (f"bytes={total - 1000}-", total - 1000, total - 1),  # open-ended
            (f"bytes={total - 1}-{total - 1}", total - 1, total - 1),
            (f"bytes=10-{total + 5000}", 10, total - 1),  # end past the size is clamped
        ]
        for header, first, last in cases:
            with self.subTest(range=header):
                resp = self.regpin.get(self.path, {"Range": header})
                self.assertEqual(resp.status, 206)
                self.assertEqual(resp.header("Content-Range"), f"bytes {first}-{last}/{total}")
                self.assertEqual(resp.header("Content-Length"), str(last - first + 1))
                self.assertEqual(resp.body, self.data[first:last + 1])

    def test_get_without_range_returns_the_whole_blob_and_advertises_ranges(self):
        resp = self.regpin.get(self.path)
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, self.layer))
        self.assertEqual(resp.header("Docker-Content-Digest"), self.layer)
        self.assertEqual(resp.header("Accept-Ranges"), "bytes")


# ------------------------------------------------------------------------------------------------
# Errors, tag lists
# ------------------------------------------------------------------------------------------------


class ErrorResponseTest(RegpinTestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = cls.start_registry("upstream")
        cls.regpin = cls.start_regpin(h.Upstream.of(cls.upstream.host, cls.upstream))

    def test_invalid_repository_name_is_refused_with_400_name_invalid(self):
        # The first component is valid everywhere, so no case depends on path-prefix routing.
        for name in ("team/Upper", "team/app_", "team/a..b", "team/-app", "team//app"):
            with self.subTest(name=name):
                resp = self.regpin.get(f"/v2/{name}/manifests/latest", {"Accept": h.ACCEPT_ALL_MANIFESTS})
                self.assert_oci_error(resp, 400, "NAME_INVALID")
                self.assertEqual((resp.header("Content-Type") or "").split(";")[0], "application/json")

    def test_invalid_digest_is_refused_with_400_digest_invalid(self):
        for path in (
            "/v2/team/app/blobs/sha256:abc",
            "/v2/team/app/blobs/sha256:" + "z" * 64,
            "/v2/team/app/blobs/notadigest",
            "/v2/team/app/manifests/sha256:totallywrong",
        ):
            with self.subTest(path=path):
                self.assert_oci_error(self.regpin.get(path), 400, "DIGEST_INVALID")


class TagListTest(RegpinTestCase):
    TAGS = ["v1.10", "v1.2", "latest", "a", "B", "1.0", "z_last", "v2"]

    @classmethod
    def setUpClass(cls):
        cls.upstream = cls.start_registry("upstream")
        layout = cls.new_layout()
        h.make_image(layout, "t", seed="tags")
        h.push(layout, f"team/tags:{cls.TAGS[0]}", cls.upstream, source_tag="t")
        for tag in cls.TAGS[1:]:
            cls.upstream.retag("team/tags", cls.TAGS[0], tag)
        cls.regpin = cls.start_regpin(h.Upstream.of(cls.upstream.host, cls.upstream))

    def tags_page(self, path_and_query: str) -> tuple[list[str], Optional[str]]:
        resp = self.regpin.get(path_and_query)
        self.assertEqual(resp.status, 200, resp.body[:300])
        doc = resp.json()
        self.assertEqual(doc.get("name"), "team/tags")
        return doc.get("tags") or [], resp.header("Link")

    def test_tags_list_through_regpin_is_sorted(self):
        tags, link = self.tags_page("/v2/team/tags/tags/list")
        self.assertEqual(tags, sorted(self.TAGS))
        self.assertIsNone(link)

    def test_tags_list_paginates_with_n_and_last_and_a_link_header(self):
        expected = sorted(self.TAGS)
        tags, link = self.tags_page("/v2/team/tags/tags/list?n=3")
        self.assertEqual(tags, expected[:3])
        self.assertIsNotNone(link, "a short page of a longer list needs a Link header")
        collected, pages = list(tags), 1
        while link:
            m = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', link)
            self.assertIsNotNone(m, f"malformed Link header: {link!r}")
            target = urllib.parse.urlsplit(urllib.parse.urljoin(self.regpin.url + "/", m.group(1)))
            query = urllib.parse.parse_qs(target.query)
            self.assertEqual(query.get("n"), ["3"], link)
            self.assertEqual(query.get("last"), [collected[-1]], link)
            tags, link = self.tags_page(f"{target.path}?{target.query}")
            self.assertLessEqual(len(tags), 3)
            collected += tags
            pages += 1
            self.assertLess(pages, 10, "Link headers do not end")
        self.assertEqual(collected, expected)

    def test_tags_list_last_is_exclusive(self):
        expected = sorted(self.TAGS)
        tags, _ = self.tags_page("/v2/team/tags/tags/list?last=latest")
        self.assertEqual(tags, [t for t in expected if t > "latest"])
        tags, _ = self.tags_page("/v2/team/tags/tags/list?n=2&last=a")
        self.assertEqual(tags, [t for t in expected if t > "a"][:2])


if __name__ == "__main__":
    unittest.main()
