"""The pull audit (issue 16, point 1) and JSON logs (point 4).

Two containerd daemons play two nodes. Each gets its hosts.toml from `regpin hosts-toml
--node-name`, as the node-config DaemonSet writes it, so each sends its node name as
X-Regpin-Node. Both pull one image through regpin from a real docker-registry. Then the admin
API (`GET /api/v1/audit`) and `regpin audit` answer who pulled the image, and the re-point alert
(history and webhook) names both nodes. The audit survives a restart.

Run with, e.g.: cd tests/integration && python3 -m unittest test_audit -v
"""

from __future__ import annotations

import json
import os
import unittest
import urllib.parse

import harness as h
from test_pin_lifecycle import PinLifecycleTestCase


class PullAuditTest(PinLifecycleTestCase):
    """One upstream, one regpin (policy pin, admin token, a webhook), two containerd "nodes"."""

    OPS = "audit-ops-token-0123456789"
    SECRET = "audit-webhook-secret"

    @classmethod
    def setUpClass(cls):
        cls.start_class_servers("audit-upstream", lambda host: dict(
            admin_tokens=[h.AdminToken("ops", cls.OPS)],
            policies=[h.PolicyRule(f"{host}/**", "pin")],
            settings={"audit": {"alert_window_days": 3}},
        ))
        # start_class_servers' containerd stays unused; the two nodes get the real node config.
        cls.nodes = {}
        for name in ("node-a", "node-b"):
            c = h.Containerd().start()
            cls.addClassCleanup(c.close)
            out = h.regpin_command("hosts-toml", "--mirror", cls.regpin.url, "--registry", cls.upstream.host,
                                   "--fail-closed", "--node-name", name, "-o", c.hosts_dir, check=True)
            assert out.returncode == 0, out.stderr
            cls.nodes[name] = c

    def node_pull(self, node: str, repo: str, tag: str = "v1") -> str:
        c = self.nodes[node]
        c.forget_everything()
        ref = self.ref(repo, tag)
        c.pull(ref)
        digest = c.image_digest(ref)
        self.assertIsNotNone(digest, f"{node} pulled {ref}")
        return digest

    def audit(self, **query: str) -> dict:
        return self.api("GET", "/api/v1/audit?" + urllib.parse.urlencode(query)).json()

    def test_hosts_toml_sends_the_node_name_to_regpin_only(self):
        with open(os.path.join(self.nodes["node-a"].hosts_dir, self.upstream.host, "hosts.toml")) as f:
            text = f.read()
        self.assertIn(f'[host."{self.regpin.url}".header]', text)
        self.assertIn('X-Regpin-Node = ["node-a"]', text)
        bad = h.regpin_command("hosts-toml", "--mirror", self.regpin.url, "--registry", "docker.io",
                               "--node-name", "node a;rm")
        self.assertEqual(bad.returncode, 2, bad.stderr)
        self.assertIn("--node-name", bad.stderr)
        crio = h.regpin_command("hosts-toml", "--mirror", self.regpin.url, "--registry", "docker.io",
                                "--format", "crio", "--node-name", "node-a")
        self.assertEqual(crio.returncode, 2, crio.stderr)
        self.assertIn("--format containerd", crio.stderr)

    def test_two_nodes_pull_and_the_audit_names_both(self):
        repo = "audit/two-nodes"
        first = self.image("two-nodes-1", seed="audit-two-1", platforms=("linux/amd64", "linux/arm64"))
        self.push(first, repo)
        self.assertEqual(self.node_pull("node-a", repo), first.digest)
        self.assertEqual(self.node_pull("node-b", repo), first.digest)
        self.assertEqual(self.node_pull("node-b", repo), first.digest)

        # By tag: both nodes, the tag they asked for, how often, from which address.
        doc = self.audit(ref=self.ref(repo))
        self.assertEqual(sorted(doc["clients"]), ["node-a", "node-b"], doc)
        by_node = {r["client"]: r for r in doc["records"] if r["digest"] == first.digest}
        self.assertEqual(sorted(by_node), ["node-a", "node-b"], doc)
        for name, r in by_node.items():
            self.assertEqual((r["registry"], r["repository"], r["tag"], r["node"], r["address"]),
                             (self.upstream.host, repo, "v1", name, "127.0.0.1"), r)
            self.assertLessEqual(r["first_pulled"], r["last_pulled"])
        self.assertGreater(by_node["node-b"]["count"], by_node["node-a"]["count"],
                           "node-b pulled twice, node-a once")

        # By digest: the index containerd resolved the tag to; the platform manifest it then
        # fetched by digest is audited too (without a tag).
        doc = self.audit(digest=first.digest)
        self.assertEqual(sorted(doc["clients"]), ["node-a", "node-b"], doc)
        child = [r for r in self.audit(ref=f"{self.upstream.host}/{repo}")["records"] if r["digest"] != first.digest]
        self.assertTrue(child and all(r["tag"] is None for r in child), child)

        # By node: what node-a pulled, and nothing of node-b's.
        doc = self.audit(node="node-a", ref=f"{self.upstream.host}/{repo}")
        self.assertEqual(doc["clients"], ["node-a"], doc)
        self.assertIn(first.digest, {r["digest"] for r in doc["records"]})

        # The CLI shows the same.
        out = h.regpin_command("audit", "--admin", self.regpin.admin_url, "--digest", first.digest,
                               env={**os.environ, "REGPIN_ADMIN_TOKEN": self.OPS})
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("node-a", out.stdout)
        self.assertIn("node-b", out.stdout)
        self.assertIn("2 client(s)", out.stdout)

        # The upstream re-points the tag: the alert and the history say who runs the old bytes.
        second = self.image("two-nodes-2", seed="audit-two-2")
        self.push(second, repo)
        result = self.check(repo)
        self.assertEqual(result["outcome"], "repointed", result)
        (event,) = result["events"]
        pulled = event["summary"]["old_digest_pulled_by"]
        self.assertEqual((pulled["clients"], sorted(pulled["names"]), pulled["window_days"], pulled["more"]),
                         (2, ["node-a", "node-b"], 3, False), pulled)
        self.assertIn("pulled by 2 clients in the last 3 days", event["summary"]["text"])
        alert = self.wait_alert(event["id"], timeout=20).alert()
        self.assertEqual(sorted(alert["summary"]["old_digest_pulled_by"]["names"]), ["node-a", "node-b"], alert)
        history = self.pin_doc(repo)["history"]
        self.assertEqual(history[-1]["summary"]["old_digest_pulled_by"]["clients"], 2, history[-1])

        # Written to disk: a restart keeps it.
        self.regpin.stop()
        self.regpin.start()
        doc = self.audit(digest=first.digest)
        self.assertEqual(sorted(doc["clients"]), ["node-a", "node-b"], doc)

    def test_bad_queries_get_clear_errors(self):
        for query, status in (({"digest": "sha256:nothex"}, 400), ({"ref": "UPPER/case:v1"}, 400),
                              ({"limit": "0"}, 400), ({"since": "yesterday"}, 400)):
            with self.subTest(query=query):
                resp = self.api("GET", "/api/v1/audit?" + urllib.parse.urlencode(query), expect=status)
                self.assertIn("errors", resp.json())
        self.api("GET", "/api/v1/audit", token=None, expect=401)

    def test_a_node_name_that_is_no_name_is_not_recorded(self):
        repo = "audit/odd-header"
        img = self.image("odd-header", seed="audit-odd")
        self.push(img, repo)
        resp = self.regpin.request("GET", h.with_query(f"/v2/{repo}/manifests/v1", ns=self.upstream.host),
                                   {"Accept": h.ACCEPT_ALL_MANIFESTS, "X-Regpin-Node": "a b\tc<script>"})
        self.assertEqual(resp.status, 200)
        doc = self.audit(digest=img.digest)
        self.assertEqual(doc["clients"], ["127.0.0.1"], doc)
        self.assertIsNone(doc["records"][0]["node"])


