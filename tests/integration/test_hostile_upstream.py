"""An upstream that tries to make regpin spend without bound, or aim it at what it must not reach
(issue 14): endless tag pages, config descriptors naming huge blobs, redirects to other schemes,
hosts and regpin itself. Scripted upstreams, since a real registry does none of this on demand."""

from __future__ import annotations

import hashlib
import json
import unittest

import harness as h
from fake_upstream import FakeUpstream, Route

DOCKER_HUB = "docker.io"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_with_config(config_digest: str, config_size: int, label: str) -> bytes:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [],
        "annotations": {"label": label},
    }, sort_keys=True).encode()


class EndlessTagPagesTest(h.LogsOnFailure):
    """An upstream whose tag list never ends (every page links to another): a client's request
    costs the upstream what the client asked for, not 100 pages."""

    PAGE = 100

    @classmethod
    def setUpClass(cls):
        def handler(req: h.RecordedRequest) -> h.Reply:
            if req.path == "/v2/":
                return h.Reply(200, {"Content-Type": "application/json"}, b"{}")
            if req.path != "/v2/team/many/tags/list":
                return h.Reply(404, {"Content-Type": "application/json"}, b'{"errors":[]}')
            after = req.query.get("last", ["t00000-000"])[0]
            page = int(after[1:6]) + 1
            tags = [f"t{page:05d}-{i:03d}" for i in range(cls.PAGE)]  # the upstream ignores n
            link = f'</v2/team/many/tags/list?last={tags[-1]}>; rel="next"'
            return h.Reply(200, {"Content-Type": "application/json", "Link": link},
                           json.dumps({"name": "team/many", "tags": tags}).encode())

        cls.upstream = h.ScriptedHTTPServer(handler).start()
        cls.addClassCleanup(cls.upstream.close)
        cls.regpin = h.Regpin([h.Upstream(DOCKER_HUB, cls.upstream.url)])
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()

    def pages_fetched(self) -> int:
        return len(self.upstream.recorded("GET", "/v2/team/many/tags/list"))

    def test_a_list_of_n_tags_costs_the_pages_that_hold_n_tags(self):
        before = self.pages_fetched()
        resp = self.regpin.get("/v2/team/many/tags/list?n=10")
        self.assertEqual(resp.status, 200, resp.body[:300])
        tags = resp.json()["tags"]
        self.assertEqual(len(tags), 10)
        self.assertIn('rel="next"', resp.header("Link") or "")
        self.assertEqual(self.pages_fetched() - before, 1)
        # The client's n and last went upstream.
        last = self.upstream.recorded("GET", "/v2/team/many/tags/list")[-1]
        self.assertEqual(last.query.get("n"), ["10"])

    def test_the_next_page_carries_on_from_the_clients_last(self):
        resp = self.regpin.get("/v2/team/many/tags/list?n=250&last=t00001-099")
        self.assertEqual(resp.status, 200, resp.body[:300])
        tags = resp.json()["tags"]
        self.assertEqual((len(tags), tags[0]), (250, "t00002-000"))
        self.assertEqual(tags, sorted(tags))

    def test_a_list_without_n_stops_at_the_page_budget_and_links_to_the_rest(self):
        before = self.pages_fetched()
        resp = self.regpin.get("/v2/team/many/tags/list")
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertLessEqual(self.pages_fetched() - before, 20)
        tags = resp.json()["tags"]
        self.assertIn(f"last={tags[-1]}", resp.header("Link") or "")


