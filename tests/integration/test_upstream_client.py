"""regpin's upstream client against real servers: HTTPS with a private CA (docker-registry with
`http.tls`), Basic auth (docker-registry with `auth.htpasswd`), the Bearer token flow
(docker-registry with `auth.token` and the harness's TokenServer), redirects to another host,
a hung upstream, and which client headers reach the upstream.

Only the redirect and header checks use fakes (harness.ScriptedHTTPServer): docker-registry's
filesystem driver never redirects, and its access log shows no request headers.

    python3 -m unittest -v test_upstream_client.BearerTokenUpstreamTest
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import unittest
import urllib.parse
from typing import Optional

import harness as h
from test_pull_through import RegpinTestCase

OCI_TYPES = [h.MEDIA_DOCKER_MANIFEST, h.MEDIA_DOCKER_LIST, h.MEDIA_OCI_MANIFEST, h.MEDIA_OCI_INDEX]


class UpstreamClientTestCase(RegpinTestCase):
    """Fixtures for tests that start several differently configured regpins."""

    @classmethod
    def new_temp_dir(cls, prefix: str) -> str:
        d = h.make_temp_dir(prefix)
        cls.addClassCleanup(h.remove_temp_dir, d)
        return d

    def start_regpin_for_test(self, *upstreams: h.Upstream, env: Optional[dict] = None) -> h.Regpin:
        """A regpin (fresh data dir) for this test only; it becomes self.regpin, whose log tail
        is printed if the test fails. It stops after the test; its dir (with the log) is
        removed with the class, after the failure report. `pin_content` is "none": these
        tests inspect the upstream requests a client's request causes, and the background fetch
        of a pin's content (test_pin_lifecycle.PinContentTest) would add its own."""
        regpin = h.Regpin(upstreams, env=env, settings={"pin_content": "none"})
        self.addClassCleanup(h.remove_temp_dir, regpin.dir)
        self.addCleanup(regpin.stop)
        regpin.start()
        self.regpin = regpin
        return regpin

    def get_manifest(self, regpin: h.Regpin, repo: str, ref: str, **kwargs) -> h.Response:
        return regpin.get(f"/v2/{repo}/manifests/{ref}", {"Accept": h.ACCEPT_ALL_MANIFESTS, **kwargs})

    def assert_pulls(self, regpin: h.Regpin, repo: str, tag: str, image: h.Image) -> None:
        """The tag's manifest and every blob of a single-platform image come through regpin
        with status 200 and bodies that hash to the image's digests."""
        resp = self.get_manifest(regpin, repo, tag)
        self.assertEqual(resp.status, 200, f"GET {repo}:{tag}: {resp.body[:300]!r}")
        self.assertEqual(h.sha256_digest(resp.body), image.digest)
        self.assertEqual(resp.header("Docker-Content-Digest"), image.digest)
        for digest in image.config_digests + image.layer_digests:
            resp = regpin.get(f"/v2/{repo}/blobs/{digest}")
            self.assertEqual(resp.status, 200, f"GET blob {digest}: {resp.body[:300]!r}")
            self.assertEqual(h.sha256_digest(resp.body), digest)

    def assert_not_served(self, resp: h.Response, what: str) -> None:
        self.assertNotEqual(resp.status, 200, f"{what} was served: {resp.body[:200]!r}")
        self.assertGreaterEqual(resp.status, 400, f"{what}: {resp.status}")
        self.assertTrue(resp.error_codes(), f"{what}: not an OCI error body: {resp.body[:200]!r}")


# ------------------------------------------------------------------------------------------------
# 1. HTTPS upstreams
# ------------------------------------------------------------------------------------------------


