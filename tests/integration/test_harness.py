"""Checks of the harness itself, with no regpin involved: ctr and skopeo talk straight to a
docker-registry. When a regpin test fails and these pass, the fault is regpin's."""

import hashlib
import tempfile
import unittest
from pathlib import Path

import harness as h


class HarnessRegistryTest(unittest.TestCase):
    def setUp(self):
        self.registry = h.Registry("harness").start()
        self.addCleanup(self.registry.close)

    def test_access_log_counts_every_request_by_method_and_path(self):
        for _ in range(3):
            self.assertEqual(h.http_request(self.registry.host, "GET", "/v2/").status, 200)
        self.assertEqual(
            h.http_request(self.registry.host, "HEAD", "/v2/some/repo/manifests/missing?ns=x").status, 404
        )
        self.registry.sync_log()
        # The readiness probe and the log marker are GET /v2/ as well.
        self.assertGreaterEqual(self.registry.access_log_count("GET", r"/v2/"), 3)
        self.assertEqual(self.registry.access_log_count("HEAD", r"/v2/some/repo/manifests/missing"), 1)
        self.assertEqual(self.registry.access_log_count("GET", r"/v2/some/repo/manifests/missing"), 0)
        entry = [e for e in self.registry.access_log() if e.method == "HEAD"][0]
        self.assertEqual((entry.query, entry.status), ("ns=x", 404))

    def test_restart_keeps_storage_and_port(self):
        layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        self.addCleanup(h.remove_temp_dir, str(layout.path))
        image = h.make_image(layout, "v1", seed="harness-restart")
        h.push(layout, "team/app:v1", self.registry)
        port = self.registry.port
        self.registry.stop()
        with self.assertRaises(ConnectionRefusedError):
            h.http_request(self.registry.host, "GET", "/v2/", timeout=2)
        self.registry.start()
        self.assertEqual(self.registry.port, port)
        self.assertEqual(self.registry.manifest_digest("team/app", "v1"), image.digest)


class HarnessImageTest(unittest.TestCase):
    def setUp(self):
        self.dirs = [tempfile.mkdtemp(prefix="regpin-it-layout-") for _ in range(2)]
        for d in self.dirs:
            self.addCleanup(h.remove_temp_dir, d)

    def test_same_seed_gives_same_digests_and_another_seed_other_digests(self):
        a = h.make_image(self.dirs[0], "t", seed="s1", platforms=("linux/amd64", "linux/arm64"))
        b = h.make_image(self.dirs[1], "t", seed="s1", platforms=("linux/amd64", "linux/arm64"))
        c = h.make_image(self.dirs[1], "u", seed="s2", platforms=("linux/amd64", "linux/arm64"))
        self.assertEqual(a.digest, b.digest)
        self.assertEqual(a.layer_digests, b.layer_digests)
        self.assertNotEqual(a.digest, c.digest)
        self.assertTrue(set(a.layer_digests).isdisjoint(c.layer_digests))
        self.assertEqual(a.media_type, h.MEDIA_OCI_INDEX)
        self.assertEqual(sorted(a.platform_manifests), ["linux/amd64", "linux/arm64"])

    def test_layout_blobs_hash_to_their_names_and_layers_have_the_requested_size(self):
        image = h.make_large_image(self.dirs[0], "big", seed="big", size=1 << 20)
        for digest, data in image.blobs.items():
            self.assertEqual(h.sha256_digest(data), digest)
            stored = Path(self.dirs[0], "blobs", "sha256", digest.split(":")[1]).read_bytes()
            self.assertEqual(hashlib.sha256(stored).hexdigest(), digest.split(":")[1])
        (layer,) = image.layer_digests
        self.assertGreater(len(image.blobs[layer]), 1 << 20)