class JsonLogTest(h.LogsOnFailure):
    """log_format "json": every line of regpin's log is one JSON object; a request line has the
    text line's fields and the node name."""

    def setUp(self):
        self.upstream = h.Registry("json-log").start()
        self.addCleanup(self.upstream.close)
        self.regpin = h.Regpin([h.Upstream.of(self.upstream.host, self.upstream)],
                               settings={"log_format": "json"})
        self.addCleanup(self.regpin.close)
        self.regpin.start()

    def test_every_line_is_a_json_object_and_requests_carry_their_fields(self):
        img = h.make_image(h.OciLayout(os.path.join(self.regpin.dir, "layout")), "v1", seed="json-log")
        self.upstream.push_image("json/app", img)
        path = h.with_query(f"/v2/json/app/manifests/{img.tag}", ns=self.upstream.host)
        resp = self.regpin.request("GET", path, {"Accept": h.ACCEPT_ALL_MANIFESTS, "X-Regpin-Node": "node-j"})
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.regpin.request("GET", "/v2/").status, 200)

        def request_lines() -> list[dict]:
            lines = []
            with open(self.regpin.log_path) as f:
                for line in f:
                    if line.startswith("=== harness"):
                        continue
                    doc = json.loads(line)  # every line parses
                    self.assertIsInstance(doc, dict, line)
                    self.assertTrue({"time", "level"} <= doc.keys(), line)
                    if doc.get("target") == path:
                        lines.append(doc)
            return lines

        (line,) = h.wait_until(request_lines, timeout=10, message="the request's log line")
        self.assertEqual((line["listener"], line["method"], line["status"], line["node"], line["upstream"],
                          line["cache"]), ("registry", "GET", 200, "node-j", self.upstream.host, "miss"), line)
        self.assertTrue(line["peer"].startswith("127.0.0.1:"), line)
        self.assertEqual(line["bytes"], len(resp.body))
        self.assertIsInstance(line["ms"], (int, float))
        with open(self.regpin.log_path) as f:
            self.assertTrue(any('"msg":"regpin ' in l and "starting" in l for l in f), "the start line")

    def test_the_text_format_names_the_node(self):
        self.regpin.stop()
        rp = h.Regpin([h.Upstream.of(self.upstream.host, self.upstream)])
        self.addCleanup(rp.close)
        rp.start()
        self.assertEqual(rp.request("GET", "/v2/", {"X-Regpin-Node": "node-t"}).status, 200)
        def logged() -> bool:
            with open(rp.log_path) as f:
                return any("GET /v2/ 200" in l and l.rstrip().endswith("node=node-t") for l in f)
        h.wait_until(logged, timeout=10, message="node= in the text line")

    def test_a_bad_log_format_is_refused(self):
        self.regpin.stop()
        rp = h.Regpin([h.Upstream.of(self.upstream.host, self.upstream)], settings={"log_format": "xml"})
        self.addCleanup(rp.close)
        out = h.run([rp.binary, "serve", "--config", rp.config_path, "--check-config"], check=False)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("log_format", out.stderr)


if __name__ == "__main__":
    unittest.main()
