"""The size cap (issue 15): cache.max_bytes and cache.min_free_*, eviction by last read that
never removes what a pin needs, and what happens when pins alone fill the limit.

A real docker-registry upstream; images pushed over its HTTP API (one 8 MiB layer each), pulled
through regpin by tag (pinned: protected) or by digest (not pinned: evictable)."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import unittest

import harness as h

LAYER = 8 << 20
LIMIT = 64 << 20
IMAGES = 12



class EvictionTest(h.LogsOnFailure):
    @classmethod
    def setUpClass(cls):
        cls.upstream = h.Registry().start()
        cls.addClassCleanup(cls.upstream.close)
        layout = h.OciLayout(os.path.join(h.make_temp_dir("layout"), "oci"))
        cls.images = []
        for i in range(IMAGES):
            img = h.make_large_image(layout, "v1", seed=f"evict-{i}", size=LAYER)
            cls.upstream.push_image(f"team/app{i}", img)
            cls.images.append(img)

    def start(self, **cache) -> h.Regpin:
        settings = {"cache": {"max_bytes": LIMIT, "min_free_percent": 0, **cache}}
        self.regpin = h.Regpin([h.Upstream("upstream.test", self.upstream.url)],
                               admin_tokens=[h.AdminToken("ops", "cache-test-token-0123456789")],
                               settings=settings).start()
        self.addCleanup(self.regpin.close)
        return self.regpin

    def cache(self) -> dict:
        resp = self.regpin.admin_request("GET", "/api/v1/cache")
        self.assertEqual(resp.status, 200, resp.body[:300])
        return json.loads(resp.body)

    def layer(self, i: int) -> str:
        return self.images[i].layer_digests[0]

    def pull(self, i: int, by_tag: bool) -> None:
        """Pulls image i as a client does: the manifest (by tag: pinned; by digest: not), then
        its config and layer, checking every byte."""
        img = self.images[i]
        ref = "v1" if by_tag else img.digest
        resp = self.regpin.get(f"/v2/team/app{i}/manifests/{ref}",
                               {"Accept": h.MEDIA_OCI_MANIFEST})
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(resp.header("Docker-Content-Digest"), img.digest)
        for d in img.config_digests + img.layer_digests:
            self.read_blob(i, d)

    def read_blob(self, i: int, d: str, headers: dict | None = None) -> h.Response:
        resp = self.regpin.get(f"/v2/team/app{i}/blobs/{d}", headers or {}, timeout=60)
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(h.sha256_digest(resp.body), d)
        return resp

    def upstream_gets(self, i: int, d: str) -> int:
        self.upstream.sync_log()
        return self.upstream.access_log_count("GET", rf"^/v2/team/app{i}/blobs/{d}$")

    def test_evicts_what_was_read_least_recently_and_never_what_a_pin_needs(self):
        self.start()
        self.pull(0, by_tag=True)  # pinned: its config and layer are protected
        for i in range(1, 5):
            self.pull(i, by_tag=False)
        self.read_blob(1, self.layer(1))  # read again: younger than 2, 3 and 4
        for i in range(5, 9):
            self.pull(i, by_tag=False)

        # 9 layers of 8 MiB do not fit in 64 MiB: the evictor runs as the cache grows.
        def fits() -> bool:
            c = self.cache()
            return c["evictions"] > 0 and c["data_folder_bytes"] <= c["limit_bytes"]

        h.wait_until(fits, timeout=60, interval=0.2, message="the data folder back under its limit")
        c = self.cache()
        self.assertLessEqual(c["data_folder_bytes"], LIMIT)
        self.assertEqual(c["limit_bytes"], LIMIT)
        self.assertGreaterEqual(c["protected_bytes"], LAYER, c)
        self.assertGreater(c["reclaimed_bytes"], 0, c)
        self.assertTrue(c["admitting"], c)

        # The pinned image and the blobs read most recently stay; the oldest read went.
        before = {i: self.upstream_gets(i, self.layer(i)) for i in (0, 1, 2, 8)}
        for i in (0, 1, 2, 8):
            self.read_blob(i, self.layer(i))
        after = {i: self.upstream_gets(i, self.layer(i)) for i in (0, 1, 2, 8)}
        self.assertEqual(after[0], before[0], "the pinned layer was evicted")
        self.assertEqual(after[1], before[1], "a layer read recently was evicted")
        self.assertEqual(after[8], before[8], "the newest layer was evicted")
        self.assertEqual(after[2], before[2] + 1, "the layer read least recently was kept")

        metrics = self.regpin.metrics_text()
        self.assertRegex(metrics, r"(?m)^regpin_cache_evictions_total [1-9]")
        self.assertRegex(metrics, r'(?m)^regpin_cache_bytes\{class="protected"\} [1-9]')
        limit = re.search(r"(?m)^regpin_cache_limit_bytes (\S+)$", metrics)
        self.assertIsNotNone(limit, metrics)
        self.assertEqual(float(limit.group(1)), LIMIT)
        out = self.regpin.cli("cache", check=True).stdout
        self.assertIn("protected", out)
        self.assertIn("64.0 MiB", out)

    def test_pins_alone_over_the_limit_serve_new_blobs_without_keeping_them(self):
        self.start()
        for i in range(9):  # 72 MiB that pins need
            self.pull(i, by_tag=True)

        def over() -> bool:
            return self.cache()["over_limit"]

        h.wait_until(over, timeout=60, interval=0.2, message="the cache over its limit with only protected content")
        c = self.cache()
        self.assertEqual(c["evictions"], 0, "protected content was evicted")
        self.assertFalse(c["admitting"])
        ready = self.regpin.admin_request("GET", "/readyz", token=None)
        self.assertEqual(ready.status, 200, "still ready: everything cached is served")
        self.assertEqual(json.loads(ready.body)["status"], "degraded")
        self.assertIn("cache:", json.loads(ready.body)["detail"])
        self.assertRegex(self.regpin.metrics_text(), r"(?m)^regpin_cache_over_limit 1$")

        # A new blob is served whole, verified, and not kept; a Range on it gets it whole.
        fresh = self.layer(10)
        self.read_blob(10, fresh)
        self.read_blob(10, fresh)
        self.assertEqual(self.upstream_gets(10, fresh), 2, "the new blob was kept")
        ranged = self.read_blob(10, fresh, {"Range": "bytes=0-99"})
        self.assertEqual(ranged.body, self.images[10].blobs[fresh])
        self.assertIn("served without being kept", self.regpin.log())

        # Pinned content stored before the limit was reached is all there (what came after it
        # was served without being kept, like any new blob).
        for i in range(6):
            n = self.upstream_gets(i, self.layer(i))
            self.read_blob(i, self.layer(i))
            self.assertEqual(self.upstream_gets(i, self.layer(i)), n, f"pinned layer {i} went")

        # Unpinning makes room: their content is evicted and new blobs are kept again.
        for i in range(4):
            resp = self.regpin.admin_request(
                "POST", "/api/v1/pin/unpin",
                {"registry": "upstream.test", "repository": f"team/app{i}", "tag": "v1"})
            self.assertEqual(resp.status, 200, resp.body[:300])
        h.wait_until(lambda: not self.cache()["over_limit"], timeout=60,
                     interval=0.2, message="room again after unpinning")
        c = self.cache()
        self.assertGreater(c["evictions"], 0)
        self.assertLessEqual(c["data_folder_bytes"], LIMIT)
        self.assertEqual(json.loads(self.regpin.admin_request("GET", "/readyz", token=None).body)
                         ["status"], "ready")
        n = self.upstream_gets(11, self.layer(11))
        self.read_blob(11, self.layer(11))
        self.read_blob(11, self.layer(11))
        self.assertEqual(self.upstream_gets(11, self.layer(11)), n + 1, "kept again")

    def test_protect_none_evicts_pinned_content_too_and_fetches_it_again(self):
        self.start(protect="none")
        self.pull(0, by_tag=True)
        for i in range(1, 10):
            self.pull(i, by_tag=False)
        h.wait_until(lambda: self.cache()["evictions"] > 0 and
                     self.cache()["data_folder_bytes"] <= LIMIT, timeout=60,
                     interval=0.2, message="eviction")
        self.assertEqual(self.cache()["protected_bytes"], 0)
        n = self.upstream_gets(0, self.layer(0))
        self.pull(0, by_tag=True)  # the pin still answers; its layer comes from upstream again
        self.assertEqual(self.upstream_gets(0, self.layer(0)), n + 1)


class CheckConfigTest(unittest.TestCase):
    def check(self, cache: dict) -> subprocess.CompletedProcess:
        d = h.make_temp_dir("check-config")
        path = os.path.join(d, "regpin.json")
        with open(path, "w") as f:
            json.dump({"data_dir": os.path.join(d, "data"), "cache": cache}, f)
        return h.regpin_command("serve", "--config", path, "--check-config")

    def test_limits_are_checked_against_the_file_system(self):
        ok = self.check({"max_bytes": "64MiB"})
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertIn("cache: at most 64 MiB", ok.stdout)
        self.assertIn("protect pinned", ok.stdout)

        too_big = self.check({"max_bytes": "1000000TiB"})
        self.assertEqual(too_big.returncode, 2)
        self.assertIn("cache.max_bytes", too_big.stderr)
        self.assertIn("does not fit", too_big.stderr)

        no_room = self.check({"min_free_bytes": "1000000TiB"})
        self.assertEqual(no_room.returncode, 2)
        self.assertIn("cache.min_free_bytes", no_room.stderr)

        typo = self.check({"max_bytes": "64 MB!"})
        self.assertEqual(typo.returncode, 2)
        self.assertIn("cache.max_bytes", typo.stderr)


if __name__ == "__main__":
    unittest.main()


class DiskFullTest(h.LogsOnFailure):
    """The data folder's file system fills up (a 256 MiB tmpfs, filled by another file): cached
    content is still served, new content gets a clear 503, nothing stored is damaged, and once
    space comes back regpin stores again without a restart."""

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("mounting a size-limited tmpfs needs root (CI runs as root)")
        self.upstream = h.Registry().start()
        self.addCleanup(self.upstream.close)
        layout = h.OciLayout(os.path.join(h.make_temp_dir("layout"), "oci"))
        # 0: cached before the disk fills; 1: a large layer (written past the write-ahead log,
        # so its flush needs new files: where a full disk shows first); 2: a new tag after.
        self.images = []
        for i, size in enumerate((4 << 20, 16 << 20, 4 << 20)):
            img = h.make_large_image(layout, "v1", seed=f"full-{i}", size=size)
            self.upstream.push_image(f"team/full{i}", img)
            self.images.append(img)
        self.mount = h.make_temp_dir("tmpfs")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", self.mount], check=True)
        self.addCleanup(subprocess.run, ["umount", "-l", self.mount], check=False)
        self.data = os.path.join(self.mount, "data")
        os.mkdir(self.data)
        self.regpin = h.Regpin([h.Upstream("upstream.test", self.upstream.url)],
                               admin_tokens=[h.AdminToken("ops", "disk-full-token-0123456789")],
                               data_dir=self.data,
                               settings={"cache": {"min_free_percent": 0}}).start()
        self.addCleanup(self.regpin.close)

    def pull(self, i: int) -> list[h.Response]:
        img = self.images[i]
        out = [self.regpin.get(f"/v2/team/full{i}/manifests/v1", {"Accept": h.MEDIA_OCI_MANIFEST})]
        for d in img.config_digests + img.layer_digests:
            out.append(self.regpin.get(f"/v2/team/full{i}/blobs/{d}", timeout=60))
        return out

    def assert_pulled(self, i: int) -> None:
        img = self.images[i]
        answers = self.pull(i)
        for r, d in zip(answers, [img.digest] + img.config_digests + img.layer_digests):
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertEqual(h.sha256_digest(r.body), d)

    def fill(self) -> str:
        path = os.path.join(self.mount, "filler")
        block = b"\0" * (1 << 20)
        with open(path, "wb") as f:
            try:
                while True:
                    f.write(block)
                    f.flush()
            except OSError:
                pass
        return path

    def raw_get(self, path: str) -> tuple[int, bytes]:
        """GET that tolerates a body cut short (a write that failed mid-download)."""
        host, port = self.regpin.host.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            try:
                return resp.status, resp.read()
            except (http.client.IncompleteRead, ConnectionError):
                return -resp.status, b""
        finally:
            conn.close()

    def readyz(self) -> dict:
        return json.loads(self.regpin.admin_request("GET", "/readyz", token=None).body)

    def test_a_full_disk_serves_what_is_cached_refuses_new_content_clearly_and_recovers(self):
        self.assert_pulled(0)
        filler = self.fill()

        # The large layer cannot be stored: refused (503), or cut short if the disk filled up
        # mid-body; never answered whole from a blob that was not stored.
        big = self.images[1].layer_digests[0]
        status, body = self.raw_get(f"/v2/team/full1/blobs/{big}")
        self.assertIn(status, (503, -200), body[:300])
        h.wait_until(lambda: self.readyz()["status"] == "degraded", timeout=30, interval=0.2,
                     message="/readyz degraded while the disk is full")
        self.assertIn("disk is full", self.readyz()["detail"])
        self.assertIn("no space left", self.regpin.log().lower())

        # A new tag cannot be pinned, a new blob cannot be fetched: 503 saying why.
        tag = self.regpin.get("/v2/team/full2/manifests/v1", {"Accept": h.MEDIA_OCI_MANIFEST})
        self.assertEqual(tag.status, 503, tag.body[:300])
        self.assertIn("no space left on its disk", tag.body.decode())
        status, body = self.raw_get(f"/v2/team/full1/blobs/{big}")
        self.assertEqual(status, 503, body[:300])
        self.assertIn(b"no space left on its disk", body)

        # What is cached is served, byte for byte.
        self.assert_pulled(0)

        # Space comes back: regpin stores again, without a restart.
        os.unlink(filler)
        h.wait_until(lambda: self.readyz()["status"] == "ready", timeout=60, interval=0.2,
                     message="/readyz ready again once space came back")
        self.assert_pulled(1)
        self.assert_pulled(2)
        self.upstream.sync_log()
        n = self.upstream.access_log_count("GET", rf"^/v2/team/full1/blobs/{big}$")
        self.assert_pulled(1)
        self.upstream.sync_log()
        self.assertEqual(self.upstream.access_log_count("GET", rf"^/v2/team/full1/blobs/{big}$"), n,
                         "the blob pulled after recovery was stored")

        # Nothing stored was damaged: after a restart, every image is served, upstream stopped.
        self.regpin.stop()
        self.upstream.stop()
        self.regpin.start()
        for i in range(3):
            self.assert_pulled(i)