class HttpsUpstreamTest(UpstreamClientTestCase):
    """docker-registry serving HTTPS with a certificate for IP 127.0.0.1 from a private CA."""

    @classmethod
    def setUpClass(cls):
        cls.ca = h.CertificateAuthority()
        cls.addClassCleanup(cls.ca.close)
        cls.upstream = h.Registry("tls", tls=cls.ca.issue("registry", ips=("127.0.0.1",)))
        cls.addClassCleanup(cls.upstream.close)
        cls.upstream.start()
        layout = cls.new_layout()
        cls.image = h.make_image(layout, "app", seed="tls-app", layer_sizes=(4096, 2048))
        h.push(layout, "team/app:v1", cls.upstream, source_tag="app")

    def regpin_requests_logged_by(self, registry: h.Registry) -> list[h.AccessLogEntry]:
        registry.sync_log()
        return [e for e in registry.access_log() if e.user_agent == "regpin"]

    def test_regpin_trusting_the_ca_file_pulls_the_manifest_and_blobs_over_https(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream,
                                                          ca_file=self.ca.cert_path))
        self.assertTrue(self.upstream.url.startswith("https://"))
        self.assert_pulls(regpin, "team/app", "v1", self.image)
        paths = {e.path for e in self.regpin_requests_logged_by(self.upstream) if e.status == 200}
        self.assertIn(f"/v2/team/app/blobs/{self.image.layer_digests[0]}", paths)

    def test_regpin_with_only_the_system_cas_answers_503_and_caches_nothing(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream))
        before = len(self.regpin_requests_logged_by(self.upstream))
        layer = self.image.layer_digests[0]
        for attempt in range(2):  # the second round would be a cache hit if anything was stored
            with self.subTest(attempt=attempt):
                resp = self.get_manifest(regpin, "team/app", "v1")
                self.assertEqual(resp.status, 503, resp.body[:300])
                self.assertIn("UNAVAILABLE", resp.error_codes())
                self.assertEqual(regpin.head("/v2/team/app/manifests/v1").status, 503)
                self.assertEqual(self.get_manifest(regpin, "team/app", self.image.digest).status, 503)
                resp = regpin.get(f"/v2/team/app/blobs/{layer}")
                self.assertEqual(resp.status, 503, resp.body[:300])
        # The handshake failed, so not one HTTP request reached the registry.
        self.assertEqual(len(self.regpin_requests_logged_by(self.upstream)), before)
        self.assertRegex(regpin.log(), r"TLS handshake failed: certificate verify failed")

    def test_certificate_for_another_host_is_refused_even_when_its_ca_is_trusted(self):
        wrong = h.Registry("tls-wrong-name", tls=self.ca.issue("wrong-name", ips=("127.0.0.2",),
                                                                dns_names=("wrong.test",)))
        self.addCleanup(wrong.close)
        wrong.ssl_context.check_hostname = False  # the harness itself must still reach it
        wrong.start()
        regpin = self.start_regpin_for_test(h.Upstream.of(wrong.host, wrong, ca_file=self.ca.cert_path))
        resp = self.get_manifest(regpin, "team/app", "v1")
        self.assertEqual(resp.status, 503, resp.body[:300])
        self.assertIn("UNAVAILABLE", resp.error_codes())
        self.assertEqual(self.regpin_requests_logged_by(wrong), [])

    def test_tls_verify_false_pulls_from_an_untrusted_upstream_and_logs_a_warning(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream, tls_verify=False))
        self.assert_pulls(regpin, "team/app", "v1", self.image)
        warning = re.search(r"^.* warn\w* .*upstream " + re.escape(self.upstream.host)
                            + r": TLS certificate verification is DISABLED.*$", regpin.log(), re.M)
        self.assertIsNotNone(warning, "no warning that verification is off")


# ------------------------------------------------------------------------------------------------
# 2. Basic auth upstreams
# ------------------------------------------------------------------------------------------------


