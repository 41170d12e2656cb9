"""Scrub (issue 15, point 5): chunks are served without RocksDB's checksums, so a byte flipped
in a blob file on disk would be served. `regpin verify` (offline on a data folder, or through
the admin API) and the background scrub (cache.scrub_mib_per_s) re-hash stored blobs and
manifests; a mismatch is quarantined (no longer served, counted, logged) and fetched again,
verified, on the next request."""

from __future__ import annotations

import json
import os
import re

import harness as h



def flip_a_byte_of(data_dir: str, content: bytes) -> str:
    """Flips one byte in the middle of `content` where it sits in one of RocksDB's blob files;
    returns that file's path."""
    needle = content[len(content) // 2: len(content) // 2 + 64]
    for name in sorted(os.listdir(data_dir)):
        if not name.endswith(".blob"):
            continue
        path = os.path.join(data_dir, name)
        with open(path, "r+b") as f:
            data = f.read()
            at = data.find(needle)
            if at < 0:
                continue
            f.seek(at + 10)
            f.write(bytes([data[at + 10] ^ 0x01]))
            return path
    raise AssertionError("the layer's bytes are in no blob file")


class VerifyTest(h.LogsOnFailure):
    def setUp(self):
        self.upstream = h.Registry().start()
        self.addCleanup(self.upstream.close)
        layout = h.OciLayout(os.path.join(h.make_temp_dir("layout"), "oci"))
        self.images = []
        for i in range(2):
            img = h.make_large_image(layout, "v1", seed=f"verify-{i}", size=9 << 20)
            self.upstream.push_image(f"team/app{i}", img)
            self.images.append(img)

    def start(self, **cache) -> h.Regpin:
        settings = {"cache": cache} if cache else {}
        self.regpin = h.Regpin([h.Upstream("upstream.test", self.upstream.url)],
                               admin_tokens=[h.AdminToken("ops", "verify-token-0123456789")],
                               settings=settings).start()
        self.addCleanup(self.regpin.close)
        return self.regpin

    def pull(self, i: int) -> None:
        img = self.images[i]
        resp = self.regpin.get(f"/v2/team/app{i}/manifests/v1", {"Accept": h.MEDIA_OCI_MANIFEST})
        self.assertEqual(resp.status, 200, resp.body[:300])
        for d in img.config_digests + img.layer_digests:
            r = self.regpin.get(f"/v2/team/app{i}/blobs/{d}", timeout=60)
            self.assertEqual(r.status, 200, r.body[:300])

    def layer(self, i: int) -> str:
        return self.images[i].layer_digests[0]

    def upstream_gets(self, i: int) -> int:
        self.upstream.sync_log()
        return self.upstream.access_log_count("GET", rf"^/v2/team/app{i}/blobs/{self.layer(i)}$")

    def served(self, i: int) -> bytes:
        r = self.regpin.get(f"/v2/team/app{i}/blobs/{self.layer(i)}", timeout=60)
        self.assertEqual(r.status, 200, r.body[:300])
        return r.body

    def test_offline_verify_finds_a_flipped_byte_and_the_blob_is_fetched_again(self):
        self.start()
        self.pull(0)
        self.pull(1)
        self.regpin.stop()
        flip_a_byte_of(self.regpin.data_dir, self.images[0].blobs[self.layer(0)])

        # Served as is, the flipped byte would reach clients: that is what verify is for.
        out = h.regpin_command("verify", "--data", self.regpin.data_dir)
        self.assertEqual(out.returncode, 3, out.stdout + out.stderr)
        self.assertIn(self.layer(0), out.stdout)
        self.assertIn("quarantined", out.stdout)
        self.assertNotIn(self.layer(1), out.stdout)
        again = h.regpin_command("verify", "--data", self.regpin.data_dir)
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)

        self.regpin.start()
        n = self.upstream_gets(0)
        self.assertEqual(h.sha256_digest(self.served(0)), self.layer(0))
        self.assertEqual(self.upstream_gets(0), n + 1, "fetched again after the quarantine")
        self.assertEqual(h.sha256_digest(self.served(1)), self.layer(1))

    def test_verify_through_the_admin_api_quarantines_in_a_running_regpin(self):
        self.start()
        self.pull(0)
        self.pull(1)
        flip_a_byte_of(self.regpin.data_dir, self.images[1].blobs[self.layer(1)])
        out = self.regpin.cli("verify")
        self.assertEqual(out.returncode, 3, out.stdout + out.stderr)
        self.assertIn(self.layer(1), out.stdout)
        metrics = self.regpin.metrics_text()
        self.assertRegex(metrics, r'(?m)^regpin_cache_quarantined_total\{kind="blob"\} 1$')
        n = self.upstream_gets(1)
        self.assertEqual(h.sha256_digest(self.served(1)), self.layer(1))
        self.assertEqual(self.upstream_gets(1), n + 1)
        self.assertIn("does not match its digest", self.regpin.log())

    def test_the_background_scrub_finds_it_at_its_rate(self):
        self.start(scrub_mib_per_s=64)
        self.pull(0)
        flip_a_byte_of(self.regpin.data_dir, self.images[0].blobs[self.layer(0)])
        # The first background walk starts 10 s after start; ask for the status until a
        # walk quarantined it (POST /api/v1/verify would start one at once, at full speed).
        resp = self.regpin.admin_request("GET", "/api/v1/verify")
        self.assertEqual(resp.status, 200)

        def quarantined() -> bool:
            s = json.loads(self.regpin.admin_request("GET", "/api/v1/verify").body)
            return s["quarantined_blobs"] >= 1

        h.wait_until(quarantined, timeout=120, interval=0.5, message="the scrub's quarantine")
        s = json.loads(self.regpin.admin_request("GET", "/api/v1/verify").body)
        self.assertEqual(s["last"]["bad_blobs"], [self.layer(0)])
        self.assertRegex(self.regpin.metrics_text(), r"(?m)^regpin_cache_scrub_bytes_total [1-9]")
        self.assertEqual(h.sha256_digest(self.served(0)), self.layer(0))


if __name__ == "__main__":
    import unittest
    unittest.main()