class HarnessClientsTest(unittest.TestCase):
    """ctr and skopeo against a docker-registry, configured exactly as the regpin tests
    configure them against regpin."""

    @classmethod
    def setUpClass(cls):
        cls.registry = h.Registry("harness-clients").start()
        cls.addClassCleanup(cls.registry.close)
        cls.containerd = h.Containerd().start()
        cls.addClassCleanup(cls.containerd.close)
        cls.layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        cls.addClassCleanup(h.remove_temp_dir, str(cls.layout.path))
        cls.single = h.make_image(cls.layout, "single", seed="harness-single")
        cls.multi = h.make_image(cls.layout, "multi", seed="harness-multi", platforms=("linux/amd64", "linux/arm64"))
        h.push(cls.layout, "library/single:1.0", cls.registry, source_tag="single")
        h.push(cls.layout, "team/multi:v1", cls.registry, source_tag="multi")
        h.push(cls.layout, "registry.test/team/multi:v1", cls.registry, source_tag="multi")

    def setUp(self):
        self.containerd.forget_everything()

    def test_ctr_pull_through_fail_closed_hosts_toml_gets_the_pushed_digest(self):
        self.containerd.mirror("docker.io", self.registry.url)
        self.containerd.pull("docker.io/library/single:1.0")
        self.assertEqual(self.containerd.image_digest("docker.io/library/single:1.0"), self.single.digest)
        self.assertTrue(set(self.single.blobs) <= self.containerd.content_digests())
        self.registry.sync_log()
        # containerd marks requests to a host other than the reference's with ?ns=.
        by_containerd = [
            e for e in self.registry.access_log()
            if e.user_agent.startswith("containerd/") and "/library/single/" in e.path
        ]
        self.assertTrue(by_containerd)
        self.assertEqual({e.query for e in by_containerd}, {"ns=docker.io"})

    def test_ctr_pull_all_platforms_of_an_index_gets_every_manifest(self):
        ref = f"{self.registry.host}/team/multi:v1"
        self.containerd.mirror(self.registry.host, self.registry.url)
        self.containerd.pull(ref, all_platforms=True)
        image = self.containerd.images()[ref]
        self.assertEqual((image.digest, image.media_type), (self.multi.digest, h.MEDIA_OCI_INDEX))
        self.assertEqual(image.platforms, "linux/amd64,linux/arm64")
        self.assertTrue(set(self.multi.blobs) <= self.containerd.content_digests())

    def test_fail_closed_hosts_toml_with_a_dead_mirror_makes_the_pull_fail(self):
        # Proves the hosts.toml form leaves containerd no other way to the registry.
        dead = f"http://127.0.0.1:{h.free_port()}"
        self.containerd.mirror(self.registry.host, dead)
        try:
            result = self.containerd.fetch(f"{self.registry.host}/team/multi:v1", check=False)
        finally:
            self.containerd.mirror(self.registry.host, self.registry.url)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertIn("connection refused", result.stderr)

    def test_skopeo_through_a_path_prefix_mirror_in_registries_conf_preserves_digests(self):
        # Nothing listens on `nowhere`: only the mirror can serve references under it.
        nowhere = f"127.0.0.1:{h.free_port()}"
        skopeo = h.Skopeo(h.mirror_registries_conf(nowhere, f"{self.registry.host}/registry.test"))
        self.addCleanup(skopeo.close)
        raw = skopeo.inspect_raw(f"docker://{nowhere}/team/multi:v1")
        self.assertEqual(h.sha256_digest(raw), self.multi.digest)
        dest = tempfile.mkdtemp(prefix="regpin-it-copy-")
        self.addCleanup(h.remove_temp_dir, dest)
        self.assertEqual(skopeo.copy_to_oci(f"docker://{nowhere}/team/multi:v1", dest), self.multi.digest)
        for digest in self.multi.blobs:
            self.assertTrue(Path(dest, "blobs", "sha256", digest.split(":")[1]).exists(), digest)
        self.registry.sync_log()
        self.assertGreater(
            self.registry.access_log_count("GET", r"/v2/registry\.test/team/multi/manifests/.*"), 0
        )


if __name__ == "__main__":
    unittest.main()