class BasicAuthUpstreamTest(UpstreamClientTestCase):
    """docker-registry with `auth.htpasswd` (bcrypt): every request needs Basic credentials."""

    USER, PASSWORD = "alice", "s3cret-alice"

    @classmethod
    def setUpClass(cls):
        secrets = cls.new_temp_dir("secrets")
        htpasswd = h.write_htpasswd(secrets, {cls.USER: cls.PASSWORD})
        cls.password_file = os.path.join(secrets, "password")
        with open(cls.password_file, "w") as f:
            f.write(cls.PASSWORD + "\n")  # a trailing newline, as editors write it
        cls.upstream = h.Registry("basic", htpasswd=htpasswd, credentials=(cls.USER, cls.PASSWORD))
        cls.addClassCleanup(cls.upstream.close)
        cls.upstream.start()
        layout = cls.new_layout()
        cls.image = h.make_image(layout, "app", seed="basic-app")
        h.push(layout, "team/private:v1", cls.upstream, source_tag="app")

    def setUp(self):
        self.upstream.sync_log()
        self.log_mark = len(self.upstream.access_log())

    def upstream_statuses(self, path_regex: str) -> list[int]:
        """Statuses the registry logged for regpin's requests to matching paths in this test."""
        self.upstream.sync_log()
        pattern = re.compile(path_regex)
        return [e.status for e in self.upstream.access_log()[self.log_mark:]
                if e.user_agent == "regpin" and pattern.fullmatch(e.path)]

    def test_regpin_with_username_and_password_file_pulls_the_image(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream,
                                                          username=self.USER, password_file=self.password_file))
        self.assert_pulls(regpin, "team/private", "v1", self.image)

    def test_regpin_with_the_password_in_an_environment_variable_pulls_the_image(self):
        regpin = self.start_regpin_for_test(
            h.Upstream.of(self.upstream.host, self.upstream, username=self.USER, password_env="REGPIN_TEST_PW"),
            env={"REGPIN_TEST_PW": self.PASSWORD},
        )
        self.assert_pulls(regpin, "team/private", "v1", self.image)

    def test_regpin_without_credentials_gets_an_error_for_the_manifest_and_blobs(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream))
        self.assert_not_served(self.get_manifest(regpin, "team/private", "v1"), "manifest")
        self.assert_not_served(regpin.get(f"/v2/team/private/blobs/{self.image.layer_digests[0]}"), "blob")
        statuses = self.upstream_statuses(r"/v2/team/private/.*")
        self.assertTrue(statuses, "regpin never asked the upstream")
        self.assertEqual(set(statuses), {401})

    def test_regpin_with_a_wrong_password_gets_an_error(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream,
                                                          username=self.USER, password="wrong"))
        self.assert_not_served(self.get_manifest(regpin, "team/private", "v1"), "manifest")

    def test_a_clients_own_authorization_header_is_never_forwarded_upstream(self):
        valid = h.basic_auth(self.USER, self.PASSWORD)
        direct = self.upstream.request("GET", "/v2/team/private/manifests/v1",
                                       {"Accept": h.ACCEPT_ALL_MANIFESTS, "Authorization": valid}, authenticate=False)
        self.assertEqual(direct.status, 200, "the header the client sends is valid at the upstream")
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream))
        self.assert_not_served(self.get_manifest(regpin, "team/private", "v1", Authorization=valid), "manifest")
        self.assert_not_served(
            regpin.get(f"/v2/team/private/blobs/{self.image.layer_digests[0]}", {"Authorization": valid}), "blob")
        self.assertEqual(set(self.upstream_statuses(r"/v2/team/private/.*")), {401})


# ------------------------------------------------------------------------------------------------
# 3. Bearer token flow against docker-registry's `auth.token`
# ------------------------------------------------------------------------------------------------


