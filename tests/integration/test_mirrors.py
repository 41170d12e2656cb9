"""Upstream mirrors (issue 14, point 11): an upstream lists several URLs, tried in order, with
health tracking and a back-off for a failing one; each pin's event names the URL that served
it. Two real docker-registry instances on loopback hold the same images; the first listed is
stopped and started again."""

from __future__ import annotations

import re
import tempfile
import unittest

import harness as h

DOCKER_HUB = "docker.io"
TOKEN = "mirrors-test-token-0123456789"


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


class UpstreamMirrorsTest(h.LogsOnFailure):
    @classmethod
    def setUpClass(cls):
        cls.first = h.Registry("mirror").start()
        cls.addClassCleanup(cls.first.close)
        cls.second = h.Registry("origin").start()
        cls.addClassCleanup(cls.second.close)
        layout = h.OciLayout(h.make_temp_dir("mirrors-layout"))
        cls.images = {}
        for tag in ("v1", "v2", "v3"):
            cls.images[tag] = h.make_image(layout, tag, seed=f"mirrors-{tag}")
            for registry in (cls.first, cls.second):
                h.push(layout, f"team/app:{tag}", registry, source_tag=tag)
        # Only the second has this repository (a mirror that lacks an image).
        cls.images["only"] = h.make_image(layout, "only", seed="mirrors-only")
        h.push(layout, "team/rare:v1", cls.second, source_tag="only")

    def setUp(self):
        self.addCleanup(self.first.start)  # whatever a test did to it
        self.regpin = h.Regpin([h.Upstream(DOCKER_HUB, [self.first.url, self.second.url])],
                               admin_tokens=[h.AdminToken("ops", TOKEN)])
        self.addCleanup(self.regpin.close)
        self.regpin.start()

    def pinned_source(self, repository: str, tag: str) -> str | None:
        events = self.regpin.admin_request("GET", "/api/v1/events?limit=1000").json()["events"]
        pinned = [e for e in events if e["type"] == "pinned" and e["repository"] == repository
                  and e["tag"] == tag]
        self.assertEqual(len(pinned), 1, events)
        return pinned[0]["source"]

    def skopeo_copy(self, ref: str) -> str:
        dest = tempfile.mkdtemp(prefix="regpin-it-mirrors-")
        self.addCleanup(h.remove_temp_dir, dest)
        return h.default_skopeo().copy_to_oci(f"docker://{self.regpin.host}/{DOCKER_HUB}/{ref}", dest,
                                              "copied", "--src-tls-verify=false")

    def requests_for(self, registry: h.Registry, repository: str) -> int:
        """Requests `registry` logged for manifests and blobs of `repository`."""
        registry.sync_log()
        pattern = re.compile(rf"/v2/{re.escape(repository)}/(manifests|blobs)/.+")
        return sum(1 for e in registry.access_log() if pattern.fullmatch(e.path))

    def test_the_first_url_serves_while_it_is_up(self):
        before = self.requests_for(self.first, "team/app"), self.requests_for(self.second, "team/app")
        self.assertEqual(self.skopeo_copy("team/app:v1"), self.images["v1"].digest)
        self.assertEqual(self.pinned_source("team/app", "v1"), self.first.url)
        self.assertGreater(self.requests_for(self.first, "team/app"), before[0])
        self.assertEqual(self.requests_for(self.second, "team/app"), before[1], "the second URL was asked")

    def test_a_stopped_mirror_is_skipped_and_used_again_once_back(self):
        self.first.stop()
        # A real client pulls the whole image: manifests and blobs come from the second URL.
        self.assertEqual(self.skopeo_copy("team/app:v2"), self.images["v2"].digest)
        self.assertEqual(self.pinned_source("team/app", "v2"), self.second.url)
        self.assertEqual(metric(self.regpin.metrics_text(), "regpin_upstream_urls_backing_off"), 1)
        self.first.start()
        # Its back-off (1 s, doubling while it fails) ends; the next first sight goes to it.
        h.wait_until(lambda: metric(self.regpin.metrics_text(), "regpin_upstream_urls_backing_off") == 0,
                     timeout=90, interval=0.2, message="the stopped mirror's back-off ending")
        self.assertEqual(self.skopeo_copy("team/app:v3"), self.images["v3"].digest)
        self.assertEqual(self.pinned_source("team/app", "v3"), self.first.url)

    def test_a_mirror_without_the_repository_passes_the_request_on_without_backing_off(self):
        self.assertEqual(self.skopeo_copy("team/rare:v1"), self.images["only"].digest)
        self.assertEqual(self.pinned_source("team/rare", "v1"), self.second.url)
        self.assertEqual(metric(self.regpin.metrics_text(), "regpin_upstream_urls_backing_off"), 0)

    def test_every_url_down_is_503_unavailable_and_pinned_content_is_still_served(self):
        resp = self.regpin.get("/v2/team/app/manifests/v1", {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual(resp.status, 200)
        self.first.stop()
        self.second.stop()
        self.addCleanup(self.second.start)
        resp = self.regpin.get("/v2/team/app/manifests/v3", {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual(resp.status, 503, resp.body[:300])
        self.assertIn("UNAVAILABLE", resp.error_codes())
        resp = self.regpin.get("/v2/team/app/manifests/v1", {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual(resp.status, 200)


if __name__ == "__main__":
    unittest.main()