class HugeConfigTest(h.LogsOnFailure):
    """A re-point whose new manifest names a 64 MiB blob as its config: the re-point summary
    reads at most 4 MiB of a config, so regpin never downloads it."""

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeUpstream()
        cls.addClassCleanup(cls.fake.close)
        small = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        cls.huge = b"\0" * (64 << 20)
        cls.pinned = manifest_with_config(digest_of(small), len(small), "pinned")
        # The descriptor claims a small size; the blob is what the upstream serves.
        cls.moved = manifest_with_config(digest_of(cls.huge), 1000, "moved")
        cls.huge_route = Route(body=cls.huge, headers={"Content-Type": "application/octet-stream"})
        cls.fake.routes[f"/v2/team/app/blobs/{digest_of(small)}"] = Route(body=small)
        cls.fake.routes[f"/v2/team/app/blobs/{digest_of(cls.huge)}"] = cls.huge_route
        for body in (cls.pinned, cls.moved):
            cls.fake.routes[f"/v2/team/app/manifests/{digest_of(body)}"] = cls.manifest_route(body)
        cls.fake.routes["/v2/team/app/manifests/v1"] = cls.manifest_route(cls.pinned)
        cls.regpin = h.Regpin([h.Upstream(DOCKER_HUB, cls.fake.url)],
                              admin_tokens=[h.AdminToken("ops", "ops-token-0123456789abcdef")],
                              pin_checks=h.PinChecks(revalidate_after_s=0, sweep_interval_s=86400))
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()

    @staticmethod
    def manifest_route(body: bytes) -> Route:
        return Route(body=body, headers={"Content-Type": MEDIA_OCI_MANIFEST,
                                         "Docker-Content-Digest": digest_of(body)})

    def pull(self) -> h.Response:
        return self.regpin.get("/v2/team/app/manifests/v1", {"Accept": MEDIA_OCI_MANIFEST})

    def test_a_repoint_summary_never_downloads_a_config_past_its_limit(self):
        self.assertEqual(self.pull().header("Docker-Content-Digest"), digest_of(self.pinned))
        self.fake.routes["/v2/team/app/manifests/v1"] = self.manifest_route(self.moved)

        def repointed() -> list:
            self.pull()  # every pull of the pin starts a check (revalidate_after_s 0)
            events = self.regpin.admin_request("GET", "/api/v1/events?limit=100").json()["events"]
            return [e for e in events if e["type"] == "repointed"]

        events = h.wait_until(repointed, timeout=30, interval=0.2, message="the re-point event")
        self.assertEqual(events[0]["new_digest"], digest_of(self.moved))
        # The summary is written: the config was given up on, not waited for.
        self.assertFalse(self.huge_route.finished.is_set(), "regpin read the whole 64 MiB config")


def json_reply(status: int, doc: dict, headers: dict | None = None) -> h.Reply:
    return h.Reply(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(doc).encode())