class BearerTokenUpstreamTest(UpstreamClientTestCase):
    """docker-registry 2.8 trusting tokens from the harness's TokenServer:
    `public/*` and `short/*` are pullable by anyone (anonymous tokens), `private/*` only by
    alice, and the harness pushes as `pusher`. Tokens for `short/*` expire after 2 s."""

    ALICE = ("alice", "alice-pw")
    PUSHER = ("pusher", "pusher-pw")
    SHORT_EXPIRY = 2

    @classmethod
    def setUpClass(cls):
        cls.tokens = h.TokenServer(
            [
                h.Grant(r"public/.*"),
                h.Grant(r"short/.*"),
                h.Grant(r"private/.*", ("pull",), user=cls.ALICE[0]),
                h.Grant(r".*", ("pull", "push"), user=cls.PUSHER[0]),
            ],
            users=dict([cls.ALICE, cls.PUSHER]),
            expires_in_for={r"short/.*": cls.SHORT_EXPIRY},
        )
        cls.addClassCleanup(cls.tokens.close)
        cls.tokens.start()
        cls.upstream = h.Registry("token", token_auth=cls.tokens, credentials=cls.PUSHER)
        cls.addClassCleanup(cls.upstream.close)
        cls.upstream.start()
        layout = cls.new_layout()
        cls.public = h.make_image(layout, "public", seed="token-public", layer_sizes=(4096, 4096, 2048))
        cls.private = h.make_image(layout, "private", seed="token-private")
        h.push(layout, "public/app:v1", cls.upstream, source_tag="public")
        h.push(layout, "public/cached:v1", cls.upstream, source_tag="public")
        h.push(layout, "public/other:v1", cls.upstream, source_tag="public")
        h.push(layout, "short/app:v1", cls.upstream, source_tag="public")
        h.push(layout, "private/app:v1", cls.upstream, source_tag="private")

    def setUp(self):
        self.started = time.monotonic()

    def regpin_token_requests(self, repo: str) -> list[h.TokenRequest]:
        """Token requests for a pull scope on `repo` made during this test (so not the
        harness's pushes in setUpClass)."""
        return [r for r in self.tokens.token_requests(rf"repository:{re.escape(repo)}:pull")
                if r.time >= self.started]

    def test_anonymous_token_flow_pulls_a_public_repository(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream))
        self.assert_pulls(regpin, "public/app", "v1", self.public)
        requests = self.regpin_token_requests("public/app")
        self.assertTrue(requests, "regpin never asked the token server")
        for r in requests:
            self.assertIsNone(r.user, "regpin has no credentials, so its token requests are anonymous")
            self.assertEqual(r.service, self.tokens.service)
            self.assertEqual(r.access, (("public/app", ("pull",)),))

    def test_credentialed_token_flow_pulls_a_private_repository(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream,
                                                          username=self.ALICE[0], password=self.ALICE[1]))
        self.assert_pulls(regpin, "private/app", "v1", self.private)
        users = {r.user for r in self.regpin_token_requests("private/app") if r.status == 200}
        self.assertIn(self.ALICE[0], users)

    def test_without_credentials_a_private_repository_is_refused(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream))
        self.assert_not_served(self.get_manifest(regpin, "private/app", "v1"), "private manifest")
        self.assert_not_served(regpin.get(f"/v2/private/app/blobs/{self.private.layer_digests[0]}"), "private blob")
        anonymous = [r for r in self.regpin_token_requests("private/app") if r.user is None]
        self.assertTrue(anonymous, "regpin did not even try an anonymous token")
        self.assertTrue(all(r.access == (("private/app", ()),) for r in anonymous), anonymous)

    def test_wrong_password_at_the_token_server_is_refused(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream,
                                                          username=self.ALICE[0], password="wrong"))
        self.assert_not_served(self.get_manifest(regpin, "private/app", "v1"), "private manifest")
        self.assertIn(401, [r.status for r in self.regpin_token_requests("private/app")])

    def test_tokens_are_cached_per_scope_one_token_request_for_many_fetches(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream))
        self.assert_pulls(regpin, "public/cached", "v1", self.public)  # manifest + 4 blobs
        for _ in range(3):
            resp = regpin.get("/v2/public/cached/tags/list")  # tags always go upstream
            self.assertEqual(resp.status, 200, resp.body[:300])
        self.upstream.sync_log()
        fetched = [e for e in self.upstream.access_log()
                   if e.user_agent == "regpin" and e.path.startswith("/v2/public/cached/") and e.status == 200]
        self.assertGreaterEqual(len(fetched), 8, "regpin made fewer upstream requests than the test assumes")
        self.assertEqual(len(self.regpin_token_requests("public/cached")), 1)
        # Another repository is another scope, so it needs its own token.
        self.assertEqual(self.get_manifest(regpin, "public/other", "v1").status, 200)
        self.assertEqual(len(self.regpin_token_requests("public/other")), 1)
        self.assertEqual(len(self.regpin_token_requests("public/cached")), 1)

    def test_token_is_renewed_once_its_expires_in_has_passed(self):
        regpin = self.start_regpin_for_test(h.Upstream.of(self.upstream.host, self.upstream))

        def list_tags() -> None:
            resp = regpin.get("/v2/short/app/tags/list")
            self.assertEqual(resp.status, 200, resp.body[:300])

        list_tags()
        (first,) = self.regpin_token_requests("short/app")
        self.assertEqual(first.expires_in, self.SHORT_EXPIRY)
        list_tags()
        if time.monotonic() - first.time < self.SHORT_EXPIRY - 0.5:  # still well within the lifetime
            self.assertEqual(len(self.regpin_token_requests("short/app")), 1, "a valid token was not reused")

        def renewed() -> bool:
            list_tags()
            return len(self.regpin_token_requests("short/app")) >= 2

        h.wait_until(renewed, timeout=self.SHORT_EXPIRY + 15, interval=0.2, message="a second token request")
        second = self.regpin_token_requests("short/app")[1]
        self.assertGreaterEqual(second.time - first.time, self.SHORT_EXPIRY - 0.05,
                                "the token was renewed before it expired")


