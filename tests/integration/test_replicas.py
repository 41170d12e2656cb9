"""Replicas that agree (issue 13): three regpins sharing their pins through a real three-member
etcd cluster (Debian's etcd-server) on loopback, in front of one docker-registry.

Every manifest answer the tests get is recorded as (replica, tag, digest served, time), and a
consistency checker asserts that every answer for a tag names one digest, across replicas,
through upstream re-pushes, an etcd leader killed mid-run, all of etcd stopped and started
again, and replicas killed with SIGKILL in the middle of first sights. The checker's totals are
printed at the end of the class (the closing note of issue 13 quotes them).

    REGPIN_BIN=../../build/regpin python3 -m unittest -v test_replicas
"""

from __future__ import annotations

import collections
import dataclasses
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from typing import Optional

import harness as h
from test_pin_lifecycle import WebhookReceiver

PREFIX = "/regpin-it/"
TOKEN = "replicas-admin-token-0123456789"


@dataclasses.dataclass(frozen=True)
class Answer:
    replica: int
    tag: str  # "repo:tag"
    status: int
    digest: Optional[str]
    time: float


class ConsistencyChecker:
    """Records every manifest answer by tag; `disagreements()` lists the tags for which two
    answers named different digests. An operator's decision (approve) starts a new epoch of the
    tag: answers while the decision spreads (`deciding`) may name either digest and are not
    checked; answers after it (`decided`) are checked among themselves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.answers: list[Answer] = []
        self._epoch: dict[str, int] = collections.defaultdict(int)
        self._deciding: set[str] = set()
        self.unchecked = 0

    def record(self, a: Answer) -> None:
        with self._lock:
            if a.tag in self._deciding:
                self.unchecked += 1
                return
            epoch = self._epoch[a.tag]
            self.answers.append(dataclasses.replace(a, tag=f"{a.tag}#{epoch}" if epoch else a.tag))

    def deciding(self, tag: str) -> None:
        with self._lock:
            self._deciding.add(tag)

    def decided(self, tag: str) -> None:
        with self._lock:
            self._deciding.discard(tag)
            self._epoch[tag] += 1

    def digests_by_tag(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = collections.defaultdict(set)
        with self._lock:
            for a in self.answers:
                if a.status == 200 and a.digest:
                    out[a.tag].add(a.digest)
        return out

    def disagreements(self) -> dict[str, set[str]]:
        return {t: d for t, d in self.digests_by_tag().items() if len(d) > 1}

    def served(self) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a.status == 200)


class ReplicasTest(h.LogsOnFailure):
    checker = ConsistencyChecker()

    @classmethod
    def setUpClass(cls) -> None:
        cls.upstream = h.Registry("replicas").start()
        cls.addClassCleanup(cls.upstream.close)
        cls.layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        cls.addClassCleanup(h.remove_temp_dir, str(cls.layout.path))
        cls.receiver = WebhookReceiver().start()
        cls.addClassCleanup(cls.receiver.stop)
        cls.etcd = h.EtcdCluster(3).start()
        cls.addClassCleanup(cls.etcd.close)
        host = cls.upstream.host
        cls.replicas = []
        for i in range(3):
            r = h.Regpin([h.Upstream.of(host, cls.upstream)],
                         admin_tokens=[h.AdminToken("ops", TOKEN)],
                         webhooks=[h.Webhook(cls.receiver.url, timeout_ms=2000)],
                         policies=[h.PolicyRule(f"{host}/split:*", "pin", revalidate_after_s=1),
                                   h.PolicyRule("**", "pin")],
                         pin_checks=h.PinChecks(revalidate_after_s=3600, sweep_interval_s=1),
                         settings={"pin_content": "none",
                                   "pin_store": {"backend": "etcd", "endpoints": cls.etcd.endpoints,
                                                 "prefix": PREFIX, "replica": f"r{i}",
                                                 "timeout_ms": 1000}})
            cls.addClassCleanup(r.close)
            cls.replicas.append(r.start())
        cls.images = {name: h.make_image(cls.layout, name, seed=f"replicas-{name}") for name in ("a", "b", "c")}

    @classmethod
    def tearDownClass(cls) -> None:
        served = cls.checker.served()
        bad = cls.checker.disagreements()
        print(f"\nconsistency checker: {len(cls.checker.answers)} answers checked, {served} served "
              f"(200) for {len(cls.checker.digests_by_tag())} tag epochs, {len(bad)} disagreements "
              f"({cls.checker.unchecked} answers while an approval spread, not checked)",
              file=sys.stderr)

    def failure_report(self):
        report = super().failure_report()
        for i, r in enumerate(self.replicas):
            report.append((f"replica r{i} log", r.log()[-4000:]))
        return report

    # -- helpers ---------------------------------------------------------------------------------

    def push(self, image: str, repo: str, tag: str = "v1") -> None:
        h.push(self.layout, f"{repo}:{tag}", self.upstream, source_tag=self.images[image].tag)

    def get(self, i: int, repo: str, tag: str = "v1", timeout: float = 30) -> h.Response:
        resp = self.replicas[i].request("GET", h.with_query(f"/v2/{repo}/manifests/{tag}", ns=self.upstream.host),
                                        {"Accept": h.ACCEPT_ALL_MANIFESTS}, timeout=timeout)
        digest = resp.header("Docker-Content-Digest") if resp.status == 200 else None
        if resp.status == 200:
            self.assertEqual(digest, h.sha256_digest(resp.body), "Docker-Content-Digest != sha256(body)")
        self.checker.record(Answer(i, f"{repo}:{tag}", resp.status, digest, time.monotonic()))
        return resp

    def served(self, i: int, repo: str, tag: str = "v1") -> str:
        resp = self.get(i, repo, tag)
        self.assertEqual(resp.status, 200, f"r{i} GET {repo}:{tag}: {resp.body[:300]!r}")
        return resp.header("Docker-Content-Digest")

    def api(self, i: int, method: str, path: str, body=None, expect: Optional[int] = 200) -> h.Response:
        resp = self.replicas[i].admin_request(method, path, body)
        if expect is not None:
            self.assertEqual(resp.status, expect, f"r{i} {method} {path}: {resp.body[:400]!r}")
        return resp

    def target(self, repo: str, tag: str = "v1") -> dict:
        return {"registry": self.upstream.host, "repository": repo, "tag": tag}

    def tag_doc(self, i: int, repo: str, tag: str = "v1") -> dict:
        return self.api(i, "GET", "/api/v1/pin?" + urllib.parse.urlencode(self.target(repo, tag))).json()

    def assert_one_truth(self) -> None:
        self.assertEqual(self.checker.disagreements(), {}, "every answer for a tag names one digest")

    def pinned_events(self, repo: str, tag: str = "v1") -> list[dict]:
        return [e for e in self.tag_doc(0, repo, tag)["history"] if e["type"] == "pinned"]

    # -- tests -----------------------------------------------------------------------------------

    def test_the_pull_audit_answers_for_the_whole_cluster_on_any_replica(self):
        """Two containerd nodes pull through two different replicas; a third replica names both
        (issue 16: each replica publishes its audit records to etcd)."""
        repo = "audit/app"
        self.push("a", repo)
        for name, i in (("node-a", 0), ("node-b", 1)):
            node = h.Containerd().start()
            self.addCleanup(node.close)
            h.regpin_command("hosts-toml", "--mirror", self.replicas[i].url, "--registry", self.upstream.host,
                             "--fail-closed", "--node-name", name, "-o", node.hosts_dir, check=True)
            ref = f"{self.upstream.host}/{repo}:v1"
            node.pull(ref)
            self.assertEqual(node.image_digest(ref), self.images["a"].digest, f"{name} through r{i}")
        # (Other tests pull image "a" into other repositories: this one's only.)
        query = "/api/v1/audit?" + urllib.parse.urlencode({"digest": self.images["a"].digest,
                                                           "ref": f"{self.upstream.host}/{repo}"})
        # Each replica writes its records every 2 s; a query on the replica that saw a pull
        # writes first, the others see it once it is written.
        self.api(0, "GET", query)
        self.api(1, "GET", query)
        docs = [self.api(i, "GET", query).json() for i in range(3)]
        for i, doc in enumerate(docs):
            self.assertEqual(sorted(doc["clients"]), ["node-a", "node-b"], f"r{i}: {doc}")
        # One record per node, whichever replica asked.
        self.assertEqual(sorted(r["client"] for r in docs[2]["records"]), ["node-a", "node-b"])

    def test_concurrent_first_pulls_across_replicas_while_the_upstream_repushes_serve_one_digest(self):
        for round_ in range(5):
            repo = f"race{round_}"
            self.push("a", repo)
            barrier = threading.Barrier(7)
            errors: list[str] = []

            def puller(i: int) -> None:
                barrier.wait()
                for _ in range(4):
                    resp = self.get(i, repo)
                    if resp.status != 200:
                        errors.append(f"r{i}: {resp.status} {resp.body[:200]!r}")

            def repusher() -> None:
                barrier.wait()
                self.push("b", repo)

            threads = [threading.Thread(target=puller, args=(i % 3,)) for i in range(6)]
            threads.append(threading.Thread(target=repusher))
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            self.assertEqual(errors, [])
            self.assert_one_truth()
            self.assertEqual(len(self.pinned_events(repo)), 1, "one first sight recorded for the cluster")
            # Every replica serves the winner afterwards, whatever the upstream says now.
            winner = self.checker.digests_by_tag()[f"{repo}:v1"]
            for i in range(3):
                self.assertEqual({self.served(i, repo)}, winner)

    def test_a_repoint_is_one_event_and_one_webhook_and_an_approval_on_one_replica_is_seen_by_all(self):
        repo = "approve"
        self.push("a", repo)
        a = self.served(0, repo)
        self.push("b", repo)
        # All three replicas check at once: one re-point event, one alert for the cluster.
        results: list[dict] = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            self.api(i, "POST", "/api/v1/pin/check", self.target(repo), expect=None).json()))
            for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        repoints = [e for e in self.tag_doc(1, repo)["history"] if e["type"] == "repointed"]
        self.assertEqual(len(repoints), 1, f"one re-point event for three checks: {repoints} {results}")
        event_id = repoints[0]["id"]
        h.wait_until(lambda: self.receiver.accepted(event_id), timeout=20, message="the alert delivered")
        for r in self.replicas:
            h.wait_until(lambda r=r: h.metric_value(r.metrics_text(), "regpin_webhook_queue") == 0, timeout=20,
                         message="the outbox is empty on every replica")
        self.assertEqual(len(self.receiver.deliveries(event_id)), 1, "exactly one delivery for the cluster")
        leaders = [h.metric_value(r.metrics_text(), "regpin_pin_store_webhook_leader") for r in self.replicas]
        self.assertEqual(sorted(leaders), [0, 0, 1], "one replica sends webhooks")

        for i in range(3):
            self.assertEqual(self.served(i, repo), a, "pending: every replica keeps serving the pin")
        h.wait_until(lambda: self.tag_doc(2, repo)["pins"][0]["state"] == "pending", timeout=5,
                     message="r2 sees the pending re-point")
        self.checker.deciding(f"{repo}:v1")
        self.api(2, "POST", "/api/v1/pin/approve", self.target(repo))
        b = self.images["b"].digest
        started = time.monotonic()
        for i in (0, 1):
            h.wait_until(lambda i=i: self.served(i, repo) == b, timeout=5, interval=0.01,
                         message=f"r{i} serves the digest approved on r2")
        elapsed = time.monotonic() - started
        self.checker.decided(f"{repo}:v1")
        print(f"\napproval on r2 served by r0 and r1 after {elapsed * 1000:.0f} ms", file=sys.stderr)
        self.assert_one_truth_after(repo, b)

    def assert_one_truth_after(self, repo: str, digest: str) -> None:
        for i in range(3):
            self.assertEqual(self.served(i, repo), digest)

    def test_pulls_go_on_while_the_etcd_leader_is_killed(self):
        repos = [f"leader{i}" for i in range(3)]
        for i, repo in enumerate(repos):
            self.push("a", repo)
            self.served(i, repo)
        stop = threading.Event()
        failures: list[str] = []
        count = [0]

        def loop(i: int) -> None:
            for n in range(2000):  # bounded
                if stop.is_set():
                    return
                resp = self.get(i, repos[n % 3])
                count[0] += 1
                if resp.status != 200:
                    failures.append(f"r{i}: {resp.status} {resp.body[:200]!r}")

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        try:
            leader = self.etcd.leader()
            self.etcd.kill(leader)
            # First sights need the store: they wait out the election instead of failing.
            for i in range(3):
                repo = f"after-leader{i}"
                self.push("c", repo)
                self.assertEqual(self.served(i, repo), self.images["c"].digest)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        self.assertEqual(failures, [], f"{count[0]} requests while the leader was killed")
        self.assertGreater(count[0], 0)
        self.etcd.start_member(leader)
        self.etcd.wait_healthy()
        self.assert_one_truth()

    def test_with_all_of_etcd_down_pins_are_served_new_tags_get_503_and_changes_flow_again_after(self):
        repo = "outage"
        self.push("a", repo)
        a = self.served(0, repo)
        for i in range(3):
            self.assertEqual(self.served(i, repo), a)
        self.push("b", "outage-new")
        self.etcd.stop()
        try:
            for r in self.replicas:
                h.wait_until(lambda r=r: r.admin_request("GET", "/readyz", token=None).json().get("status")
                             == "degraded", timeout=20, message="/readyz says degraded")
                self.assertEqual(h.metric_value(r.metrics_text(), "regpin_pin_store_degraded"), 1)
            for i in range(3):
                self.assertEqual(self.served(i, repo), a, "a pinned tag is served from memory")
            resp = self.get(1, "outage-new")
            self.assertEqual(resp.status, 503, resp.body[:300])
            self.assertIn(b"UNAVAILABLE", resp.body)
            self.assertIn(b"pin store", resp.body)
            self.assertIsNotNone(resp.header("Retry-After"))
        finally:
            for i in range(self.etcd.size):
                self.etcd.start_member(i)
            self.etcd.wait_healthy()
        # Changed through r0 at once; r1 and r2 see it when their watches resume.
        self.push("b", repo)
        self.api(0, "POST", "/api/v1/pin/check", self.target(repo))
        self.checker.deciding(f"{repo}:v1")
        self.api(0, "POST", "/api/v1/pin/approve", self.target(repo))
        b = self.images["b"].digest
        for i in (1, 2):
            h.wait_until(lambda i=i: self.served(i, repo) == b, timeout=20, interval=0.05,
                         message=f"r{i} serves the approval made after etcd came back")
        self.checker.decided(f"{repo}:v1")
        for r in self.replicas:
            h.wait_until(lambda r=r: r.admin_request("GET", "/readyz", token=None).json().get("status") == "ready",
                         timeout=20, message="/readyz ready again")
        self.assertEqual(self.served(2, "outage-new"), self.images["b"].digest)
        self.assert_one_truth()

    def test_replicas_killed_in_the_middle_of_first_sights_leave_no_duplicate_and_no_half_pin(self):
        for round_ in range(3):
            victim = round_ % 3
            other = (victim + 1) % 3
            repo = f"kill{round_}"
            tags = [f"t{n}" for n in range(6)]
            for tag in tags:
                self.push("a" if round_ % 2 == 0 else "b", repo, tag)
            started = threading.Event()

            def pull(i: int, tag: str) -> None:
                started.set()
                try:
                    self.get(i, repo, tag, timeout=10)
                except OSError:
                    pass  # the victim's connections die with it

            threads = [threading.Thread(target=pull, args=(i, tag)) for tag in tags for i in (victim, other)]
            for t in threads:
                t.start()
            started.wait(timeout=10)
            self.replicas[victim].kill()
            for t in threads:
                t.join(timeout=60)
            self.replicas[victim].start()
            for tag in tags:
                digests = {self.served(i, repo, tag) for i in range(3)}
                self.assertEqual(len(digests), 1, f"{repo}:{tag} served as {digests}")
                self.assertEqual(len(self.pinned_events(repo, tag)), 1, f"{repo}:{tag}: one first sight")
        # Every pin in etcd is whole: it decodes, and its tag has its first-sight event.
        pins = {k: v for k, v in self.etcd.kv_prefix(PREFIX + "pins/").items()}
        self.assertGreater(len(pins), 0)
        for key, value in pins.items():
            self.assertTrue(value.startswith(b"{"), key)
        self.assert_one_truth()

    def test_each_pin_is_checked_by_one_replica(self):
        repo = "split"
        self.push("a", repo)
        self.served(0, repo)
        before = [h.metric_value(r.metrics_text(), "regpin_pin_checks_total") for r in self.replicas]

        def deltas() -> list[float]:
            return [h.metric_value(r.metrics_text(), "regpin_pin_checks_total") - b
                    for r, b in zip(self.replicas, before)]

        # Due every second on every replica's sweep; only its owner checks it.
        h.wait_until(lambda: sum(deltas()) >= 3, timeout=30, interval=0.1, message="three checks of the pin")
        checked_by = [i for i, d in enumerate(deltas()) if d > 0]
        self.assertEqual(len(checked_by), 1, f"checks per replica: {deltas()}")
        replicas = [h.metric_value(r.metrics_text(), "regpin_pin_store_replicas") for r in self.replicas]
        self.assertEqual(replicas, [3, 3, 3])


class MigrateTest(h.LogsOnFailure):
    """`regpin pins migrate`: an embedded store's pins, history and pending alerts into etcd,
    idempotently, conflicts reported; a replica on etcd then serves what the single instance
    pinned and delivers the alert it had not delivered."""

    def test_pins_history_and_pending_alerts_move_to_etcd_once(self):
        upstream = h.Registry("migrate").start()
        self.addCleanup(upstream.close)
        layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        self.addCleanup(h.remove_temp_dir, str(layout.path))
        a = h.make_image(layout, "a", seed="migrate-a")
        b = h.make_image(layout, "b", seed="migrate-b")
        host = upstream.host
        for repo in ("one", "two"):
            h.push(layout, f"{repo}:v1", upstream, source_tag="a")
        # The single instance: its webhook receiver is down, so the alert stays in the outbox.
        receiver = WebhookReceiver().start()
        self.addCleanup(receiver.stop)
        receiver.stop()
        single = h.Regpin([h.Upstream.of(host, upstream)], admin_tokens=[h.AdminToken("ops", TOKEN)],
                          webhooks=[h.Webhook(receiver.url, timeout_ms=500)],
                          pin_checks=h.PinChecks(revalidate_after_s=3600, sweep_interval_s=86400),
                          settings={"pin_content": "none"})
        self.addCleanup(single.close)
        single.start()
        for repo in ("one", "two"):
            resp = single.request("GET", h.with_query(f"/v2/{repo}/manifests/v1", ns=host),
                                  {"Accept": h.ACCEPT_ALL_MANIFESTS})
            self.assertEqual(resp.status, 200)
        h.push(layout, "two:v1", upstream, source_tag="b")
        check = single.admin_request("POST", "/api/v1/pin/check", {"registry": host, "repository": "two", "tag": "v1"})
        self.assertEqual(check.status, 200, check.body[:300])
        single.stop()

        etcd = h.EtcdCluster(1).start()
        self.addCleanup(etcd.close)
        first = h.regpin_command("pins", "migrate", "--data", single.data_dir, "--to-etcd", etcd.endpoints[0],
                                 "--prefix", "/mig/")
        self.assertEqual(first.returncode, 0, first.stdout + first.stderr)
        self.assertIn("migrated 2 tag(s)", first.stdout)
        self.assertIn("2 pin(s), 3 event(s), 1 pending alert(s)", first.stdout)
        again = h.regpin_command("pins", "migrate", "--data", single.data_dir, "--to-etcd", etcd.endpoints[0],
                                 "--prefix", "/mig/")
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
        self.assertIn("migrated 0 tag(s)", again.stdout)
        self.assertIn("2 tag(s) already there; 0 conflict(s)", again.stdout)

        receiver.start()
        replica = h.Regpin([h.Upstream.of(host, upstream)], admin_tokens=[h.AdminToken("ops", TOKEN)],
                           webhooks=[h.Webhook(receiver.url, timeout_ms=2000)],
                           pin_checks=h.PinChecks(revalidate_after_s=3600, sweep_interval_s=86400),
                           settings={"pin_content": "none",
                                     "pin_store": {"backend": "etcd", "endpoints": etcd.endpoints,
                                                   "prefix": "/mig/"}})
        self.addCleanup(replica.close)
        replica.start()
        for repo in ("one", "two"):
            resp = replica.request("GET", h.with_query(f"/v2/{repo}/manifests/v1", ns=host),
                                   {"Accept": h.ACCEPT_ALL_MANIFESTS})
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header("Docker-Content-Digest"), a.digest, f"{repo}: the migrated pin")
        doc = replica.admin_request("GET", "/api/v1/pin?" + urllib.parse.urlencode(
            {"registry": host, "repository": "two", "tag": "v1"})).json()
        self.assertEqual(doc["pins"][0]["state"], "pending")
        self.assertEqual([e["type"] for e in doc["history"]], ["pinned", "repointed"])
        h.wait_until(lambda: receiver.accepted(), timeout=20, message="the migrated alert delivered")
        self.assertEqual(receiver.accepted()[0].alert()["upstream_digest"], b.digest)

        # etcd now says otherwise about "one": a second migration leaves it and says so.
        h.push(layout, "one:other", upstream, source_tag="b")
        moved = replica.admin_request("POST", "/api/v1/pin/set", {"registry": host, "repository": "one",
                                                                  "tag": "v1", "digest": b.digest})
        self.assertEqual(moved.status, 200, moved.body[:300])
        replica.stop()
        third = h.regpin_command("pins", "migrate", "--data", single.data_dir, "--to-etcd", etcd.endpoints[0],
                                 "--prefix", "/mig/")
        self.assertEqual(third.returncode, 1, third.stdout + third.stderr)
        self.assertIn("1 conflict(s)", third.stdout)
        self.assertIn(f"conflict: {host}/one:v1", third.stdout)


class EtcdSecurityTest(h.LogsOnFailure):
    """Pins on an etcd that requires TLS client certificates and its own authentication: regpin
    verifies etcd's certificate, presents its own, logs in with a password read from a file (and
    never logged), and is not ready with a wrong password."""

    def test_tls_client_certificate_and_password(self):
        ca = h.CertificateAuthority()
        self.addCleanup(ca.close)
        server = ca.issue("etcd", usages=("serverAuth", "clientAuth"))  # its gateway dials itself
        # No CN: etcd 3.4 refuses gateway requests whose certificate names a user (its CN)
        # while auth is on; regpin logs in with its password instead.
        client = ca.issue("regpin-client", usages=("clientAuth",), subject="/O=regpin")
        etcd = h.EtcdCluster(1, tls=server, client=client).start()
        self.addCleanup(etcd.close)
        password = "etcd-secret-password-4711"
        etcd.enable_auth("root-password-0815", {"regpin": (password, "/secure/")})
        upstream = h.Registry("etcd-tls").start()
        self.addCleanup(upstream.close)
        layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        self.addCleanup(h.remove_temp_dir, str(layout.path))
        image = h.make_image(layout, "a", seed="etcd-tls")
        h.push(layout, "app:v1", upstream, source_tag="a")

        def regpin_with(secret: str) -> h.Regpin:
            d = tempfile.mkdtemp(prefix="regpin-it-secret-")
            self.addCleanup(h.remove_temp_dir, d)
            with open(f"{d}/password", "w") as f:
                f.write(secret + "\n")
            store = {"backend": "etcd", "endpoints": etcd.endpoints, "prefix": "/secure/",
                     "ca_file": server.ca_path, "cert_file": client.cert_path, "key_file": client.key_path,
                     "username": "regpin", "password_file": f"{d}/password", "timeout_ms": 1000}
            r = h.Regpin([h.Upstream.of(upstream.host, upstream)], settings={"pin_store": store,
                                                                              "pin_content": "none"})
            self.addCleanup(r.close)
            return r.start()

        good = regpin_with(password)
        resp = good.request("GET", h.with_query("/v2/app/manifests/v1", ns=upstream.host),
                            {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(resp.header("Docker-Content-Digest"), image.digest)
        keys = etcd.kv_prefix("/secure/pins/")
        self.assertEqual(len(keys), 1, "the pin is in etcd")
        self.assertEqual(good.admin_request("GET", "/readyz", token=None).json()["status"], "ready")
        self.assertNotIn(password, good.log())

        bad = regpin_with("wrong-password-0000")
        ready = bad.admin_request("GET", "/readyz", token=None)
        self.assertEqual(ready.status, 503, ready.body)
        self.assertIn("authentication as 'regpin' failed", bad.log())
        self.assertNotIn("wrong-password-0000", bad.log())
        refused = bad.request("GET", h.with_query("/v2/app/manifests/v1", ns=upstream.host),
                              {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual(refused.status, 503, "no pin store, no answer by tag")


class PartitionTest(h.LogsOnFailure):
    """One replica cut off from etcd (a TCP link the test cuts) while another changes pins and
    etcd compacts its history: the cut-off replica serves what it holds, says it is degraded,
    and when the link returns its watch resumes, finds the revisions it missed compacted, and
    reloads every pin."""

    def test_a_replica_cut_off_from_etcd_catches_up_after_a_compaction(self):
        etcd = h.EtcdCluster(1).start()
        self.addCleanup(etcd.close)
        link = h.CuttableProxy(etcd.host(0))
        self.addCleanup(link.close)
        upstream = h.Registry("partition").start()
        self.addCleanup(upstream.close)
        layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        self.addCleanup(h.remove_temp_dir, str(layout.path))
        a = h.make_image(layout, "a", seed="partition-a")
        b = h.make_image(layout, "b", seed="partition-b")
        h.push(layout, "app:v1", upstream, source_tag="a")
        h.push(layout, "other:v1", upstream, source_tag="b")

        def replica(endpoint: str) -> h.Regpin:
            r = h.Regpin([h.Upstream.of(upstream.host, upstream)], admin_tokens=[h.AdminToken("ops", TOKEN)],
                         pin_checks=h.PinChecks(revalidate_after_s=3600, sweep_interval_s=86400),
                         settings={"pin_content": "none",
                                   "pin_store": {"backend": "etcd", "endpoints": [endpoint], "timeout_ms": 500}})
            self.addCleanup(r.close)
            return r.start()

        cut_off = replica(f"http://{link.host}")
        direct = replica(etcd.endpoints[0])

        def served(r: h.Regpin, repo: str) -> Optional[str]:
            resp = r.request("GET", h.with_query(f"/v2/{repo}/manifests/v1", ns=upstream.host),
                             {"Accept": h.ACCEPT_ALL_MANIFESTS})
            return resp.header("Docker-Content-Digest") if resp.status == 200 else None

        self.assertEqual(served(cut_off, "app"), a.digest)
        h.wait_until(lambda: served(direct, "app") == a.digest, timeout=5, message="the pin on both")

        link.cut()
        h.wait_until(lambda: cut_off.admin_request("GET", "/readyz", token=None).json()["status"] == "degraded",
                     timeout=20, message="the cut-off replica says it is degraded")
        self.assertEqual(direct.admin_request("GET", "/readyz", token=None).json()["status"], "ready")
        self.assertEqual(served(cut_off, "app"), a.digest, "served from memory")

        # Meanwhile, through the other replica: a re-point approved, a new pin, then compaction.
        h.push(layout, "app:v1", upstream, source_tag="b")
        target = {"registry": upstream.host, "repository": "app", "tag": "v1"}
        self.assertEqual(direct.admin_request("POST", "/api/v1/pin/check", target).status, 200)
        self.assertEqual(direct.admin_request("POST", "/api/v1/pin/approve", target).status, 200)
        self.assertEqual(served(direct, "other"), b.digest)
        revision = int(etcd.status(0)["header"]["revision"])
        etcd.call(0, "/v3/kv/compaction", {"revision": str(revision), "physical": True})

        link.restore()
        h.wait_until(lambda: served(cut_off, "app") == b.digest, timeout=30, interval=0.05,
                     message="the cut-off replica serves the approval made while it was cut off")
        h.wait_until(lambda: cut_off.admin_request("GET", "/readyz", token=None).json()["status"] == "ready",
                     timeout=20, message="ready again")
        self.assertIn("compacted past revision", cut_off.log(), "it reloaded every pin")
        self.assertEqual(served(cut_off, "other"), b.digest, "the pin made meanwhile, not a new one")
        history = cut_off.admin_request("GET", "/api/v1/pin?" + urllib.parse.urlencode(
            {"registry": upstream.host, "repository": "other", "tag": "v1"})).json()["history"]
        self.assertEqual([e["type"] for e in history], ["pinned"])
