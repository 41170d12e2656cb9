"""Bounded under load: what a rollout, a scanning script or a burst of abandoned requests costs
regpin and its upstreams (issue 14). Real docker-registry upstreams, counted from their access
logs; a scripted upstream only where a real one cannot misbehave on demand."""

from __future__ import annotations

import threading
import unittest
from typing import Callable

import harness as h

DOCKER_HUB = "docker.io"
NODES = 64


def all_at_once(n: int, work: Callable[[int], h.Response]) -> list[h.Response]:
    """Runs work(i) on n threads released together by a barrier; the answers in order. A thread
    that raised leaves its exception in the list, so the caller's assertions show it."""
    barrier = threading.Barrier(n)
    answers: list = [None] * n

    def one(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            answers[i] = work(i)
        except Exception as e:  # noqa: BLE001 - reported by the caller's assertions
            answers[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return answers


class RolloutTest(h.LogsOnFailure):
    """64 nodes ask for one never-seen tag at the same instant (a Deployment rolled out to 64
    nodes): the upstream sees one manifest fetch, whatever mix of HEAD and GET they send."""

    @classmethod
    def setUpClass(cls):
        cls.upstream = h.Registry("hub").start()
        cls.addClassCleanup(cls.upstream.close)
        layout_dir = h.make_temp_dir("load-layout")
        cls.addClassCleanup(h.remove_temp_dir, layout_dir)
        layout = h.OciLayout(layout_dir)
        cls.image = h.make_image(layout, "multi", seed="rollout",
                                 platforms=("linux/amd64", "linux/arm64"))
        for tag in ("heads", "gets", "mixed"):
            h.push(layout, f"team/app:{tag}", cls.upstream, source_tag="multi")
        # Asked for by digest only, so nothing of it is cached before the test asks.
        cls.kids = h.make_image(layout, "kids", seed="rollout-kids",
                                platforms=("linux/amd64", "linux/arm64"))
        h.push(layout, "team/kids:v1", cls.upstream, source_tag="kids")
        cls.regpin = h.Regpin([h.Upstream.of(DOCKER_HUB, cls.upstream)])
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()

    def manifest_requests(self, method: str, reference: str, repo: str = "team/app") -> int:
        return self.upstream.access_log_count(method, f"/v2/{repo}/manifests/{reference}")

    def ask(self, method: str, reference: str, repo: str = "team/app") -> Callable[[int], h.Response]:
        def work(_: int) -> h.Response:
            return self.regpin.request(method, f"/v2/{repo}/manifests/{reference}",
                                       {"Accept": h.ACCEPT_ALL_MANIFESTS}, timeout=60)
        return work

    def assert_all_served(self, answers: list, digest: str) -> None:
        for i, a in enumerate(answers):
            self.assertIsInstance(a, h.Response, f"node {i}: {a!r}")
            self.assertEqual((a.status, a.header("Docker-Content-Digest")), (200, digest),
                             f"node {i}: {a.body[:300]!r}")

    def test_64_first_heads_of_a_tag_cost_the_upstream_one_head_and_one_get_by_digest(self):
        answers = all_at_once(NODES, self.ask("HEAD", "heads"))
        self.assert_all_served(answers, self.image.digest)
        self.upstream.sync_log()
        self.assertLessEqual(self.manifest_requests("HEAD", "heads"), 1)
        self.assertEqual(self.manifest_requests("GET", "heads"), 0,
                         "a HEAD by tag became a GET by tag upstream (Docker Hub counts those)")
        self.assertLessEqual(self.manifest_requests("GET", self.image.digest), 1)

    def test_64_first_gets_of_a_tag_cost_the_upstream_one_get(self):
        answers = all_at_once(NODES, self.ask("GET", "gets"))
        self.assert_all_served(answers, self.image.digest)
        for a in answers:
            self.assertEqual(h.sha256_digest(a.body), self.image.digest)
        self.upstream.sync_log()
        self.assertEqual(self.manifest_requests("GET", "gets"), 1)
        self.assertEqual(self.manifest_requests("HEAD", "gets"), 0)

    def test_heads_and_gets_mixed_cost_at_most_one_of_each(self):
        answers = all_at_once(NODES, lambda i: self.ask("HEAD" if i % 2 else "GET", "mixed")(i))
        self.assert_all_served(answers, self.image.digest)
        self.upstream.sync_log()
        self.assertLessEqual(self.manifest_requests("GET", "mixed"), 1)
        self.assertLessEqual(self.manifest_requests("HEAD", "mixed"), 1)

    def test_64_first_gets_of_a_platform_manifest_by_digest_cost_one_get(self):
        # How nodes fetch their platform's manifest once the tag resolved: by digest.
        child = self.kids.manifest_for("linux/arm64")
        answers = all_at_once(NODES, self.ask("GET", child, "team/kids"))
        self.assert_all_served(answers, child)
        self.upstream.sync_log()
        self.assertEqual(self.manifest_requests("GET", child, "team/kids"), 1)


if __name__ == "__main__":
    unittest.main()