# ------------------------------------------------------------------------------------------------
# 4. Redirects (fakes: an origin on 127.0.0.1 and a "CDN" on 127.0.0.2)
# ------------------------------------------------------------------------------------------------


class RedirectTest(UpstreamClientTestCase):
    """The origin demands Basic auth (401 `WWW-Authenticate: Basic realm=x`) and answers
    - `GET|HEAD /v2/<repo>/blobs/<d>` with 307 to the CDN, which serves the bytes;
    - `GET /v2/<repo>/manifests/cdn` with 307 to the CDN, which serves the manifest;
    - `GET /v2/<repo>/manifests/same` with a same-host 302 to `manifests/<digest>`, as a
      relative Location (`/v2/...`), and `manifests/same-absolute` with an absolute one;
    - `GET /v2/<repo>/manifests/loop` with 307 to the CDN, which sends it back: a loop.
    The CDN lives on another host (127.0.0.2), so credentials must not follow."""

    USER, PASSWORD = "mirror", "mirror-pw"

    @classmethod
    def setUpClass(cls):
        layout = cls.new_layout()
        cls.image = h.make_image(layout, "app", seed="redirect-app", layer_sizes=(64 * 1024,))
        cls.content = dict(cls.image.blobs)
        cls.cdn = h.ScriptedHTTPServer(cls.serve_cdn, bind_host="127.0.0.2")
        cls.addClassCleanup(cls.cdn.close)
        cls.cdn.start()
        cls.origin = h.ScriptedHTTPServer(cls.serve_origin)
        cls.addClassCleanup(cls.origin.close)
        cls.origin.start()

    @classmethod
    def manifest_reply(cls) -> h.Reply:
        return h.Reply(200, {"Content-Type": cls.image.media_type, "Docker-Content-Digest": cls.image.digest},
                       cls.content[cls.image.digest])

    @classmethod
    def serve_origin(cls, req: h.RecordedRequest) -> h.Reply:
        if req.header("Authorization") != h.basic_auth(cls.USER, cls.PASSWORD):
            return h.Reply(401, {"WWW-Authenticate": "Basic realm=x", "Content-Type": "application/json"},
                           b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
        if req.path == "/v2/":
            return h.Reply(307, {"Location": f"{cls.cdn.url}/cdn/v2/"})
        m = re.fullmatch(r"/v2/(?P<repo>.+)/(?P<kind>blobs|manifests)/(?P<ref>[^/]+)", req.path)
        if not m:
            return h.Reply(404)
        repo, kind, ref = m["repo"], m["kind"], m["ref"]
        if kind == "blobs":
            if ref not in cls.content:
                return h.Reply(404)
            return h.Reply(307, {"Location": f"{cls.cdn.url}/cdn/{repo}/blobs/{ref.split(':')[1]}?sig=signed-url"})
        if ref == "cdn" and req.method == "HEAD":
            # The registry names the tag's digest itself: what regpin verifies the bytes from
            # the CDN against (a tag's manifest from another host is never pinned on its word).
            return h.Reply(200, {"Content-Type": cls.image.media_type, "Docker-Content-Digest": cls.image.digest})
        if ref == "cdn":
            return h.Reply(307, {"Location": f"{cls.cdn.url}/cdn/{repo}/manifests/{cls.image.digest.split(':')[1]}"})
        if ref == "same":
            return h.Reply(302, {"Location": f"/v2/{repo}/manifests/{cls.image.digest}"})
        if ref == "same-absolute":
            return h.Reply(302, {"Location": f"{cls.origin.url}/v2/{repo}/manifests/{cls.image.digest}"})
        if ref == "loop":
            return h.Reply(307, {"Location": f"{cls.cdn.url}/cdn/{repo}/loop"})
        if ref == cls.image.digest:
            return cls.manifest_reply()
        return h.Reply(404)

    @classmethod
    def serve_cdn(cls, req: h.RecordedRequest) -> h.Reply:
        m = re.fullmatch(r"/cdn/(?P<repo>.+)/(?P<kind>blobs|manifests)/(?P<hex>[0-9a-f]{64})", req.path)
        if m and m["kind"] == "blobs" and "sha256:" + m["hex"] in cls.content:
            return h.Reply(200, {"Content-Type": "application/octet-stream"}, cls.content["sha256:" + m["hex"]])
        if m and m["kind"] == "manifests" and "sha256:" + m["hex"] == cls.image.digest:
            return cls.manifest_reply()
        m = re.fullmatch(r"/cdn/(?P<repo>.+)/loop", req.path)
        if m:
            return h.Reply(307, {"Location": f"{cls.origin.url}/v2/{m['repo']}/manifests/loop"})
        return h.Reply(404)

    def start_mirror(self) -> h.Regpin:
        return self.start_regpin_for_test(h.Upstream("origin.test", self.origin.url,
                                                     username=self.USER, password=self.PASSWORD))

    def test_the_cdn_is_on_another_host_than_the_origin(self):
        self.assertNotEqual(urllib.parse.urlsplit(self.cdn.url).hostname,
                            urllib.parse.urlsplit(self.origin.url).hostname)

    def test_blob_redirected_to_another_host_is_fetched_verified_and_cached(self):
        regpin = self.start_mirror()
        layer = self.image.layer_digests[0]
        cdn_path = rf"/cdn/team/cached/blobs/{layer.split(':')[1]}"
        resp = regpin.get(f"/v2/team/cached/blobs/{layer}")
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, layer))
        self.assertEqual(len(self.cdn.recorded("GET", cdn_path)), 1)
        resp = regpin.get(f"/v2/team/cached/blobs/{layer}")
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, layer))
        self.assertEqual(len(self.cdn.recorded("GET", cdn_path)), 1, "the second GET was not a cache hit")

    def test_credentials_go_to_the_origin_but_not_across_the_redirect_to_another_host(self):
        regpin = self.start_mirror()
        layer = self.image.layer_digests[0]
        resp = regpin.get(f"/v2/team/creds/blobs/{layer}")
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, layer))
        at_origin = self.origin.recorded("GET", rf"/v2/team/creds/blobs/{layer}")
        self.assertIn(h.basic_auth(self.USER, self.PASSWORD), [r.header("Authorization") for r in at_origin])
        at_cdn = self.cdn.recorded(None, r"/cdn/team/creds/.*")
        self.assertEqual(len(at_cdn), 1)
        self.assertEqual(at_cdn[0].header_values("Authorization"), [])
        self.assertEqual(at_cdn[0].query.get("sig"), ["signed-url"], "the query of the Location was dropped")

    def test_head_of_an_uncached_blob_follows_the_redirect_without_credentials(self):
        regpin = self.start_mirror()
        layer = self.image.layer_digests[0]
        resp = regpin.head(f"/v2/team/head/blobs/{layer}")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("Content-Length"), str(len(self.content[layer])))
        at_cdn = self.cdn.recorded(None, r"/cdn/team/head/.*")
        self.assertEqual([r.method for r in at_cdn], ["HEAD"])
        self.assertEqual(at_cdn[0].header_values("Authorization"), [])

    def test_accept_is_kept_and_authorization_dropped_on_a_manifest_redirect_to_another_host(self):
        regpin = self.start_mirror()
        resp = self.get_manifest(regpin, "team/accept", "cdn")
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(h.sha256_digest(resp.body), self.image.digest)
        (at_cdn,) = self.cdn.recorded("GET", r"/cdn/team/accept/manifests/.*")
        (accept,) = at_cdn.header_values("Accept")
        self.assertEqual({t.strip() for t in accept.split(",")} & set(OCI_TYPES), set(OCI_TYPES))
        self.assertEqual(at_cdn.header_values("Authorization"), [])

    def assert_same_host_redirect_keeps_credentials(self, repo: str, tag: str) -> None:
        regpin = self.start_mirror()
        resp = self.get_manifest(regpin, repo, tag)
        followed = self.origin.recorded("GET", rf"/v2/{repo}/manifests/{self.image.digest}")
        self.assertTrue(followed, "the 302 was not followed on the origin")
        self.assertEqual(followed[-1].header("Authorization"), h.basic_auth(self.USER, self.PASSWORD),
                         "credentials were dropped on a same-host redirect")
        self.assertIn(h.ACCEPT_ALL_MANIFESTS.split(",")[0], followed[-1].header("Accept") or "")
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(h.sha256_digest(resp.body), self.image.digest)
        self.assertNotRegex(regpin.log(), r"redirect to .*credentials not sent",
                            "regpin took a same-host redirect for a redirect to another host")

    def test_same_host_302_with_an_absolute_location_is_followed_with_credentials(self):
        self.assert_same_host_redirect_keeps_credentials("team/same-absolute", "same-absolute")

    def test_same_host_302_with_a_relative_location_is_followed_with_credentials(self):
        self.assert_same_host_redirect_keeps_credentials("team/same-relative", "same")

    def test_redirect_loop_ends_with_a_503_instead_of_a_hang(self):
        regpin = self.start_mirror()
        started = time.monotonic()
        resp = self.get_manifest(regpin, "team/loop", "loop")
        elapsed = time.monotonic() - started
        self.assertEqual(resp.status, 503, resp.body[:300])
        self.assertIn("UNAVAILABLE", resp.error_codes())
        self.assertLess(elapsed, 10.0)
        hops = len(self.origin.recorded("GET", r"/v2/team/loop/.*")) + len(self.cdn.recorded("GET", r"/cdn/team/loop/.*"))
        self.assertLessEqual(hops, 20, "regpin kept following the loop")


