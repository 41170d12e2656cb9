"""Tiering: a node-local regpin whose upstreams are a central regpin (send_ns), which fetches
from the real registries. Both tiers cache and pin; every registry keeps its own namespace."""

from __future__ import annotations

import unittest

import harness as h

DOCKER_HUB = "docker.io"


class TieringTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.closers = []
        cls.hub = h.Registry("hub").start()
        cls.other = h.Registry("other").start()
        cls.closers += [cls.hub.close, cls.other.close]
        layout_dir = h.make_temp_dir("tier-layout")
        cls.closers.append(lambda: h.remove_temp_dir(layout_dir))
        layout = h.OciLayout(layout_dir)
        cls.hub_app = h.make_image(layout, "hub-app", seed="tier-hub")
        cls.other_app = h.make_image(layout, "other-app", seed="tier-other")
        h.push(layout, "team/app:v1", cls.hub, source_tag="hub-app")
        h.push(layout, "team/app:v1", cls.other, source_tag="other-app")
        cls.central = h.Regpin([h.Upstream.of(DOCKER_HUB, cls.hub),
                                h.Upstream.of(cls.other.host, cls.other)]).start()
        cls.closers.append(cls.central.close)
        central_url = cls.central.url
        cls.edge = h.Regpin([h.Upstream(DOCKER_HUB, central_url, send_ns=True),
                             h.Upstream(cls.other.host, central_url, send_ns=True)]).start()
        cls.closers.append(cls.edge.close)

    @classmethod
    def tearDownClass(cls):
        for close in reversed(cls.closers):
            close()

    def digest(self, regpin: h.Regpin, ns: str) -> str:
        resp = regpin.get(h.with_query("/v2/team/app/manifests/v1", ns=ns),
                          headers={"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual(resp.status, 200, resp.body[:300])
        return resp.header("Docker-Content-Digest")

    def test_each_registry_reaches_its_own_upstream_through_the_central_regpin(self):
        self.assertNotEqual(self.hub_app.digest, self.other_app.digest)
        self.assertEqual(self.digest(self.edge, DOCKER_HUB), self.hub_app.digest)
        self.assertEqual(self.digest(self.edge, self.other.host), self.other_app.digest)
        # The central tier pinned both too: it answers the same without the edge.
        self.assertEqual(self.digest(self.central, DOCKER_HUB), self.hub_app.digest)
        self.assertEqual(self.digest(self.central, self.other.host), self.other_app.digest)

    def test_blobs_flow_through_both_tiers_and_verify(self):
        layer = self.other_app.layer_digests[0]
        resp = self.edge.get(h.with_query(f"/v2/team/app/blobs/{layer}", ns=self.other.host))
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, layer))


if __name__ == "__main__":
    unittest.main()