class RedirectPolicyTest(h.LogsOnFailure):
    """An upstream's redirects and token realm cannot aim regpin at a plain-HTTP downgrade, a
    link-local metadata address, a private network the upstream is not on, or regpin's own admin
    listener; a tag's manifest from another host is pinned only under the registry's own digest;
    a referrers answer must be an image index."""

    @classmethod
    def setUpClass(cls):
        cls.ca = h.CertificateAuthority()
        cls.addClassCleanup(cls.ca.close)
        # A plain-HTTP server on another loopback host: what redirects point at.
        cls.elsewhere = h.ScriptedHTTPServer(cls.elsewhere_handler, bind_host="127.0.0.2").start()
        cls.addClassCleanup(cls.elsewhere.close)
        cls.redirects: dict[str, str] = {}  # upstream path -> Location
        cls.manifest = manifest_with_config(digest_of(b"{}"), 2, "real")
        cls.tampered = manifest_with_config(digest_of(b"{}"), 2, "tampered")
        cls.head_digest = digest_of(cls.manifest)
        cls.upstream = h.ScriptedHTTPServer(cls.upstream_handler).start()
        cls.addClassCleanup(cls.upstream.close)
        cls.tls_upstream = h.ScriptedHTTPServer(cls.upstream_handler,
                                                tls=cls.ca.issue("hostile", ips=("127.0.0.1",))).start()
        cls.addClassCleanup(cls.tls_upstream.close)
        cls.regpin = h.Regpin([h.Upstream(DOCKER_HUB, cls.upstream.url),
                               h.Upstream("tls.example", cls.tls_upstream.url, ca_file=cls.ca.cert_path)])
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()

    @classmethod
    def upstream_handler(cls, req: h.RecordedRequest) -> h.Reply:
        if req.path == "/v2/":
            return json_reply(200, {})
        if req.path == "/v2/team/cdn/manifests/v1" and req.method == "HEAD":
            # The registry itself names the digest; only the GET goes to the other host.
            return h.Reply(200, {"Content-Type": MEDIA_OCI_MANIFEST, "Docker-Content-Digest": cls.head_digest})
        if req.path in cls.redirects:
            return h.Reply(307, {"Location": cls.redirects[req.path]})
        if req.path == "/v2/team/realm/manifests/v1":
            challenge = 'Bearer realm="http://169.254.169.254/latest/meta-data/token",service="x"'
            return json_reply(401, {"errors": []}, {"WWW-Authenticate": challenge})
        if req.path.startswith("/v2/team/refs/referrers/"):
            return json_reply(200, {"manifests": [{"hostile": True}], "note": "not an index"})
        return json_reply(404, {"errors": []})

    @classmethod
    def elsewhere_handler(cls, req: h.RecordedRequest) -> h.Reply:
        if req.path == "/tampered":
            return h.Reply(200, {"Content-Type": MEDIA_OCI_MANIFEST}, cls.tampered)
        if req.path == "/real":
            return h.Reply(200, {"Content-Type": MEDIA_OCI_MANIFEST}, cls.manifest)
        return h.Reply(200, {"Content-Type": "application/octet-stream"}, b"from elsewhere")

    def blob_via(self, location: str, ns: str = DOCKER_HUB) -> h.Response:
        blob = "sha256:" + hashlib.sha256(location.encode()).hexdigest()
        self.redirects[f"/v2/team/app/blobs/{blob}"] = location
        return self.regpin.get(f"/v2/team/app/blobs/{blob}?ns={ns}", timeout=30)

    def assert_refused(self, resp: h.Response, log_says: str) -> None:
        self.assertEqual(resp.status, 503, resp.body[:300])
        self.assertIn("UNAVAILABLE", resp.error_codes())
        h.wait_until(lambda: log_says in self.regpin.log(), timeout=5, interval=0.05,
                     message=f"log line saying {log_says!r}")

    def test_a_redirect_from_https_to_http_is_refused(self):
        before = len(self.elsewhere.recorded())
        resp = self.blob_via(f"{self.elsewhere.url}/downgrade", ns="tls.example")
        self.assert_refused(resp, "to plain HTTP")
        self.assertEqual(len(self.elsewhere.recorded()), before, "regpin followed the downgrade")

    def test_a_redirect_to_a_link_local_metadata_address_is_refused_without_connecting(self):
        resp = self.blob_via("http://169.254.169.254/latest/meta-data/iam/security-credentials/")
        self.assert_refused(resp, "not connecting to http://169.254.169.254:80: a link-local address")

    def test_a_redirect_to_a_private_network_the_upstream_is_not_on_is_refused(self):
        resp = self.blob_via("http://10.255.255.1:8080/internal")
        self.assert_refused(resp, "a private address (10.255.255.1)")

    def test_a_redirect_to_regpins_own_admin_listener_is_refused(self):
        resp = self.blob_via(f"http://{self.regpin.admin_host}/api/v1/pins")
        self.assert_refused(resp, "regpin's own listener")

    def test_a_redirect_to_another_loopback_host_is_followed_as_the_upstream_is_on_loopback(self):
        try:
            self.blob_via(f"{self.elsewhere.url}/blob")
        except ConnectionError:
            pass  # followed: the bytes then fail the blob's digest, and regpin aborts the body
        self.assertTrue(self.elsewhere.recorded("GET", "/blob"))

    def test_a_token_realm_on_a_link_local_address_is_never_asked(self):
        resp = self.regpin.get(f"/v2/team/realm/manifests/v1", {"Accept": MEDIA_OCI_MANIFEST})
        self.assertGreaterEqual(resp.status, 500, resp.body[:300])
        h.wait_until(lambda: "not connecting to http://169.254.169.254:80" in self.regpin.log(),
                     timeout=5, interval=0.05, message="the refusal in the log")

    def test_a_tags_manifest_from_another_host_is_pinned_only_under_the_registrys_digest(self):
        self.redirects["/v2/team/cdn/manifests/v1"] = f"{self.elsewhere.url}/tampered"
        resp = self.regpin.get("/v2/team/cdn/manifests/v1", {"Accept": MEDIA_OCI_MANIFEST})
        self.assertEqual(resp.status, 503, resp.body[:300])
        self.assertIn("does not match its digest", resp.body.decode())
        # The same redirect to the bytes the registry names: served and pinned.
        self.redirects["/v2/team/cdn/manifests/v1"] = f"{self.elsewhere.url}/real"
        resp = self.regpin.get("/v2/team/cdn/manifests/v1", {"Accept": MEDIA_OCI_MANIFEST})
        self.assertEqual((resp.status, resp.header("Docker-Content-Digest")), (200, self.head_digest))

    def test_a_referrers_answer_that_is_no_image_index_is_refused(self):
        subject = digest_of(b"subject")
        resp = self.regpin.get(f"/v2/team/refs/referrers/{subject}")
        self.assertNotEqual(resp.status, 200, resp.body[:300])
        self.assertNotIn(b"hostile", resp.body)


