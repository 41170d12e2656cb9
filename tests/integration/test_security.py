"""The threat model's promises about outbound connections, credentials and secrets (issue 5,
SECURITY.md).

- Closed world: an unknown `ns` or registry path prefix opens no outbound connection, whatever
  host it names (counted on SilentServers: the only upstream's address and an "attacker" host).
- A client's credentials never reach an upstream or its token server: Authorization, Cookie,
  Proxy-Authorization and X-Registry-Auth, on every kind of request (recording fakes; a real
  docker-registry with token auth and the harness's TokenServer).
- Secrets never appear in regpin's log or in any answer: an upstream password (Basic), a token
  server password, the bearer tokens regpin obtains, admin tokens (from a file and from the
  environment), a webhook secret and the webhook URL's path, after a mix of successful pulls,
  failing upstream auth, admin calls and CLI runs with right and wrong tokens, and a webhook
  delivery that is refused once and then accepted. regpin runs at log level `trace`, the most
  it can say.

Covered elsewhere, not repeated: credentials across a redirect to another host and a client's
Authorization/Cookie on a manifest GET (test_upstream_client), admin calls without a token
(test_pin_lifecycle).

    REGPIN_BIN=../../build/regpin python3 -m unittest -v test_security
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
import threading
import unittest
from pathlib import Path
from typing import Optional

import harness as h
from test_pin_lifecycle import WebhookReceiver
from test_pull_through import RegpinTestCase

MEDIA = h.MEDIA_OCI_MANIFEST
CONFIG_BLOB = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(label: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": MEDIA,
                       "config": {"mediaType": h.MEDIA_OCI_CONFIG, "digest": digest_of(CONFIG_BLOB),
                                  "size": len(CONFIG_BLOB)},
                       "layers": [], "annotations": {"label": label}}, sort_keys=True).encode()


class RegistryFake:
    """A ScriptedHTTPServer playing a registry that wants Basic `user:password` (None: anonymous):
    tags and digests of `manifests` (tag -> bytes, mutable), CONFIG_BLOB and `blobs`, a tag list
    and an empty referrers index. Anything without the right credentials gets 401."""

    def __init__(self, user: Optional[str], password: Optional[str]):
        self.auth = h.basic_auth(user, password) if user else None
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[str, bytes] = {digest_of(CONFIG_BLOB): CONFIG_BLOB}
        self.lock = threading.Lock()
        self.server = h.ScriptedHTTPServer(self.handle).start()

    @property
    def url(self) -> str:
        return self.server.url

    def handle(self, req: h.RecordedRequest) -> h.Reply:
        if self.auth and req.header("Authorization") != self.auth:
            return h.Reply(401, {"WWW-Authenticate": 'Basic realm="fake"', "Content-Type": "application/json"},
                           b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
        if req.path == "/v2/":
            return h.Reply(200, {"Content-Type": "application/json"}, b"{}")
        m = re.fullmatch(r"/v2/(?P<repo>.+)/(?P<kind>manifests|blobs|referrers|tags)/(?P<ref>[^/]+)", req.path)
        if not m:
            return h.Reply(404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"NOT_FOUND"}]}')
        kind, ref = m["kind"], m["ref"]
        with self.lock:
            by_digest = {digest_of(b): b for b in self.manifests.values()}
            if kind == "manifests":
                body = self.manifests.get(ref) or by_digest.get(ref)
                if body is not None:
                    return h.Reply(200, {"Content-Type": MEDIA, "Docker-Content-Digest": digest_of(body)}, body)
            elif kind == "blobs" and ref in self.blobs:
                return h.Reply(200, {"Content-Type": "application/octet-stream"}, self.blobs[ref])
            elif kind == "tags":
                return h.Reply(200, {"Content-Type": "application/json"},
                               json.dumps({"name": m["repo"], "tags": sorted(self.manifests)}).encode())
            elif kind == "referrers":
                return h.Reply(200, {"Content-Type": h.MEDIA_OCI_INDEX},
                               json.dumps({"schemaVersion": 2, "mediaType": h.MEDIA_OCI_INDEX,
                                           "manifests": []}).encode())
        return h.Reply(404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"NOT_FOUND"}]}')

    def close(self) -> None:
        self.server.close()


# ------------------------------------------------------------------------------------------------
# Closed world
# ------------------------------------------------------------------------------------------------


class ClosedWorldTest(RegpinTestCase):
    def test_unknown_ns_or_registry_prefix_opens_no_connection_to_any_host(self):
        upstream = h.SilentServer(h.free_port())  # the only upstream: hangs if ever asked
        self.addCleanup(upstream.close)
        attacker = h.SilentServer(h.free_port())  # a host a client names
        self.addCleanup(attacker.close)
        self.regpin = regpin = h.Regpin([h.Upstream("known.test", f"http://127.0.0.1:{upstream.port}",
                                                    connect_timeout_ms=1000, read_timeout_ms=1000)])
        self.addCleanup(regpin.close)
        regpin.start()

        names = [
            "unknown.example", f"127.0.0.1:{attacker.port}", f"localhost:{attacker.port}",
            f"127.0.0.1:{upstream.port}",  # the upstream's address is not a registry name
            "known.test.evil.example", "evil.example:443", "known.test:443", "[::1]:5000",
        ]
        digest = "sha256:" + "ab" * 32
        paths = ["/v2/team/app/manifests/v1", f"/v2/team/app/manifests/{digest}", f"/v2/team/app/blobs/{digest}",
                 "/v2/team/app/tags/list", f"/v2/team/app/referrers/{digest}"]
        for name in names:
            for path in paths:
                for method in ("GET", "HEAD"):
                    with self.subTest(via="ns", name=name, path=path, method=method):
                        resp = regpin.request(method, h.with_query(path, ns=name), timeout=10)
                        self.assertEqual(resp.status, 404, resp.body[:300])
                        if method == "GET":
                            self.assertIn("NAME_UNKNOWN", resp.error_codes(), resp.body[:300])
                    if name.startswith("["):
                        continue  # not a valid path component
                    with self.subTest(via="prefix", name=name, path=path, method=method):
                        resp = regpin.request(method, path.replace("/v2/", f"/v2/{name}/", 1), timeout=10)
                        self.assertEqual(resp.status, 404, resp.body[:300])
        self.assertEqual(upstream.connections_before_barrier(), 0, "an unknown name reached the upstream")
        self.assertEqual(attacker.connections_before_barrier(), 0, "regpin connected to a host a client named")

        # Control: the counter works. A known name does reach the (hung) upstream.
        resp = regpin.get(h.with_query("/v2/team/app/manifests/v1", ns="known.test"), timeout=15)
        self.assertEqual(resp.status, 503, resp.body[:300])
        self.assertGreaterEqual(upstream.connections_before_barrier(), 1)


# ------------------------------------------------------------------------------------------------
# A client's credentials stay with the client
# ------------------------------------------------------------------------------------------------

CLIENT_SECRETS = {
    "Authorization": "Bearer client-bearer-Qm4Rz8Wd2Lx",
    "Cookie": "session=client-cookie-Pv7Hs3Ne9Ja",
    "Proxy-Authorization": "Basic " + base64.b64encode(b"proxyuser:client-proxy-Tc5Yb1Uo6Ki").decode(),
    "X-Registry-Auth": "client-xregauth-Gf2Mn8Dq4Zr",
}


class ClientCredentialsTest(RegpinTestCase):
    USER, PASSWORD = "regpin-bot", "regpin-own-pw-Lk3Jh7Fg1Ds"

    def assert_no_client_secret(self, requests: list[h.RecordedRequest], allowed_auth: set[Optional[str]], where: str):
        self.assertTrue(requests, f"nothing reached {where}")
        for r in requests:
            for name, value in r.headers:
                for secret in CLIENT_SECRETS.values():
                    self.assertNotIn(secret.split(" ", 1)[-1].split("=", 1)[-1], value,
                                     f"{where} got the client's {name}: {r.method} {r.path}")
            self.assertIn(r.header("Authorization"), allowed_auth, f"{where}: {r.method} {r.path}")
            for name in ("Cookie", "Proxy-Authorization", "X-Registry-Auth"):
                self.assertEqual(r.header_values(name), [], f"{where} got a {name}: {r.method} {r.path}")

    def test_client_credentials_reach_no_basic_auth_upstream_on_any_kind_of_request(self):
        fake = RegistryFake(self.USER, self.PASSWORD)
        self.addCleanup(fake.close)
        body = manifest_bytes("creds")
        fake.manifests["v1"] = body
        layer = os.urandom(4096)
        fake.blobs[digest_of(layer)] = layer
        self.regpin = regpin = h.Regpin([h.Upstream("basic.test", fake.url, username=self.USER, password=self.PASSWORD)])
        self.addCleanup(regpin.close)
        regpin.start()
        headers = {"Accept": MEDIA, **CLIENT_SECRETS}
        for method, path in [("HEAD", "/v2/team/app/manifests/v1"), ("GET", "/v2/team/app/manifests/v1"),
                             ("GET", f"/v2/team/other/manifests/{digest_of(body)}"),
                             ("HEAD", f"/v2/team/app/blobs/{digest_of(layer)}"),
                             ("GET", f"/v2/team/app/blobs/{digest_of(layer)}"),
                             ("GET", f"/v2/team/app/blobs/{digest_of(CONFIG_BLOB)}"),
                             ("GET", "/v2/team/app/tags/list"),
                             ("GET", f"/v2/team/app/referrers/{digest_of(body)}")]:
            with self.subTest(method=method, path=path):
                resp = regpin.request(method, path, headers)
                self.assertEqual(resp.status, 200, resp.body[:300])
        self.assert_no_client_secret(fake.server.recorded(), {None, h.basic_auth(self.USER, self.PASSWORD)},
                                     "the upstream")

    def test_client_credentials_reach_neither_a_token_upstream_nor_its_token_server(self):
        tokens = h.TokenServer([h.Grant(r"team/.*", ("pull",), "regpin-bot"), h.Grant(r"team/.*", ("pull", "push"), "pusher")],
                               users={"regpin-bot": self.PASSWORD, "pusher": "pusher-pw"}).start()
        self.addCleanup(tokens.close)
        registry = h.Registry("security-token", token_auth=tokens, credentials=("pusher", "pusher-pw")).start()
        self.addCleanup(registry.close)
        layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        self.addCleanup(h.remove_temp_dir, str(layout.path))
        image = h.make_image(layout, "app", seed="security-token-app")
        h.push(layout, "team/app:v1", registry, source_tag="app")
        before = len(tokens._http.recorded())
        self.regpin = regpin = h.Regpin([h.Upstream.of(registry.host, registry, username="regpin-bot",
                                                       password=self.PASSWORD)])
        self.addCleanup(regpin.close)
        regpin.start()
        headers = {"Accept": h.ACCEPT_ALL_MANIFESTS, **CLIENT_SECRETS}
        resp = regpin.get("/v2/team/app/manifests/v1", headers)
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, image.digest))
        for d in image.layer_digests:
            resp = regpin.get(f"/v2/team/app/blobs/{d}", headers)
            self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, d))
        self.assert_no_client_secret(tokens._http.recorded()[before:], {h.basic_auth("regpin-bot", self.PASSWORD)},
                                     "the token server")


# ------------------------------------------------------------------------------------------------
# Secrets stay out of logs and answers
# ------------------------------------------------------------------------------------------------


class SecretsTest(RegpinTestCase):
    UPSTREAM_USER = "secret-test-bot"
    UPSTREAM_PW = "upstream-pw-Zq8XK1vT9sWp"  # good.test, from a password_file
    WRONG_PW = "wrong-upstream-pw-Mb5Qe8Wr3Ty"  # bad.test: the upstream refuses it (password_env)
    TOKEN_PW = "token-server-pw-Ca6Vn2Hx8Ej"  # token.test, inline `password`
    ADMIN_TOKEN = "admin-token-Rk3Lw7PzQ2mN5bV8"  # token_file
    ADMIN_TOKEN_ENV = "admin-env-token-Ws9Kd4Jf6Gh1"  # token_env
    NEAR_MISS = ADMIN_TOKEN[:-3] + "xyz"  # a wrong token that is almost the right one
    WEBHOOK_SECRET = "webhook-secret-Hj4Tn6Yc1XeQ"
    WEBHOOK_PATH_SECRET = "path-secret-Uv9Gd2Sa7FkLm"

    def setUp(self):
        self.dir = h.make_temp_dir("secrets")
        self.addCleanup(h.remove_temp_dir, self.dir)
        self.good = RegistryFake(self.UPSTREAM_USER, self.UPSTREAM_PW)
        self.addCleanup(self.good.close)
        self.bad = RegistryFake(self.UPSTREAM_USER, "the-right-password-nobody-has")
        self.addCleanup(self.bad.close)
        self.tokens = h.TokenServer([h.Grant(r"team/.*", ("pull",), "token-bot"),
                                     h.Grant(r"team/.*", ("pull", "push"), "pusher")],
                                    users={"token-bot": self.TOKEN_PW, "pusher": "pusher-pw"}).start()
        self.addCleanup(self.tokens.close)
        # Keep every token the token server issues: the bearer tokens are secrets too.
        self.issued: list[tuple[Optional[str], str]] = []
        self.issued_lock = threading.Lock()
        answer = self.tokens._http.handler

        def recording(req: h.RecordedRequest) -> h.Reply:
            reply = answer(req)
            if reply.status == 200:
                user = (h.parse_basic_auth(req.header("Authorization")) or (None, None))[0]
                with self.issued_lock:
                    self.issued.append((user, json.loads(reply.body)["token"]))
            return reply

        self.tokens._http.handler = recording
        self.token_registry = h.Registry("secrets-token", token_auth=self.tokens,
                                         credentials=("pusher", "pusher-pw")).start()
        self.addCleanup(self.token_registry.close)
        layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        self.addCleanup(h.remove_temp_dir, str(layout.path))
        self.token_image = h.make_image(layout, "app", seed="secrets-token-app")
        h.push(layout, "team/app:v1", self.token_registry, source_tag="app")

        self.receiver = WebhookReceiver(statuses=(500, 200)).start()
        self.addCleanup(self.receiver.stop)
        self.webhook_url = f"http://127.0.0.1:{self.receiver.port}/hooks/{self.WEBHOOK_PATH_SECRET}"
        pw_file = os.path.join(self.dir, "upstream-password")
        Path(pw_file).write_text(self.UPSTREAM_PW + "\n")
        secret_file = os.path.join(self.dir, "webhook-secret")
        Path(secret_file).write_text(self.WEBHOOK_SECRET + "\n")
        self.regpin = h.Regpin(
            [h.Upstream("good.test", self.good.url, username=self.UPSTREAM_USER, password_file=pw_file),
             h.Upstream("bad.test", self.bad.url, username=self.UPSTREAM_USER, password_env="REGPIN_IT_BAD_PW"),
             h.Upstream.of(self.token_registry.host, self.token_registry, username="token-bot", password=self.TOKEN_PW)],
            log_level="trace",
            env={"REGPIN_IT_BAD_PW": self.WRONG_PW},
            admin_tokens=[h.AdminToken("ops", self.ADMIN_TOKEN, "token_file"),
                          h.AdminToken("env", self.ADMIN_TOKEN_ENV, "token_env")],
            webhooks=[h.Webhook(self.webhook_url, secret_file=secret_file, timeout_ms=2000)],
            pin_checks=h.PinChecks(revalidate_after_s=3600, sweep_interval_s=86400, sweep_batch=0),
        )
        self.addCleanup(self.regpin.stop)
        self.addClassCleanup(h.remove_temp_dir, self.regpin.dir)  # after the failure report
        self.regpin.start()
        self.seen: list[bytes] = []  # every answer: status line, headers and body

    def keep(self, resp: h.Response) -> h.Response:
        self.seen.append(f"{resp.status} {resp.reason}\n{resp.headers}".encode() + resp.body)
        return resp

    def secrets(self) -> dict[str, str]:
        out = {
            "upstream password": self.UPSTREAM_PW,
            "upstream Basic credentials": base64.b64encode(f"{self.UPSTREAM_USER}:{self.UPSTREAM_PW}".encode()).decode(),
            "wrong upstream password": self.WRONG_PW,
            "its Basic credentials": base64.b64encode(f"{self.UPSTREAM_USER}:{self.WRONG_PW}".encode()).decode(),
            "token server password": self.TOKEN_PW,
            "token server Basic credentials": base64.b64encode(f"token-bot:{self.TOKEN_PW}".encode()).decode(),
            "admin token (file)": self.ADMIN_TOKEN,
            "admin token (env)": self.ADMIN_TOKEN_ENV,
            "near-miss admin token": self.NEAR_MISS,
            "webhook secret": self.WEBHOOK_SECRET,
            "webhook URL path": self.WEBHOOK_PATH_SECRET,
        }
        return out

    def test_secrets_appear_in_no_log_line_and_no_answer(self):
        accept = {"Accept": MEDIA}
        first = manifest_bytes("secrets-v1")
        self.good.manifests["v1"] = first
        # Successful pulls: Basic upstream, token upstream.
        resp = self.keep(self.regpin.get(h.with_query("/v2/team/app/manifests/v1", ns="good.test"), accept))
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, digest_of(first)))
        self.keep(self.regpin.get(h.with_query(f"/v2/team/app/blobs/{digest_of(CONFIG_BLOB)}", ns="good.test")))
        self.keep(self.regpin.get(h.with_query("/v2/team/app/tags/list", ns="good.test")))
        resp = self.keep(self.regpin.get(f"/v2/{self.token_registry.host}/team/app/manifests/v1",
                                         {"Accept": h.ACCEPT_ALL_MANIFESTS}))
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, self.token_image.digest))
        for d in self.token_image.layer_digests:
            resp = self.keep(self.regpin.get(f"/v2/{self.token_registry.host}/team/app/blobs/{d}"))
            self.assertEqual(resp.status, 200)
        # Failing upstream auth: wrong Basic password; a token server refusing the scope.
        for path in ("/v2/team/app/manifests/v1", f"/v2/team/app/blobs/sha256:{'cd' * 32}",
                     "/v2/team/app/tags/list"):
            resp = self.keep(self.regpin.get(h.with_query(path, ns="bad.test"), accept))
            self.assertGreaterEqual(resp.status, 400, resp.body[:300])
        resp = self.keep(self.regpin.get(f"/v2/{self.token_registry.host}/forbidden/app/manifests/v1", accept))
        self.assertGreaterEqual(resp.status, 400)

        # Admin calls with the right tokens, a near miss, a wrong scheme, none.
        for token in (self.ADMIN_TOKEN, self.ADMIN_TOKEN_ENV):
            resp = self.keep(self.regpin.admin_request("GET", "/api/v1/pins", token=token))
            self.assertEqual(resp.status, 200, resp.body[:300])
        for headers in ({"Authorization": f"Bearer {self.NEAR_MISS}"},
                        {"Authorization": h.basic_auth("ops", self.NEAR_MISS)},
                        {"Authorization": f"Token {self.NEAR_MISS}"}):
            resp = self.keep(self.regpin.admin_request("GET", "/api/v1/pins", token=None, headers=headers))
            self.assertEqual(resp.status, 401)
            resp = self.keep(self.regpin.admin_request("POST", "/api/v1/pin/unpin", {"registry": "good.test",
                             "repository": "team/app", "tag": "v1"}, token=None, headers=headers))
            self.assertEqual(resp.status, 401)
        cli_outputs = []
        for token in (self.ADMIN_TOKEN, self.NEAR_MISS):
            for args in (("pins", "list"), ("pins", "show", "good.test/team/app:v1"), ("events",)):
                result = self.regpin.cli(*args, token=token)
                cli_outputs.append(result.stdout + result.stderr)
        self.assertTrue(self.regpin.cli("pins", "list", token=self.NEAR_MISS).returncode != 0)

        # A re-point, checked by hand: the webhook is refused once (500), then accepted.
        second = manifest_bytes("secrets-v2")
        self.good.manifests["v1"] = second
        resp = self.keep(self.regpin.admin_request("POST", "/api/v1/pin/check",
                                                   {"registry": "good.test", "repository": "team/app", "tag": "v1"},
                                                   token=self.ADMIN_TOKEN))
        self.assertEqual(resp.status, 200, resp.body[:300])
        (result,) = resp.json()["results"]
        self.assertEqual(result["outcome"], "repointed", result)
        event_id = result["events"][0]["id"]
        h.wait_until(lambda: self.receiver.accepted(event_id), timeout=20, interval=0.05,
                     message="the webhook delivery after one refusal")
        self.assertEqual([d.status for d in self.receiver.deliveries(event_id)], [500, 200])
        self.assertEqual(self.receiver.deliveries(event_id)[0].path, f"/hooks/{self.WEBHOOK_PATH_SECRET}")
        for path in ("/api/v1/events?after=0", "/api/v1/pins",
                     "/api/v1/pin?registry=good.test&repository=team/app&tag=v1"):
            self.keep(self.regpin.admin_request("GET", path, token=self.ADMIN_TOKEN))
        self.seen.append(self.regpin.metrics_text().encode())

        # The bearer tokens regpin got from the token server are secrets too.
        bearer_signatures = [d.rsplit(".", 1)[1] for d in self.regpin_bearer_tokens()]
        self.assertTrue(bearer_signatures, "regpin never obtained a bearer token: the token flow did not run")

        self.regpin.stop()  # everything flushed
        log = Path(self.regpin.log_path).read_text(errors="replace")
        self.assertIn("alert", log)  # the log is the right one, and verbose
        everything = {"regpin's log": log, "the answers": b"\n".join(self.seen).decode("latin-1"),
                      "the CLI's output": "\n".join(cli_outputs)}
        secrets = self.secrets()
        for i, sig in enumerate(bearer_signatures):
            secrets[f"upstream bearer token {i}"] = sig
        leaks = [f"{what} in {where}" for what, value in secrets.items()
                 for where, text in everything.items() if value in text]
        self.assertEqual(leaks, [], "secrets leaked")

    def regpin_bearer_tokens(self) -> list[str]:
        """The JWTs the token server issued to regpin (not to the harness's own pushes)."""
        with self.issued_lock:
            return [token for user, token in self.issued if user == "token-bot"]


if __name__ == "__main__":
    unittest.main()