# ------------------------------------------------------------------------------------------------
# 5. Hung and unreachable upstreams
# ------------------------------------------------------------------------------------------------


class HungUpstreamTest(UpstreamClientTestCase):
    """An image is cached through regpin from a real docker-registry; then the registry stops and
    a server that accepts connections but never answers takes its port."""

    READ_TIMEOUT_MS = 3000
    # An answer that waited for the hung upstream takes at least the read timeout.
    PROMPT = READ_TIMEOUT_MS / 1000

    @classmethod
    def setUpClass(cls):
        cls.upstream = cls.start_registry("hung")
        layout = cls.new_layout()
        cls.image = h.make_image(layout, "app", seed="hung-app", layer_sizes=(4096, 4096))
        h.push(layout, "team/app:v1", cls.upstream, source_tag="app")
        h.push(layout, "team/app:v2", cls.upstream, source_tag="app")
        cls.regpin = cls.start_regpin(h.Upstream.of(cls.upstream.host, cls.upstream,
                                                    connect_timeout_ms=2000, read_timeout_ms=cls.READ_TIMEOUT_MS))
        for method in ("HEAD", "GET"):
            resp = cls.regpin.request(method, "/v2/team/app/manifests/v1", {"Accept": h.ACCEPT_ALL_MANIFESTS})
            if resp.status != 200:
                raise AssertionError(f"{method} team/app:v1 through regpin: {resp.status}")
        for digest in cls.image.config_digests + cls.image.layer_digests:
            resp = cls.regpin.get(f"/v2/team/app/blobs/{digest}")
            if (resp.status, h.sha256_digest(resp.body)) != (200, digest):
                raise AssertionError(f"GET blob {digest} through regpin: {resp.status}")
        cls.upstream.stop()
        cls.silent = h.SilentServer(cls.upstream.port)
        cls.addClassCleanup(cls.silent.close)

    def timed(self, method: str, path: str, headers: Optional[dict] = None) -> tuple[h.Response, float]:
        started = time.monotonic()
        resp = self.regpin.request(method, path, headers, timeout=30)
        return resp, time.monotonic() - started

    def test_pinned_tag_and_cached_blobs_are_served_promptly_while_the_upstream_hangs(self):
        accept = {"Accept": h.ACCEPT_ALL_MANIFESTS}
        for method, path, expected in [
            ("HEAD", "/v2/team/app/manifests/v1", None),
            ("GET", "/v2/team/app/manifests/v1", self.image.digest),
            ("GET", f"/v2/team/app/manifests/{self.image.digest}", self.image.digest),
        ] + [("GET", f"/v2/team/app/blobs/{d}", d) for d in self.image.config_digests + self.image.layer_digests]:
            with self.subTest(method=method, path=path):
                resp, elapsed = self.timed(method, path, accept)
                self.assertEqual(resp.status, 200, resp.body[:300])
                self.assertLess(elapsed, self.PROMPT)
                self.assertEqual(resp.header("Docker-Content-Digest"), expected or self.image.digest)
                if expected:
                    self.assertEqual(h.sha256_digest(resp.body), expected)

    def test_uncached_tag_answers_503_after_about_the_read_timeout(self):
        accepted_before = self.silent.accepted
        resp, elapsed = self.timed("GET", "/v2/team/app/manifests/v2", {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual(resp.status, 503, resp.body[:300])
        self.assertIn("UNAVAILABLE", resp.error_codes())
        timeout = self.READ_TIMEOUT_MS / 1000
        self.assertGreaterEqual(elapsed, timeout * 0.8, "gave up before the read timeout: not a hang check")
        self.assertLess(elapsed, timeout + 2.5, "waited much longer than the read timeout")
        self.assertGreater(self.silent.accepted, accepted_before, "regpin never reached the hung server")

    def test_uncached_blob_answers_503_after_about_the_read_timeout(self):
        resp, elapsed = self.timed("GET", "/v2/team/app/blobs/sha256:" + "ab" * 32)
        self.assertEqual(resp.status, 503, resp.body[:300])
        self.assertIn("UNAVAILABLE", resp.error_codes())
        timeout = self.READ_TIMEOUT_MS / 1000
        self.assertGreaterEqual(elapsed, timeout * 0.8)
        self.assertLess(elapsed, timeout + 2.5)


class UnreachableUpstreamAtStartTest(UpstreamClientTestCase):
    def test_regpin_starts_and_serves_with_nothing_listening_on_the_upstream_port(self):
        upstream = h.Registry("late")  # configured, not started: its port refuses connections
        self.addCleanup(upstream.close)
        regpin = self.start_regpin_for_test(h.Upstream.of(upstream.host, upstream))
        self.assertEqual(regpin.get("/v2/").status, 200)
        started = time.monotonic()
        resp = self.get_manifest(regpin, "team/app", "v1")
        self.assertEqual(resp.status, 503, resp.body[:300])
        self.assertLess(time.monotonic() - started, 5.0)

        # Once the upstream is there, the same regpin pulls from it, without a restart.
        upstream.start()
        layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        self.addCleanup(h.remove_temp_dir, str(layout.path))
        image = h.make_image(layout, "app", seed="late-app")
        h.push(layout, "team/app:v1", upstream, source_tag="app")
        self.assert_pulls(regpin, "team/app", "v1", image)


# ------------------------------------------------------------------------------------------------
# 6. Which client headers reach the upstream (a recording fake)
# ------------------------------------------------------------------------------------------------


class HeaderForwardingTest(UpstreamClientTestCase):
    @classmethod
    def setUpClass(cls):
        layout = cls.new_layout()
        cls.image = h.make_image(layout, "app", seed="headers-app")
        manifest = cls.image.blobs[cls.image.digest]

        def serve(req: h.RecordedRequest) -> h.Reply:
            if re.fullmatch(r"/v2/.+/manifests/[^/]+", req.path):
                return h.Reply(200, {"Content-Type": cls.image.media_type,
                                     "Docker-Content-Digest": cls.image.digest}, manifest)
            return h.Reply(404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"NOT_FOUND"}]}')

        cls.fake = h.ScriptedHTTPServer(serve)
        cls.addClassCleanup(cls.fake.close)
        cls.fake.start()
        cls.regpin = cls.start_regpin(h.Upstream("fake.test", cls.fake.url))

    def test_accept_sent_on_several_lines_reaches_the_upstream_as_one_merged_value(self):
        lines = [("Accept", f"{h.MEDIA_DOCKER_MANIFEST}, {h.MEDIA_DOCKER_LIST}"),
                 ("Accept", h.MEDIA_OCI_MANIFEST),
                 ("Accept", h.MEDIA_OCI_INDEX)]
        resp = h.http_request(self.regpin.host, "GET", "/v2/team/accept/manifests/v1", lines)
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(h.sha256_digest(resp.body), self.image.digest)
        (at_upstream,) = self.fake.recorded("GET", r"/v2/team/accept/manifests/v1")
        values = at_upstream.header_values("Accept")
        self.assertEqual(len(values), 1, f"Accept lines at the upstream: {values}")
        self.assertEqual({t.strip() for t in values[0].split(",")}, set(OCI_TYPES))

    def test_a_clients_authorization_and_cookie_headers_do_not_reach_the_upstream(self):
        resp = self.regpin.get("/v2/team/creds/manifests/v1", {
            "Accept": h.ACCEPT_ALL_MANIFESTS,
            "Authorization": "Bearer client-token",
            "Cookie": "session=client",
        })
        self.assertEqual(resp.status, 200, resp.body[:300])
        (at_upstream,) = self.fake.recorded("GET", r"/v2/team/creds/manifests/v1")
        self.assertEqual(at_upstream.header_values("Authorization"), [])
        self.assertEqual(at_upstream.header_values("Cookie"), [])


if __name__ == "__main__":
    unittest.main()