class PullQuotaTest(h.LogsOnFailure):
    """Docker Hub states its pull quota on every answer (ratelimit-remaining). At or below the
    low-water mark, regpin fetches no manifest it does not have (503 with Retry-After) while
    pinned and cached content keeps being served."""

    @classmethod
    def setUpClass(cls):
        cls.remaining = "100;w=21600"
        cls.manifests = {tag: manifest_with_config(digest_of(b"{}"), 2, tag) for tag in ("a", "c", "b")}

        def handler(req: h.RecordedRequest) -> h.Reply:
            # The quota falls with the answer for tag c: no earlier request (the first pin's
            # content fetched in the background, say) may state it before that.
            if req.path.endswith("/manifests/c"):
                cls.remaining = "5;w=21600"
            quota = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": cls.remaining}
            if req.path == "/v2/":
                return json_reply(200, {}, quota)
            tag = req.path.rsplit("/", 1)[-1]
            body = cls.manifests.get(tag) or next((m for m in cls.manifests.values() if digest_of(m) == tag), None)
            if body is None:
                return json_reply(404, {"errors": []}, quota)
            return h.Reply(200, {"Content-Type": MEDIA_OCI_MANIFEST, "Docker-Content-Digest": digest_of(body),
                                 **quota}, body)

        cls.upstream = h.ScriptedHTTPServer(handler).start()
        cls.addClassCleanup(cls.upstream.close)
        cls.regpin = h.Regpin([h.Upstream(DOCKER_HUB, cls.upstream.url)])
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()

    def pull(self, tag: str) -> h.Response:
        return self.regpin.get(f"/v2/team/app/manifests/{tag}", {"Accept": MEDIA_OCI_MANIFEST})

    def test_a_low_quota_refuses_new_manifests_and_serves_pinned_ones(self):
        self.assertEqual(self.pull("a").status, 200)
        self.assertEqual(self.pull("c").status, 200)  # its answer states the low quota
        resp = self.pull("b")
        self.assertEqual(resp.status, 503, resp.body[:300])
        self.assertIn("pull quota", resp.body.decode())
        self.assertGreater(int(resp.header("Retry-After") or 0), 0)
        self.assertEqual(self.upstream.recorded("GET", "/v2/team/app/manifests/b"), [])
        # What is pinned and cached is still served.
        resp = self.pull("a")
        self.assertEqual((resp.status, resp.header("Docker-Content-Digest")), (200, digest_of(self.manifests["a"])))
        self.assertIn("regpin_upstream_quota_low 1", self.regpin.metrics_text())
        self.assertIn("at or below 20 (pin_checks.ratelimit_low_water)", self.regpin.log())


if __name__ == "__main__":
    unittest.main()
