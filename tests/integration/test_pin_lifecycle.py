"""The pin lifecycle after the first pull, end to end (issue 3): re-points detected against a real
docker-registry, the three policies as a real containerd sees them, the admin API and CLI, the
webhook alerts (signed, durable across restarts, recorded once), the metrics, and the admin
API's tokens.

The upstream tag is re-pushed with other content (skopeo), then a check is forced
(`POST /api/v1/pin/check`), or, in BackgroundCheckTest and SweepTest, left to regpin. Each test
uses its own repository, so the tests of a class share servers without depending on each
other's order. Run one class with, e.g.:

    REGPIN_BIN=../../build/regpin python3 -m unittest -v test_pin_lifecycle.RepointPolicyTest

`promtool` (Debian package `prometheus`) must be installed: MetricsExpositionTest fails, rather
than skips, without it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest
import urllib.parse
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import harness as h

WEBHOOK_PATH = "/hooks/regpin"
ALERT_FIELDS = {
    "id", "type", "registry", "repository", "tag", "reference", "pinned_digest", "upstream_digest",
    "policy", "action", "detected_at", "source", "summary",
}
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# Far enough that no background check or sweep runs during a test that forces its checks.
NO_BACKGROUND_CHECKS = h.PinChecks(revalidate_after_s=3600, sweep_interval_s=86400)


# ------------------------------------------------------------------------------------------------
# A webhook receiver
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One POST the receiver got: path, headers (lower-case names), raw body, and the status it
    answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    time: float

    @property
    def event_id(self) -> Optional[str]:
        return self.headers.get("x-regpin-event-id")

    def alert(self) -> dict:
        return json.loads(self.body.decode("utf-8"))


class WebhookReceiver:
    """A threaded HTTP server on 127.0.0.1:`port` (default: a kernel port) recording every
    request with its raw body. It answers `statuses` in turn (the last one from then on),
    200 by default. stop() closes the port (connections are then refused) and start() opens
    the same port again, keeping what was recorded."""

    def __init__(self, port: Optional[int] = None, statuses: tuple[int, ...] = (200,)):
        self.port = port or h.free_port()
        self.statuses = list(statuses)
        self.location: Optional[str] = None  # sent with 3xx answers
        self._deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def start(self) -> "WebhookReceiver":
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with outer._lock:
                    status = outer.statuses.pop(0) if len(outer.statuses) > 1 else outer.statuses[0]
                    outer._deliveries.append(Delivery(
                        urllib.parse.urlsplit(self.path).path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body, status, time.monotonic()))
                reply = b'{"ok":true}' if 200 <= status < 300 else b'{"ok":false}'
                self.send_response(status)
                if 300 <= status < 400 and outer.location:
                    self.send_header("Location", outer.location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_PUT = do_POST

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def deliveries(self, event_id: Optional[int] = None, reference: Optional[str] = None) -> list[Delivery]:
        with self._lock:
            out = list(self._deliveries)
        if event_id is not None:
            out = [d for d in out if d.event_id == str(event_id)]
        if reference is not None:
            out = [d for d in out if _alert_or_empty(d).get("reference") == reference]
        return out

    def accepted(self, event_id: Optional[int] = None, reference: Optional[str] = None) -> list[Delivery]:
        """Deliveries answered with a 2xx."""
        return [d for d in self.deliveries(event_id, reference) if 200 <= d.status < 300]


def _alert_or_empty(d: Delivery) -> dict:
    try:
        doc = d.alert()
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        return {}


# ------------------------------------------------------------------------------------------------
# Base class
# ------------------------------------------------------------------------------------------------


class PinLifecycleTestCase(h.LogsOnFailure):
    """Helpers over one regpin (`self.regpin`) and one upstream (`self.upstream`). Prints the tail
    of regpin's log and what the webhook receiver got when a test fails."""

    regpin: Optional[h.Regpin] = None
    upstream: Optional[h.Registry] = None
    receiver: Optional[WebhookReceiver] = None
    secret: str = ""

    def failure_report(self):
        report = super().failure_report()
        receiver = getattr(self, "receiver", None)
        if receiver is not None:
            got = [(d.status, d.event_id, d.body[:200]) for d in receiver.deliveries()]
            report.append(("webhook receiver got", repr(got)))
        return report

    # -- fixtures -------------------------------------------------------------------------------

    @classmethod
    def new_layout(cls, cleanup) -> h.OciLayout:
        layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        cleanup(h.remove_temp_dir, str(layout.path))
        return layout

    @classmethod
    def start_class_servers(cls, name: str, regpin_settings: Callable[[str], dict]) -> None:
        """For the class: a docker-registry `name` (cls.upstream), an OCI layout, a webhook
        receiver signing with cls.SECRET, a regpin in front of the upstream with those webhooks
        and `regpin_settings(upstream host)` (tokens, policies, ...), and a containerd whose only
        endpoint is that regpin."""
        cls.upstream = h.Registry(name).start()
        cls.addClassCleanup(cls.upstream.close)
        cls.layout = cls.new_layout(cls.addClassCleanup)
        cls.secret = cls.SECRET
        cls.receiver = WebhookReceiver().start()
        cls.addClassCleanup(cls.receiver.stop)
        host = cls.upstream.host
        cls.regpin = h.Regpin([h.Upstream.of(host, cls.upstream)],
                              webhooks=[h.Webhook(cls.receiver.url, secret=cls.SECRET, timeout_ms=2000)],
                              **regpin_settings(host))
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()
        cls.containerd = h.Containerd().start()
        cls.addClassCleanup(cls.containerd.close)
        cls.containerd.mirror(host, cls.regpin.url)

    # -- the registry API -----------------------------------------------------------------------

    def ref(self, repo: str, tag: str = "v1") -> str:
        return f"{self.upstream.host}/{repo}:{tag}"

    def manifest_via_regpin(self, repo: str, reference: str, method: str = "GET") -> h.Response:
        return self.regpin.request(method, h.with_query(f"/v2/{repo}/manifests/{reference}", ns=self.upstream.host),
                                   {"Accept": h.ACCEPT_ALL_MANIFESTS})

    def served_digest(self, repo: str, tag: str = "v1") -> str:
        """GET the tag through regpin as containerd would (its Accept, `ns`); the digest served,
        checked against the body's sha256."""
        resp = self.manifest_via_regpin(repo, tag)
        self.assertEqual(resp.status, 200, f"GET {repo}:{tag} via regpin: {resp.body[:300]!r}")
        digest = h.sha256_digest(resp.body)
        self.assertEqual(resp.header("Docker-Content-Digest"), digest, "Docker-Content-Digest != sha256(body)")
        return digest

    # -- images and containerd (self.layout, self.containerd: set by the class) -----------------

    def image(self, name: str, **kwargs: Any) -> h.Image:
        return h.make_image(self.layout, name, **kwargs)

    def push(self, image: h.Image, repo: str, tag: str = "v1") -> None:
        h.push(self.layout, f"{repo}:{tag}", self.upstream, source_tag=image.tag)
        self.assertEqual(self.upstream.manifest_digest(repo, tag), image.digest, "the upstream tag after the push")

    def ctr_pull(self, repo: str, tag: str = "v1", check: bool = True) -> Optional[str]:
        """A fresh `ctr images pull` through regpin (nothing cached in containerd); the digest
        containerd recorded for the reference, or None when the pull failed (check=False)."""
        self.containerd.forget_everything()
        ref = self.ref(repo, tag)
        result = self.containerd.pull(ref, check=check)
        self.last_pull = result
        if result.returncode != 0:
            self.assertIsNone(self.containerd.image_digest(ref))
            return None
        return self.containerd.image_digest(ref)

    def push_docker_list(self, repo: str, seed: str) -> tuple[str, str]:
        """An index converted by skopeo into a Docker manifest list with schema 2 children,
        pushed under repo:v1; (the list's digest, the linux/amd64 child's), as the upstream
        answers containerd and a client that accepts only Docker schema 2 manifests."""
        self.image(seed, seed=seed, platforms=("linux/amd64", "linux/arm64"))
        h.default_skopeo()("copy", "--all", "--format", "v2s2", "--dest-tls-verify=false", "--quiet",
                           f"oci:{self.layout.path}:{seed}", f"docker://{self.upstream.host}/{repo}:v1")
        digests = []
        for accept in (h.ACCEPT_ALL_MANIFESTS, h.MEDIA_DOCKER_MANIFEST):
            resp = self.upstream.request("GET", f"/v2/{repo}/manifests/v1", {"Accept": accept})
            self.assertEqual(resp.status, 200, resp.body[:300])
            digests.append(resp.header("Docker-Content-Digest"))
        return digests[0], digests[1]

    def docker_only_digest(self, repo: str) -> str:
        resp = self.regpin.request("GET", h.with_query(f"/v2/{repo}/manifests/v1", ns=self.upstream.host),
                                   {"Accept": h.MEDIA_DOCKER_MANIFEST})
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(resp.header("Content-Type"), h.MEDIA_DOCKER_MANIFEST)
        return resp.header("Docker-Content-Digest")

    # -- the admin API ---------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, *, token: Optional[str] = "",
            expect: Optional[int] = 200) -> h.Response:
        resp = self.regpin.admin_request(method, path, body, token=token)
        if expect is not None:
            self.assertEqual(resp.status, expect, f"{method} {path} {body}: {resp.body[:600]!r}")
        return resp

    def target(self, repo: str, tag: str = "v1", **extra: str) -> dict:
        return {"registry": self.upstream.host, "repository": repo, "tag": tag, **extra}

    def check(self, repo: str, tag: str = "v1") -> dict:
        """POST /api/v1/pin/check; the one result (one accept class)."""
        doc = self.api("POST", "/api/v1/pin/check", self.target(repo, tag)).json()
        self.assertEqual(len(doc["results"]), 1, doc)
        return doc["results"][0]

    def pin_doc(self, repo: str, tag: str = "v1") -> dict:
        query = urllib.parse.urlencode(self.target(repo, tag))
        return self.api("GET", f"/api/v1/pin?{query}").json()

    def the_pin(self, repo: str, tag: str = "v1") -> dict:
        pins = self.pin_doc(repo, tag)["pins"]
        self.assertEqual(len(pins), 1, pins)
        return pins[0]

    def events(self, after: int = 0) -> list[dict]:
        return self.api("GET", f"/api/v1/events?after={after}&limit=10000").json()["events"]

    def last_event_id(self) -> int:
        return max([e["id"] for e in self.events()], default=0)

    def metrics(self) -> str:
        return self.regpin.metrics_text()

    def wait_queue_empty(self, timeout: float = 20) -> None:
        h.wait_until(lambda: h.metric_value(self.metrics(), "regpin_webhook_queue") == 0 and
                     "regpin_webhook_queue" in h.metric_types(self.metrics()),
                     timeout=timeout, interval=0.1, message="regpin_webhook_queue == 0")

    # -- assertions ------------------------------------------------------------------------------

    def assert_repoint_event(self, event: dict, repo: str, pinned: str, upstream: str, policy: str,
                             action: str, tag: str = "v1") -> None:
        self.assertEqual(
            {k: event[k] for k in ("type", "registry", "repository", "tag", "reference", "old_digest",
                                   "new_digest", "actor", "policy", "action")},
            {"type": "repointed", "registry": self.upstream.host, "repository": repo, "tag": tag,
             "reference": self.ref(repo, tag), "old_digest": pinned, "new_digest": upstream,
             "actor": "policy", "policy": policy, "action": action})
        self.assertRegex(event["time"], TIME_RE)
        summary = event["summary"]
        self.assertIsInstance(summary, dict, event)
        for key in ("text", "media_type", "platforms", "layers", "config"):
            self.assertIn(key, summary, f"summary lacks {key}: {summary}")
        self.assertIsInstance(summary["text"], str)
        self.assertTrue(summary["text"], "empty summary text")
        self.assertNotIn("\n", summary["text"], "summary text is not one line")

    def assert_history(self, history: list[dict], expected: list[tuple[str, str]]) -> None:
        """The history's (type, actor) pairs, in order."""
        self.assertEqual([(e["type"], e["actor"]) for e in history], expected, json.dumps(history, indent=1))

    def wait_alert(self, event_id: int, timeout: float = 15) -> Delivery:
        """The one accepted delivery of `event_id`, once it arrived."""
        h.wait_until(lambda: self.receiver.accepted(event_id), timeout=timeout, interval=0.05,
                     message=f"webhook delivery of event {event_id}")
        return self.receiver.accepted(event_id)[0]

    def assert_signed_alert(self, delivery: Delivery, event: dict, *, secret: Optional[str] = None) -> dict:
        """Checks a delivery against its event: path, event id header, HMAC-SHA256 signature of
        the raw body, and every alert field. Returns the alert."""
        secret = self.secret if secret is None else secret
        self.assertEqual(delivery.path, WEBHOOK_PATH)
        self.assertEqual(delivery.headers.get("x-regpin-event-id"), str(event["id"]))
        self.assertTrue((delivery.headers.get("content-type") or "").startswith("application/json"),
                        delivery.headers)
        expected = "sha256=" + hmac.new(secret.encode(), delivery.body, hashlib.sha256).hexdigest()
        signature = delivery.headers.get("x-regpin-signature-256") or ""
        self.assertTrue(hmac.compare_digest(signature, expected),
                        f"X-Regpin-Signature-256 {signature!r} != HMAC-SHA256 of the body {expected!r}")
        alert = delivery.alert()
        self.assertEqual(set(alert), ALERT_FIELDS, alert)
        self.assertEqual(
            {k: alert[k] for k in ALERT_FIELDS - {"detected_at", "summary"}},
            {"id": event["id"], "type": "repoint", "registry": event["registry"],
             "repository": event["repository"], "tag": event["tag"], "reference": event["reference"],
             "pinned_digest": event["old_digest"], "upstream_digest": event["new_digest"],
             "policy": event["policy"], "action": event["action"], "source": event["source"]})
        self.assertEqual(alert["detected_at"], event["time"])
        self.assertRegex(alert["detected_at"], TIME_RE)
        detected = datetime.strptime(alert["detected_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        self.assertLess(abs(detected.timestamp() - time.time()), 300, "detected_at is not about now")
        self.assertEqual(alert["summary"], event["summary"])
        return alert

    def assert_repoint_logged(self, event: dict) -> None:
        line = (f"re-point: {event['reference']} moved upstream from {event['old_digest']} to "
                f"{event['new_digest']}; policy {event['policy']}, action {event['action']}, "
                f"event {event['id']}, detected at {event['time']}; {event['summary']['text']}")
        pattern = re.compile(r"^\S+ (warn|warning) " + re.escape(line) + r"$", re.MULTILINE)
        h.wait_until(lambda: pattern.search(self.regpin.log()), timeout=5,
                     message=f"warning log line: {line}")


# ------------------------------------------------------------------------------------------------
# 1-3, 6. Policies as containerd sees them; alerts; recorded once; operator actions; tokens
# ------------------------------------------------------------------------------------------------


class RepointPolicyTest(PinLifecycleTestCase):
    """One upstream, one regpin (policies: follow/** follow, reject/** reject, everything else pin;
    no background checks), one containerd whose hosts.toml makes regpin the only endpoint, one
    signed webhook receiver. Admin tokens: ops (token), cli (token_file), env (token_env)."""

    OPS = "ops-token-0123456789abcdef"
    CLI = "cli-token-0123456789abcdef"
    ENV = "env-token-0123456789abcdef"
    SECRET = "webhook-secret-for-regpin-tests"

    @classmethod
    def setUpClass(cls):
        cls.start_class_servers("policy-upstream", lambda host: dict(
            admin_tokens=[h.AdminToken("ops", cls.OPS), h.AdminToken("cli", cls.CLI, "token_file"),
                          h.AdminToken("env", cls.ENV, "token_env")],
            policies=[h.PolicyRule(f"{host}/follow/**", "follow"),
                      h.PolicyRule(f"{host}/reject/**", "reject"),
                      h.PolicyRule(f"{host}/**", "pin")],
            pin_checks=h.PinChecks(revalidate_after_s=3600, concurrency=2, sweep_interval_s=86400, sweep_batch=10,
                                   ratelimit_low_water=0, ratelimit_pause_s=60),
        ))

    # -- helpers ----------------------------------------------------------------------------------

    def repoint(self, repo: str, first: h.Image, second: h.Image) -> dict:
        """first is pushed and pulled by containerd (pinned), second re-pushed under the same tag,
        then a check is forced: returns the recorded re-point event."""
        self.push(first, repo)
        self.assertEqual(self.ctr_pull(repo), first.digest, "containerd's first pull")
        self.push(second, repo)
        result = self.check(repo)
        self.assertEqual((result["outcome"], result["upstream_digest"]), ("repointed", second.digest), result)
        self.assertEqual([e["type"] for e in result["events"]], ["repointed"], result)
        return result["events"][0]

    def counters(self, policy: str) -> tuple[float, float, float]:
        text = self.metrics()
        host = self.upstream.host
        return (h.metric_value(text, "regpin_repoints_total", registry=host, policy=policy),
                h.metric_value(text, "regpin_pins_pending"),
                h.metric_value(text, "regpin_pin_checks_total", registry=host, outcome="repointed"))

    # -- 1. each policy ---------------------------------------------------------------------------

    def test_policy_pin_keeps_serving_the_first_digest_records_it_pending_and_alerts(self):
        repo = "pin/app"
        first = self.image("pin-first", seed="policy-pin-1", revision="pin-r1")
        second = self.image("pin-second", seed="policy-pin-2", revision="pin-r2")
        repoints, pending, checks = self.counters("pin")

        event = self.repoint(repo, first, second)

        # containerd still gets the pinned digest, content and all.
        self.assertEqual(self.ctr_pull(repo), first.digest, "containerd after the re-point (policy pin)")
        self.assertTrue(set(first.blobs) <= self.containerd.content_digests())
        # The pin and its history through the admin API.
        doc = self.pin_doc(repo)
        self.assertEqual(len(doc["pins"]), 1, doc)
        pin = doc["pins"][0]
        self.assertEqual((pin["state"], pin["digest"], pin["pending_digest"], pin["reference"]),
                         ("pending", first.digest, second.digest, self.ref(repo)))
        self.assertRegex(pin["pending_since"] or "", TIME_RE)
        self.assert_history(doc["history"], [("pinned", "first-pull"), ("repointed", "policy")])
        self.assertEqual(doc["history"][0]["new_digest"], first.digest)
        self.assert_repoint_event(doc["history"][1], repo, first.digest, second.digest, "pin", "kept")
        self.assertEqual(doc["history"][1], event)
        summary = event["summary"]
        self.assertEqual(summary["media_type"], {"pinned": h.MEDIA_OCI_MANIFEST, "upstream": h.MEDIA_OCI_MANIFEST,
                                                 "changed": False})
        self.assertIsNone(summary["platforms"], "two single manifests: no platforms")
        self.assertEqual(summary["config"]["revision"], {"pinned": "pin-r1", "upstream": "pin-r2"})
        self.assertEqual((summary["layers"]["shared"], summary["layers"]["total_pinned"],
                          summary["layers"]["total_upstream"]), (0, 1, 1))
        self.assertIn("pin-r1", summary["text"])
        self.assertIn("pin-r2", summary["text"])
        # The pin list filtered by state.
        listed = self.api("GET", f"/api/v1/pins?registry={self.upstream.host}&repository_prefix=pin/&state=pending").json()
        self.assertIn(self.ref(repo), [p["reference"] for p in listed["pins"]])
        self.assertTrue(all(p["state"] == "pending" for p in listed["pins"]), listed)
        # The same through the CLI.
        shown = self.regpin.cli("pins", "show", self.ref(repo), "--json", token=self.CLI)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertEqual(json.loads(shown.stdout), doc)
        listed_cli = self.regpin.cli("events", "--json", "--after", str(event["id"] - 1), token=self.CLI)
        self.assertEqual(listed_cli.returncode, 0, listed_cli.stderr)
        cli_events = [json.loads(line) for line in listed_cli.stdout.splitlines() if line.strip()]
        self.assertIn(event, cli_events)
        self.assertTrue(all(e["id"] > event["id"] - 1 for e in cli_events))
        # Events since the re-point's time: it is there, nothing older is.
        since = self.api("GET", "/api/v1/events?" + urllib.parse.urlencode({"since": event["time"]})).json()["events"]
        self.assertIn(event, since)
        self.assertTrue(all(e["time"] >= event["time"] for e in since), since)
        if doc["history"][0]["time"] < event["time"]:
            self.assertNotIn(doc["history"][0]["id"], [e["id"] for e in since])
        # The alert, the log line, the metrics.
        self.assertEqual(self.assert_signed_alert(self.wait_alert(event["id"]), event)["action"], "kept")
        self.assert_repoint_logged(event)
        self.assertEqual(self.counters("pin"), (repoints + 1, pending + 1, checks + 1))

    def test_policy_follow_moves_the_pin_so_containerd_gets_the_new_digest_and_alerts(self):
        repo = "follow/app"
        # The same seed keeps the linux/amd64 and linux/arm64 layers; the revision label changes
        # both configs; the new index adds linux/arm/v7.
        first = self.image("follow-first", seed="policy-follow", platforms=("linux/amd64", "linux/arm64"),
                           revision="follow-r1")
        second = self.image("follow-second", seed="policy-follow",
                            platforms=("linux/amd64", "linux/arm64", "linux/arm/v7"), revision="follow-r2")
        self.assertEqual(set(first.layer_digests) & set(second.layer_digests), set(first.layer_digests))
        repoints, pending, checks = self.counters("follow")

        event = self.repoint(repo, first, second)

        self.assertEqual(self.ctr_pull(repo), second.digest, "containerd after the re-point (policy follow)")
        self.assertEqual(self.served_digest(repo), second.digest)
        doc = self.pin_doc(repo)
        pin = doc["pins"][0]
        self.assertEqual((len(doc["pins"]), pin["state"], pin["digest"], pin["pending_digest"]),
                         (1, "pinned", second.digest, None))
        self.assertEqual(pin["media_type"], h.MEDIA_OCI_INDEX)
        self.assert_history(doc["history"], [("pinned", "first-pull"), ("repointed", "policy")])
        self.assert_repoint_event(doc["history"][1], repo, first.digest, second.digest, "follow", "followed")
        summary = event["summary"]
        self.assertEqual(summary["media_type"], {"pinned": h.MEDIA_OCI_INDEX, "upstream": h.MEDIA_OCI_INDEX,
                                                 "changed": False})
        self.assertEqual(summary["platforms"]["added"], ["linux/arm/v7"], summary)
        self.assertEqual(summary["platforms"]["removed"], [], summary)
        self.assertEqual(summary["platforms"]["changed"], ["linux/amd64", "linux/arm64"], summary)
        self.assertEqual(summary["layers"], {"platform": "linux/amd64", "shared": 1, "total_pinned": 1,
                                             "total_upstream": 1})
        self.assertEqual(summary["config"]["revision"], {"pinned": "follow-r1", "upstream": "follow-r2"})
        self.assertIn("linux/arm/v7", summary["text"])
        self.assertEqual(self.assert_signed_alert(self.wait_alert(event["id"]), event)["action"], "followed")
        self.assert_repoint_logged(event)
        self.assertEqual(self.counters("follow"), (repoints + 1, pending, checks + 1))

    def test_policy_reject_fails_containerd_pulls_with_403_denied_until_approved_and_alerts(self):
        repo = "reject/app"
        first = self.image("reject-first", seed="policy-reject", revision="reject-r1")
        second = self.image("reject-second", seed="policy-reject", platforms=("linux/amd64", "linux/arm64"),
                            revision="reject-r2")
        repoints, pending, checks = self.counters("reject")

        event = self.repoint(repo, first, second)

        self.assertIsNone(self.ctr_pull(repo, check=False), "containerd must not get the rejected tag")
        self.assertIn("403", self.last_pull.stdout + self.last_pull.stderr)
        for method in ("GET", "HEAD"):
            resp = self.manifest_via_regpin(repo, "v1", method)
            self.assertEqual(resp.status, 403, f"{method} of the rejected tag: {resp.body[:300]!r}")
        resp = self.manifest_via_regpin(repo, "v1")
        errors = resp.json()["errors"]
        self.assertEqual([e["code"] for e in errors], ["DENIED"], errors)
        self.assertEqual(errors[0]["detail"], {"tag": self.ref(repo), "pinned": first.digest,
                                               "upstream": second.digest})
        # Content by digest stays servable.
        self.assertEqual(self.served_digest(repo, first.digest), first.digest)
        blob = self.regpin.get(h.with_query(f"/v2/{repo}/blobs/{first.layer_digests[0]}", ns=self.upstream.host))
        self.assertEqual((blob.status, h.sha256_digest(blob.body)), (200, first.layer_digests[0]))
        doc = self.pin_doc(repo)
        pin = doc["pins"][0]
        self.assertEqual((len(doc["pins"]), pin["state"], pin["digest"], pin["pending_digest"]),
                         (1, "rejected", first.digest, second.digest))
        self.assert_history(doc["history"], [("pinned", "first-pull"), ("repointed", "policy")])
        self.assert_repoint_event(doc["history"][1], repo, first.digest, second.digest, "reject", "rejected")
        listed = self.api("GET", f"/api/v1/pins?registry={self.upstream.host}&state=rejected").json()
        self.assertIn(self.ref(repo), [p["reference"] for p in listed["pins"]])
        summary = event["summary"]
        self.assertEqual(summary["media_type"], {"pinned": h.MEDIA_OCI_MANIFEST, "upstream": h.MEDIA_OCI_INDEX,
                                                 "changed": True})
        self.assertEqual((summary["platforms"]["added"], summary["platforms"]["removed"]), (["linux/arm64"], []))
        self.assertEqual(self.assert_signed_alert(self.wait_alert(event["id"]), event)["action"], "rejected")
        self.assert_repoint_logged(event)
        self.assertEqual(self.counters("reject"), (repoints + 1, pending + 1, checks + 1))

        # Approving the pending digest lets containerd pull it.
        approved = self.api("POST", "/api/v1/pin/approve", self.target(repo)).json()["events"]
        self.assertEqual([(e["type"], e["actor"], e["old_digest"], e["new_digest"]) for e in approved],
                         [("approved", "token:ops", first.digest, second.digest)])
        self.assertEqual(self.ctr_pull(repo), second.digest, "containerd after the approval")
        self.assertEqual(self.counters("reject")[1], pending)

    # -- 2. recorded once -------------------------------------------------------------------------

    def test_the_same_repoint_checked_again_and_again_is_one_event_and_one_webhook_delivery(self):
        repo = "pin/once"
        first = self.image("once-first", seed="once-1")
        second = self.image("once-second", seed="once-2")
        repoints, _, _ = self.counters("pin")
        event = self.repoint(repo, first, second)
        outcomes = [self.check(repo)["outcome"] for _ in range(3)]
        cli = self.regpin.cli("pins", "check", self.ref(repo), "--json", token=self.ENV)
        self.assertEqual(cli.returncode, 0, cli.stderr)
        outcomes += [r["outcome"] for r in json.loads(cli.stdout)["results"]]
        self.assertEqual(outcomes, ["already_recorded"] * 4)
        self.assertEqual(self.served_digest(repo), first.digest)

        history = self.pin_doc(repo)["history"]
        self.assertEqual([e["id"] for e in history if e["type"] == "repointed"], [event["id"]])
        everywhere = [e for e in self.events() if e["reference"] == self.ref(repo) and e["type"] == "repointed"]
        self.assertEqual([e["id"] for e in everywhere], [event["id"]])
        self.assertEqual(self.counters("pin")[0], repoints + 1)
        self.assert_signed_alert(self.wait_alert(event["id"]), event)
        self.wait_queue_empty()
        self.assertEqual(len(self.receiver.deliveries(reference=self.ref(repo))), 1,
                         [d.body for d in self.receiver.deliveries(reference=self.ref(repo))])

    # -- issue 12: no pin changes without an event; an operator's decision holds ----------------

    def test_follow_flapping_records_every_move_and_alerts_each_digest_once(self):
        repo = "follow/flap"
        a = self.image("flap-a", seed="flap-a")
        b = self.image("flap-b", seed="flap-b")
        first = self.repoint(repo, a, b)
        moves = [(a, b), (b, a), (a, b), (b, a), (a, b)]  # (from, to), the first one done above
        for old, new in moves[1:]:
            self.push(new, repo)
            result = self.check(repo)
            self.assertEqual((result["outcome"], result["upstream_digest"]), ("repointed", new.digest), result)
            self.assertEqual([(e["type"], e["action"], e["old_digest"], e["new_digest"]) for e in result["events"]],
                             [("repointed", "followed", old.digest, new.digest)])
        # Every move is in the history, in order, and the last says what nodes get.
        history = self.pin_doc(repo)["history"]
        self.assertEqual([(e["type"], e["old_digest"], e["new_digest"]) for e in history],
                         [("pinned", None, a.digest)] +
                         [("repointed", old.digest, new.digest) for old, new in moves])
        self.assertEqual(self.the_pin(repo)["digest"], b.digest)
        self.assertEqual(self.ctr_pull(repo), b.digest, "containerd gets what the history ends with")
        # Each digest is alerted once: the first move to b and the first move back to a.
        self.wait_queue_empty()
        alerted = [(d.alert()["pinned_digest"], d.alert()["upstream_digest"])
                   for d in self.receiver.accepted(reference=self.ref(repo))]
        self.assertEqual(alerted, [(a.digest, b.digest), (b.digest, a.digest)])
        self.assertEqual(alerted[0], (first["old_digest"], first["new_digest"]))

    def test_reject_then_keeping_the_old_digest_holds_until_the_upstream_shows_a_new_one(self):
        repo = "reject/keep"
        a = self.image("keep-a", seed="keep-a")
        b = self.image("keep-b", seed="keep-b")
        c = self.image("keep-c", seed="keep-c")
        self.repoint(repo, a, b)
        self.assertIsNone(self.ctr_pull(repo, check=False), "rejected: containerd gets 403")
        kept = self.regpin.cli("pins", "approve", self.ref(repo), "--digest", a.digest, "--json", token=self.CLI)
        self.assertEqual(kept.returncode, 0, kept.stderr)
        self.assertEqual(self.ctr_pull(repo), a.digest, "the operator kept the old digest")

        # The upstream still shows b: decided, so the check changes nothing and says so.
        result = self.check(repo)
        self.assertEqual((result["outcome"], result["events"]), ("already_recorded", []), result)
        pin = self.the_pin(repo)
        self.assertEqual((pin["state"], pin["digest"], pin["pending_digest"]), ("pinned", a.digest, None))
        self.assert_history(self.pin_doc(repo)["history"],
                            [("pinned", "first-pull"), ("repointed", "policy"), ("approved", "token:cli")])
        self.assertEqual(self.ctr_pull(repo), a.digest, "still a after the check")

        # A digest nobody decided: the policy applies afresh, with an event and an alert.
        self.push(c, repo)
        result = self.check(repo)
        self.assertEqual(result["outcome"], "repointed", result)
        event = result["events"][0]
        self.assertEqual((event["action"], event["old_digest"], event["new_digest"]),
                         ("rejected", a.digest, c.digest))
        self.assertEqual(self.assert_signed_alert(self.wait_alert(event["id"]), event)["upstream_digest"], c.digest)
        self.assertIsNone(self.ctr_pull(repo, check=False), "rejected again")
        pin = self.the_pin(repo)
        self.assertEqual((pin["state"], pin["pending_digest"]), ("rejected", c.digest))

    def test_pin_policy_keeping_the_pinned_digest_is_not_undone_by_the_next_check(self):
        repo = "pin/keep"
        a = self.image("pin-keep-a", seed="pin-keep-a")
        b = self.image("pin-keep-b", seed="pin-keep-b")
        self.repoint(repo, a, b)
        self.assertEqual(self.the_pin(repo)["state"], "pending")
        kept = self.api("POST", "/api/v1/pin/approve", self.target(repo, digest=a.digest)).json()["events"]
        self.assertEqual([(e["type"], e["new_digest"]) for e in kept], [("approved", a.digest)])
        before = self.last_event_id()
        result = self.check(repo)
        self.assertEqual((result["outcome"], result["events"]), ("already_recorded", []), result)
        pin = self.the_pin(repo)
        self.assertEqual((pin["state"], pin["digest"], pin["pending_digest"]), ("pinned", a.digest, None))
        self.assertEqual([e for e in self.events(after=before) if e["reference"] == self.ref(repo)], [])
        self.assertEqual(self.ctr_pull(repo), a.digest)

    # -- issue 12: an operator's action covers a tag's classes, each as its clients accept ------

    def test_approve_moves_each_class_its_clients_accept_and_says_which_it_left_alone(self):
        repo = "pin/classes"
        list1, child1 = self.push_docker_list(repo, "classes-1")
        self.assertEqual(self.ctr_pull(repo), list1)
        self.assertEqual(self.docker_only_digest(repo), child1)
        list2, child2 = self.push_docker_list(repo, "classes-2")
        results = self.api("POST", "/api/v1/pin/check", self.target(repo)).json()["results"]
        self.assertEqual(sorted((r["accept_class"], r["outcome"], r["upstream_digest"]) for r in results),
                         [(1, "repointed", child2), (15, "repointed", list2)])

        # --digest: the list goes only to the class whose clients accept lists.
        approved = self.regpin.cli("pins", "approve", self.ref(repo), "--digest", list2, "--json", token=self.CLI)
        self.assertEqual(approved.returncode, 0, approved.stderr)
        doc = json.loads(approved.stdout)
        self.assertEqual([(e["accept_class"], e["new_digest"]) for e in doc["events"]], [(15, list2)])
        self.assertEqual([s["accept_class"] for s in doc["skipped"]], [1])
        self.assertIn(h.MEDIA_DOCKER_LIST, doc["skipped"][0]["reason"])
        self.assertEqual(self.ctr_pull(repo), list2)
        self.assertEqual(self.docker_only_digest(repo), child1, "a Docker-only client is never served a list")
        pins = {p["accept_class"]: p for p in self.pin_doc(repo)["pins"]}
        self.assertEqual((pins[1]["state"], pins[1]["pending_digest"]), ("pending", child2))

        # Without a digest: every class with something pending, the others listed.
        approved = self.api("POST", "/api/v1/pin/approve", self.target(repo)).json()
        self.assertEqual([(e["accept_class"], e["old_digest"], e["new_digest"]) for e in approved["events"]],
                         [(1, child1, child2)])
        self.assertEqual(approved["skipped"], [{"accept_class": 15, "reason": "nothing is pending"}])
        self.assertEqual(self.docker_only_digest(repo), child2)
        self.assertEqual(self.ctr_pull(repo), list2)
        # Nothing left to approve: refused whole, nothing written.
        before = self.last_event_id()
        self.api("POST", "/api/v1/pin/approve", self.target(repo), expect=409)
        self.assertEqual(self.last_event_id(), before)

    def test_a_long_poll_on_events_returns_as_soon_as_a_repoint_is_recorded(self):
        repo = "pin/long-poll"
        first = self.image("poll-first", seed="poll-1")
        second = self.image("poll-second", seed="poll-2")
        self.push(first, repo)
        self.assertEqual(self.served_digest(repo), first.digest)
        self.push(second, repo)
        after = self.last_event_id()
        # Nothing new: the poll waits about wait_s, then answers an empty list.
        started = time.monotonic()
        self.assertEqual(self.api("GET", f"/api/v1/events?after={after}&wait_s=1").json()["events"], [])
        self.assertGreaterEqual(time.monotonic() - started, 0.9, "wait_s=1 answered before a second")

        sent = threading.Event()
        answer: dict[str, Any] = {}

        def poll() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", self.regpin.admin_port, timeout=60)
            try:
                conn.request("GET", f"/api/v1/events?after={after}&wait_s=30",
                             headers={"Authorization": f"Bearer {self.OPS}"})
                sent.set()
                resp = conn.getresponse()
                answer["status"], answer["body"] = resp.status, resp.read()
                answer["at"] = time.monotonic()
            except Exception as e:  # noqa: BLE001 - reported by the assertions below
                answer["error"] = e
            finally:
                sent.set()
                conn.close()

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        self.assertTrue(sent.wait(10), "the long poll was not sent")
        checked_at = time.monotonic()
        result = self.check(repo)
        self.assertEqual(result["outcome"], "repointed")
        thread.join(timeout=40)
        self.assertFalse(thread.is_alive(), "the long poll never answered")
        self.assertNotIn("error", answer)
        self.assertEqual(answer["status"], 200)
        events = json.loads(answer["body"])["events"]
        self.assertEqual([e["id"] for e in events], [result["events"][0]["id"]])
        self.assertLess(answer["at"] - checked_at, 10, "the long poll waited out wait_s despite the new event")

    # -- 3. operator actions ----------------------------------------------------------------------

    def test_approve_without_a_digest_moves_the_pin_to_the_pending_digest(self):
        repo = "pin/approve-pending"
        first = self.image("approve-first", seed="approve-1")
        second = self.image("approve-second", seed="approve-2")
        self.repoint(repo, first, second)
        _, pending, _ = self.counters("pin")

        approved = self.api("POST", "/api/v1/pin/approve", self.target(repo)).json()["events"]

        self.assertEqual([(e["type"], e["actor"], e["old_digest"], e["new_digest"]) for e in approved],
                         [("approved", "token:ops", first.digest, second.digest)])
        self.assertEqual(self.ctr_pull(repo), second.digest, "containerd after the approval")
        doc = self.pin_doc(repo)
        pin = doc["pins"][0]
        self.assertEqual((pin["state"], pin["digest"], pin["pending_digest"]), ("pinned", second.digest, None))
        self.assert_history(doc["history"], [("pinned", "first-pull"), ("repointed", "policy"),
                                             ("approved", "token:ops")])
        self.assertEqual(doc["history"][-1], approved[0])
        self.assertEqual(self.counters("pin")[1], pending - 1)
        # Nothing is pending any more: approving again without a digest is refused.
        again = self.api("POST", "/api/v1/pin/approve", self.target(repo), expect=None)
        self.assertFalse(200 <= again.status < 300, again.body)
        self.assertEqual(self.the_pin(repo)["digest"], second.digest)

    def test_approve_with_an_explicit_digest_through_the_cli_pins_that_digest(self):
        repo = "reject/approve-explicit"
        first = self.image("explicit-first", seed="explicit-1")
        second = self.image("explicit-second", seed="explicit-2")
        chosen = self.image("explicit-chosen", seed="explicit-3")
        self.push(chosen, repo, "candidate")  # upstream has it; the tag v1 never pointed at it
        self.repoint(repo, first, second)
        self.assertIsNone(self.ctr_pull(repo, check=False), "rejected before the approval")

        approved = self.regpin.cli("pins", "approve", self.ref(repo), "--digest", chosen.digest, "--json",
                                   token=self.CLI)

        self.assertEqual(approved.returncode, 0, approved.stderr)
        events = json.loads(approved.stdout)["events"]
        self.assertEqual([(e["type"], e["actor"], e["old_digest"], e["new_digest"]) for e in events],
                         [("approved", "token:cli", first.digest, chosen.digest)])
        self.assertEqual(self.ctr_pull(repo), chosen.digest, "containerd after approving an explicit digest")
        doc = self.pin_doc(repo)
        pin = doc["pins"][0]
        self.assertEqual((pin["state"], pin["digest"], pin["pending_digest"]), ("pinned", chosen.digest, None))
        self.assert_history(doc["history"], [("pinned", "first-pull"), ("repointed", "policy"),
                                             ("approved", "token:cli")])

    def test_unpin_forgets_the_pin_so_the_next_pull_pins_the_current_upstream_digest(self):
        repo = "pin/unpin"
        first = self.image("unpin-first", seed="unpin-1")
        second = self.image("unpin-second", seed="unpin-2")
        self.push(first, repo)
        self.assertEqual(self.ctr_pull(repo), first.digest)
        self.push(second, repo)
        self.assertEqual(self.ctr_pull(repo), first.digest, "pinned before the unpin")

        unpinned = self.api("POST", "/api/v1/pin/unpin", self.target(repo), token=self.ENV).json()["events"]

        self.assertEqual([(e["type"], e["actor"], e["old_digest"]) for e in unpinned],
                         [("unpinned", "token:env", first.digest)])
        doc = self.pin_doc(repo)
        self.assertEqual(doc["pins"], [])
        self.assert_history(doc["history"], [("pinned", "first-pull"), ("unpinned", "token:env")])
        self.assertEqual(self.ctr_pull(repo), second.digest, "containerd after the unpin")
        doc = self.pin_doc(repo)
        self.assertEqual(len(doc["pins"]), 1, doc)
        self.assertEqual((doc["pins"][0]["state"], doc["pins"][0]["digest"]), ("pinned", second.digest))
        self.assert_history(doc["history"], [("pinned", "first-pull"), ("unpinned", "token:env"),
                                             ("pinned", "first-pull")])
        self.assertEqual(doc["history"][-1]["new_digest"], second.digest)

    def test_set_by_hand_pins_a_chosen_digest_and_refuses_one_the_upstream_lacks(self):
        repo = "pin/set"
        first = self.image("set-first", seed="set-1")
        chosen = self.image("set-chosen", seed="set-2")
        self.push(first, repo)
        self.push(chosen, repo, "candidate")
        self.assertEqual(self.ctr_pull(repo), first.digest)

        done = self.api("POST", "/api/v1/pin/set", self.target(repo, digest=chosen.digest)).json()["events"]

        self.assertEqual([(e["type"], e["actor"], e["old_digest"], e["new_digest"]) for e in done],
                         [("set", "token:ops", first.digest, chosen.digest)])
        self.assertEqual(self.ctr_pull(repo), chosen.digest, "containerd after the pin by hand")
        self.assertEqual(self.upstream.manifest_digest(repo, "v1"), first.digest, "the upstream tag is untouched")
        doc = self.pin_doc(repo)
        self.assertEqual((doc["pins"][0]["state"], doc["pins"][0]["digest"]), ("pinned", chosen.digest))
        self.assert_history(doc["history"], [("pinned", "first-pull"), ("set", "token:ops")])
        # A digest the upstream does not have cannot be fetched and verified: refused, pin kept.
        missing = h.sha256_digest(b"no such manifest anywhere")
        refused = self.api("POST", "/api/v1/pin/set", self.target(repo, digest=missing), expect=None)
        self.assertFalse(200 <= refused.status < 300, f"set to a missing digest: {refused.status} {refused.body!r}")
        self.assertTrue(refused.error_codes(), refused.body)
        self.assertEqual(self.the_pin(repo)["digest"], chosen.digest)
        self.assertEqual(len(self.pin_doc(repo)["history"]), 2)
        self.assertEqual(self.ctr_pull(repo), chosen.digest)

    def test_listings_page_by_limit_and_refuse_a_bad_one_with_400(self):
        for tag in ("l1", "l2"):
            image = self.image(f"limit-{tag}", seed=f"limit-{tag}")
            self.push(image, "pin/limit", tag=tag)
            self.assertEqual(self.served_digest("pin/limit", tag), image.digest)
        base = f"/api/v1/pins?registry={self.upstream.host}&repository_prefix=pin/limit"
        self.assertEqual(len(self.api("GET", base).json()["pins"]), 2)
        self.assertEqual(len(self.api("GET", base + "&limit=1").json()["pins"]), 1)
        self.assertEqual(len(self.api("GET", "/api/v1/events?after=0&limit=1").json()["events"]), 1)
        # A long poll with limit=0 would otherwise wait out wait_s and answer 200 with nothing.
        for path in (base + "&limit=0", base + "&limit=x", base + "&limit=-1", "/api/v1/events?limit=0",
                     "/api/v1/events?limit=x", "/api/v1/events?after=0&limit=0&wait_s=2"):
            with self.subTest(path=path):
                resp = self.api("GET", path, expect=400)
                self.assertTrue(resp.error_codes(), resp.body[:300])
                self.assertIn("limit", resp.body.decode(), resp.body[:300])

    # -- 6. tokens --------------------------------------------------------------------------------

    def test_every_api_endpoint_refuses_a_missing_or_wrong_token_with_401_and_changes_nothing(self):
        repo = "pin/auth"
        image = self.image("auth", seed="auth-1")
        self.push(image, repo)
        self.assertEqual(self.served_digest(repo), image.digest)
        history_before = self.pin_doc(repo)["history"]
        query = urllib.parse.urlencode(self.target(repo))
        endpoints = [
            ("GET", f"/api/v1/pins?registry={self.upstream.host}", None),
            ("GET", f"/api/v1/pin?{query}", None),
            ("GET", "/api/v1/events?after=0", None),
            ("GET", "/api/v1/events?after=0&wait_s=2", None),
            ("POST", "/api/v1/pin/approve", self.target(repo, digest=image.digest)),
            ("POST", "/api/v1/pin/unpin", self.target(repo)),
            ("POST", "/api/v1/pin/set", self.target(repo, digest=image.digest)),
            ("POST", "/api/v1/pin/check", self.target(repo)),
            ("GET", "/api/v1/no-such-endpoint", None),
        ]
        wrong = [
            None,  # no Authorization header
            "Bearer wrong-token-0123456789abcdef",
            "Bearer " + self.OPS[:-1],  # a prefix of a real token
            "Bearer " + self.OPS + "x",  # a real token with more after it
            "Bearer ",
            h.basic_auth("ops", self.OPS),  # the right secret in the wrong scheme
            self.OPS,  # no scheme at all
        ]
        for method, path, body in endpoints:
            for authorization in wrong:
                with self.subTest(method=method, path=path, authorization=authorization):
                    headers = {"Authorization": authorization} if authorization is not None else None
                    started = time.monotonic()
                    resp = self.regpin.admin_request(method, path, body, token=None, headers=headers)
                    self.assertEqual(resp.status, 401, resp.body[:300])
                    self.assertEqual(resp.error_codes(), ["UNAUTHORIZED"], resp.body[:300])
                    # A refused long poll answers before its wait_s=2 (a waiting one takes at least that).
                    self.assertLess(time.monotonic() - started, 2.0, "a refused long poll must not wait")
        doc = self.pin_doc(repo)
        self.assertEqual(doc["history"], history_before, "a refused request changed the pin's history")
        self.assertEqual((doc["pins"][0]["state"], doc["pins"][0]["digest"]), ("pinned", image.digest))
        # The open endpoints.
        for path in ("/healthz", "/readyz", "/metrics"):
            with self.subTest(path=path):
                self.assertEqual(self.regpin.admin_request("GET", path, token=None).status, 200)
        # The CLI says the token was refused, and exits non-zero.
        for args in (("pins", "list"), ("pins", "show", self.ref(repo)), ("pins", "unpin", self.ref(repo)),
                     ("pins", "check", self.ref(repo)), ("events",)):
            with self.subTest(cli=args):
                result = self.regpin.cli(*args, token="wrong-token-0123456789abcdef")
                self.assertNotEqual(result.returncode, 0, result.stdout)
                self.assertIn("refused the token", result.stderr)
                missing = self.regpin.cli(*args, token=None)
                self.assertNotEqual(missing.returncode, 0, missing.stdout)
                self.assertIn("token", missing.stderr)
        self.assertEqual(self.pin_doc(repo)["history"], history_before)


# ------------------------------------------------------------------------------------------------
# A pin holds its content (issue 12, point 3)
# ------------------------------------------------------------------------------------------------


class PinContentTest(PinLifecycleTestCase):
    """A two-platform tag is pulled by containerd for linux/amd64 only; then the upstream
    (docker-registry, deletes enabled) deletes the linux/arm64 manifest and its blobs, as GHCR,
    ECR or Harbor clean-up rules do after a re-push. Each test runs its own regpin with one
    `pin_content` setting."""

    TOKEN = "content-token-0123456789abcdef"

    @classmethod
    def setUpClass(cls):
        cls.upstream = h.Registry("content-upstream").start()
        cls.addClassCleanup(cls.upstream.close)
        cls.layout = cls.new_layout(cls.addClassCleanup)
        cls.containerd = h.Containerd().start()
        cls.addClassCleanup(cls.containerd.close)

    def start_regpin(self, pin_content: str) -> None:
        self.regpin = h.Regpin([h.Upstream.of(self.upstream.host, self.upstream)],
                               admin_tokens=[h.AdminToken("ops", self.TOKEN)],
                               pin_checks=NO_BACKGROUND_CHECKS, settings={"pin_content": pin_content})
        # Stopped after the test, deleted with the class: the log outlives a failure report.
        self.addClassCleanup(self.regpin.close)
        self.addCleanup(self.regpin.stop)
        self.regpin.start()
        self.containerd.mirror(self.upstream.host, self.regpin.url)

    def content(self, repo: str) -> dict:
        return self.the_pin(repo)["content"]

    def wait_content(self, repo: str, state: str) -> dict:
        h.wait_until(lambda: self.content(repo)["state"] == state, timeout=30, interval=0.1,
                     message=f"pin content of {repo} {state}")
        return self.content(repo)

    def pull_platform(self, repo: str, platform: str) -> Optional[str]:
        self.containerd.forget_everything()
        ref = self.ref(repo)
        self.last_pull = self.containerd.pull(ref, platform=platform, check=False)
        return self.containerd.image_digest(ref) if self.last_pull.returncode == 0 else None

    def delete_platform(self, repo: str, image: h.Image, platform: str) -> tuple[str, str, str]:
        """Deletes `platform`'s manifest, config and layer from the upstream; their digests."""
        manifest = image.manifest_for(platform)
        doc = json.loads(image.blobs[manifest])
        config, layer = doc["config"]["digest"], doc["layers"][0]["digest"]
        for kind, digest in (("manifests", manifest), ("blobs", config), ("blobs", layer)):
            resp = self.upstream.request("DELETE", f"/v2/{repo}/{kind}/{digest}")
            self.assertEqual(resp.status, 202, f"DELETE {kind} {digest}: {resp.body[:200]!r}")
        self.assertEqual(self.upstream.get_manifest(repo, manifest).status, 404, "deleted upstream")
        return manifest, config, layer

    def two_platform_tag(self, repo: str, seed: str) -> h.Image:
        image = self.image(seed, seed=seed, platforms=("linux/amd64", "linux/arm64"))
        self.push(image, repo)
        self.assertEqual(self.pull_platform(repo, "linux/amd64"), image.digest, self.last_pull.stderr)
        return image

    def test_with_pin_content_all_a_platform_nobody_pulled_is_pullable_after_the_upstream_deleted_it(self):
        self.start_regpin("all")
        repo = "content/all"
        image = self.two_platform_tag(repo, "content-all")
        content = self.wait_content(repo, "complete")
        self.assertEqual((content["manifests"], content["configs"], content["layers"], content["missing"]),
                         ({"cached": 3, "total": 3}, {"cached": 2, "total": 2}, {"cached": 2, "total": 2}, []))
        self.delete_platform(repo, image, "linux/arm64")
        self.assertEqual(self.pull_platform(repo, "linux/arm64"), image.digest, self.last_pull.stderr)
        self.assertGreaterEqual(h.metric_value(self.metrics(), "regpin_pin_content_walks_total", result="complete"), 1)

    def test_with_pin_content_manifests_the_manifest_is_served_and_the_missing_layers_are_reported(self):
        self.start_regpin("manifests")
        repo = "content/manifests"
        image = self.two_platform_tag(repo, "content-manifests")
        content = self.wait_content(repo, "complete")
        self.assertEqual((content["manifests"], content["configs"], content["layers"]),
                         ({"cached": 3, "total": 3}, {"cached": 2, "total": 2}, {"cached": 1, "total": 2}))
        manifest, config, layer = self.delete_platform(repo, image, "linux/arm64")

        resp = self.regpin.get(h.with_query(f"/v2/{repo}/manifests/{manifest}", ns=self.upstream.host),
                               {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, manifest), "the arm64 manifest")
        resp = self.regpin.get(h.with_query(f"/v2/{repo}/blobs/{config}", ns=self.upstream.host))
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, config), "the arm64 config")
        self.assertIsNone(self.pull_platform(repo, "linux/arm64"), "the arm64 layer was never fetched")

        content = self.content(repo)
        self.assertEqual(content["state"], "complete", "what pin_content manifests asks for is held")
        self.assertEqual([(m["kind"], m["digest"], m["platform"]) for m in content["missing"]],
                         [("layer", layer, "linux/arm64")])
        self.assertIn("pin_content is manifests", content["missing"][0]["reason"])
        shown = self.regpin.cli("pins", "show", self.ref(repo), token=self.TOKEN)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn(f"missing layer {layer} (linux/arm64): not fetched: pin_content is manifests", shown.stdout)
        self.assertIn("1/2 layers cached", shown.stdout)

    def test_content_the_upstream_lost_already_is_reported_missing_with_the_upstreams_answer(self):
        self.start_regpin("all")
        repo = "content/lost"
        image = self.image("content-lost", seed="content-lost", platforms=("linux/amd64", "linux/arm64"))
        self.push(image, repo)
        layer = json.loads(image.blobs[image.manifest_for("linux/arm64")])["layers"][0]["digest"]
        self.assertEqual(self.upstream.request("DELETE", f"/v2/{repo}/blobs/{layer}").status, 202)
        self.assertEqual(self.pull_platform(repo, "linux/amd64"), image.digest, self.last_pull.stderr)
        content = self.wait_content(repo, "missing")
        self.assertEqual([(m["kind"], m["digest"], m["platform"]) for m in content["missing"]],
                         [("layer", layer, "linux/arm64")])
        self.assertIn("upstream", content["missing"][0]["reason"])
        self.assertIn("not found", content["missing"][0]["reason"])
        h.wait_until(lambda: h.metric_value(self.metrics(), "regpin_pin_content_walks_total", result="incomplete") >= 1,
                     timeout=10, interval=0.1, message="an incomplete walk counted")

    def test_with_pin_content_none_nothing_is_fetched_beyond_the_pull(self):
        self.start_regpin("none")
        repo = "content/none"
        image = self.two_platform_tag(repo, "content-none")
        content = self.content(repo)
        self.assertEqual(content["state"], "complete")
        self.assertEqual(content["manifests"], {"cached": 2, "total": 3})
        self.assertEqual({m["platform"] for m in content["missing"]}, {"linux/arm64"})
        self.assertEqual(h.metric_value(self.metrics(), "regpin_pin_content_walks_total", result="complete"), 0)


# ------------------------------------------------------------------------------------------------
# Signatures and attestations are not release tags (issue 12, point 4)
# ------------------------------------------------------------------------------------------------

COSIGN_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


class ArtifactTagsTest(PinLifecycleTestCase):
    """Signature tags (cosign's sha256-<hex>.sig) and the OCI 1.1 referrers fallback tag
    (sha256-<hex>) move whenever something is signed. Policies: an operator's rule for the
    signature tags of override/**, then a catch-all `**` reject, which does not reach artifact
    tags: they follow by the built-in rule, recorded as `updated`, never alerted."""

    TOKEN = "artifact-token-0123456789abcdef"
    SECRET = "artifact-webhook-secret"

    @classmethod
    def setUpClass(cls):
        cls.start_class_servers("artifact-upstream", lambda host: dict(
            admin_tokens=[h.AdminToken("ops", cls.TOKEN)],
            policies=[h.PolicyRule(f"{host}/override/**:sha256-*.sig", "reject"), h.PolicyRule("**", "reject")],
            pin_checks=NO_BACKGROUND_CHECKS))

    def signed_image(self, repo: str, seed: str) -> tuple[h.Image, str]:
        """An image pushed and pulled by containerd (pinned); (image, its signature tag)."""
        image = self.image(seed, seed=seed)
        self.push(image, repo)
        self.assertEqual(self.ctr_pull(repo), image.digest)
        return image, "sha256-" + image.digest.split(":", 1)[1] + ".sig"

    def sign(self, image: h.Image, repo: str, tag: str, signatures: list[str]) -> str:
        """A signature manifest in cosign's layout (one simple-signing payload layer per
        signature, the signature in its annotation) pushed with skopeo under `tag`; its digest."""
        layers = []
        for sig in signatures:
            payload = json.dumps({"critical": {"identity": {"docker-reference": f"{self.upstream.host}/{repo}"},
                                               "image": {"docker-manifest-digest": image.digest},
                                               "type": "cosign container image signature"},
                                  "optional": {"signer": sig}}).encode()
            desc = self.layout.add_blob(payload, COSIGN_PAYLOAD)
            desc["annotations"] = {COSIGN_SIGNATURE: base64.b64encode(f"signature {sig}".encode()).decode()}
            layers.append(desc)
        config = self.layout.add_blob(json.dumps({
            "architecture": "", "os": "", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode(), h.MEDIA_OCI_CONFIG)
        local = f"sig-{'-'.join(signatures)}-{tag[7:19]}"
        desc = self.layout.add_manifest(local, {"schemaVersion": 2, "mediaType": h.MEDIA_OCI_MANIFEST,
                                                "config": config, "layers": layers})
        h.push(self.layout, f"{repo}:{tag}", self.upstream, source_tag=local)
        self.assertEqual(self.upstream.manifest_digest(repo, tag), desc["digest"])
        return desc["digest"]

    def push_artifact(self, repo: str, subject: h.Image, kind: str) -> dict:
        """An OCI 1.1 artifact manifest with `subject`, pushed by digest through the registry
        API (as oras does); its descriptor, with artifactType, as a referrers index lists it."""
        blob = f"{kind} of {subject.digest}".encode()
        self.upstream.upload_blob(repo, h.sha256_digest(blob), blob)
        self.upstream.upload_blob(repo, h.sha256_digest(b"{}"), b"{}")
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": h.MEDIA_OCI_MANIFEST, "artifactType": kind,
            "config": {"mediaType": OCI_EMPTY, "digest": h.sha256_digest(b"{}"), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": h.sha256_digest(blob), "size": len(blob)}],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        }).encode()
        digest = self.upstream.put_manifest(repo, h.sha256_digest(manifest), manifest, h.MEDIA_OCI_MANIFEST)
        return {"mediaType": h.MEDIA_OCI_MANIFEST, "digest": digest, "size": len(manifest), "artifactType": kind}

    def push_fallback(self, repo: str, subject: h.Image, referrers: list[dict]) -> str:
        """The referrers fallback index under the tag sha256-<hex of subject>; its digest."""
        index = json.dumps({"schemaVersion": 2, "mediaType": h.MEDIA_OCI_INDEX, "manifests": referrers}).encode()
        return self.upstream.put_manifest(repo, "sha256-" + subject.digest.split(":", 1)[1], index, h.MEDIA_OCI_INDEX)

    def no_alert_for(self, event_id: int) -> None:
        self.wait_queue_empty()
        self.assertEqual(self.receiver.accepted(event_id), [], "an artifact update was alerted")

    def test_a_new_signature_follows_as_an_artifact_update_without_an_alert_under_a_catch_all_reject(self):
        repo = "signed/app"
        image, tag = self.signed_image(repo, "signed-app")
        first = self.sign(image, repo, tag, ["alice"])
        self.assertEqual(self.served_digest(repo, tag), first)
        second = self.sign(image, repo, tag, ["alice", "bob"])
        result = self.check(repo, tag)
        self.assertEqual(result["outcome"], "repointed", result)
        event = result["events"][0]
        self.assertEqual({k: event[k] for k in ("type", "old_digest", "new_digest", "actor", "policy", "action")},
                         {"type": "repointed", "old_digest": first, "new_digest": second, "actor": "policy",
                          "policy": "artifact", "action": "updated"})
        self.assertEqual(self.served_digest(repo, tag), second, "verifiers get the new signature set")
        self.assertEqual(self.the_pin(repo, tag)["state"], "pinned")
        self.no_alert_for(event["id"])
        self.assertNotRegex(self.regpin.log(), r"warn(ing)? re-point: .*" + re.escape(tag))

        # The image's own tag is still under the catch-all reject.
        other = self.image("signed-app-2", seed="signed-app-2")
        self.push(other, repo)
        self.assertEqual(self.check(repo)["events"][0]["action"], "rejected")
        self.assertIsNone(self.ctr_pull(repo, check=False))

    def test_the_referrers_fallback_tag_of_an_oci_1_1_artifact_follows_too(self):
        repo = "signed/artifact"
        image = self.image("artifact-subject", seed="artifact-subject")
        self.push(image, repo)
        sbom = self.push_artifact(repo, image, "application/vnd.example.sbom")
        fallback = "sha256-" + image.digest.split(":", 1)[1]
        first = self.push_fallback(repo, image, [sbom])
        self.assertEqual(self.served_digest(repo, fallback), first)
        attestation = self.push_artifact(repo, image, "application/vnd.example.provenance")
        second = self.push_fallback(repo, image, [sbom, attestation])
        event = self.check(repo, fallback)["events"][0]
        self.assertEqual((event["policy"], event["action"], event["new_digest"]), ("artifact", "updated", second))
        resp = self.manifest_via_regpin(repo, fallback)
        self.assertEqual([m["artifactType"] for m in json.loads(resp.body)["manifests"]],
                         ["application/vnd.example.sbom", "application/vnd.example.provenance"])
        resp = self.manifest_via_regpin(repo, attestation["digest"])
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, attestation["digest"]))
        self.no_alert_for(event["id"])

    def referrers(self, repo: str, subject: str, artifact_type: str | None = None) -> h.Response:
        query = {"ns": self.upstream.host}
        if artifact_type:
            query["artifactType"] = artifact_type
        return self.regpin.request("GET", h.with_query(f"/v2/{repo}/referrers/{subject}", **query))

    def test_the_referrers_api_is_answered_from_the_fallback_tag_of_an_upstream_without_it(self):
        # docker-registry 2.8 has no referrers API (404): regpin answers it from the fallback tag
        # sha256-<hex>, filtered by artifactType, and with an empty index when there is none.
        repo = "signed/referrers"
        image = self.image("referrers-subject", seed="referrers-subject")
        self.push(image, repo)
        self.assertEqual(self.upstream.request("GET", f"/v2/{repo}/referrers/{image.digest}").status, 404)
        empty = self.referrers(repo, image.digest)
        self.assertEqual((empty.status, empty.header("Content-Type")), (200, h.MEDIA_OCI_INDEX), empty.body[:300])
        doc = json.loads(empty.body)
        self.assertEqual((doc["schemaVersion"], doc["mediaType"], doc["manifests"]), (2, h.MEDIA_OCI_INDEX, []))

        sbom = self.push_artifact(repo, image, "application/vnd.example.sbom")
        provenance = self.push_artifact(repo, image, "application/vnd.example.provenance")
        self.push_fallback(repo, image, [sbom, provenance])
        listed = self.referrers(repo, image.digest)
        self.assertEqual(listed.status, 200, listed.body[:300])
        self.assertEqual([m["digest"] for m in json.loads(listed.body)["manifests"]],
                         [sbom["digest"], provenance["digest"]])
        self.assertIsNone(listed.header("OCI-Filters-Applied"))
        only = self.referrers(repo, image.digest, "application/vnd.example.provenance")
        self.assertEqual(only.header("OCI-Filters-Applied"), "artifactType")
        self.assertEqual([m["digest"] for m in json.loads(only.body)["manifests"]], [provenance["digest"]])

        # Kept like the API's answer: served, marked stale, with the upstream stopped.
        self.upstream.stop()
        self.addCleanup(self.upstream.start)
        stale = self.referrers(repo, image.digest, "application/vnd.example.sbom")
        self.assertEqual(stale.status, 200, stale.body[:300])
        self.assertEqual([m["digest"] for m in json.loads(stale.body)["manifests"]], [sbom["digest"]])
        self.assertRegex(stale.header("Warning") or "", r'^110 regpin "Response is Stale: referrers as fetched at ')

    def test_the_export_of_a_signed_image_carries_its_signature_tag(self):
        repo = "signed/exported"
        image, tag = self.signed_image(repo, "signed-exported")
        signature = self.sign(image, repo, tag, ["dave"])
        self.assertEqual(self.served_digest(repo, tag), signature)
        # A signature is held whole (its payload layers too), as verification needs it.
        h.wait_until(lambda: self.the_pin(repo, tag)["content"]["state"] == "complete", timeout=30, interval=0.1,
                     message="the signature's content held")
        self.assertEqual(self.the_pin(repo, tag)["content"]["layers"], {"cached": 1, "total": 1})
        work = tempfile.mkdtemp(prefix="regpin-it-signed-export-")
        self.addCleanup(h.remove_temp_dir, work)
        bundle = os.path.join(work, "bundle.tar")
        result = h.regpin_command("export", "--data", self.regpin.data_dir, "--image", self.ref(repo), "-o", bundle)
        self.assertEqual(result.returncode, 0, result.stderr)
        with tarfile.open(bundle) as tar:
            pins = json.loads(tar.extractfile("regpin-pins.json").read())["pins"]
            names = set(tar.getnames())
        self.assertEqual(sorted((p["tag"], p["digest"]) for p in pins), sorted([("v1", image.digest), (tag, signature)]))
        self.assertIn("blobs/sha256/" + signature.split(":", 1)[1], names)

    def test_an_operators_rule_for_signature_tags_overrides_the_built_in_one(self):
        repo = "override/app"
        image, tag = self.signed_image(repo, "override-app")
        first = self.sign(image, repo, tag, ["carol"])
        self.assertEqual(self.served_digest(repo, tag), first)
        second = self.sign(image, repo, tag, ["carol", "mallory"])
        event = self.check(repo, tag)["events"][0]
        self.assertEqual((event["policy"], event["action"]), ("reject", "rejected"))
        self.assertEqual(self.manifest_via_regpin(repo, tag).status, 403)
        self.assert_signed_alert(self.wait_alert(event["id"]), event)
        self.assertEqual(self.the_pin(repo, tag)["pending_digest"], second)


# ------------------------------------------------------------------------------------------------
# One tag, one truth across clients (issue 12, point 7)
# ------------------------------------------------------------------------------------------------


class OneTagOneTruthTest(PinLifecycleTestCase):
    """A tag has one pin per accept class, yet a client is answered by any pin of the tag whose
    manifest it accepts; a new representation is pinned only when none is, and recorded and
    alerted when it is not the image of the tag's first pin. Policies: reject/** reject, the
    rest pin."""

    TOKEN = "truth-token-0123456789abcdef"
    SECRET = "truth-webhook-secret"
    # An OCI-only tool (oras, crane with OCI types): another accept class than containerd's.
    ACCEPT_OCI = f"{h.MEDIA_OCI_INDEX}, {h.MEDIA_OCI_MANIFEST}"
    # What clients sent when the issue measured 503 offline: */*, nothing, containerd's list.
    OTHER_ACCEPTS = ("*/*", None, h.ACCEPT_ALL_MANIFESTS)

    @classmethod
    def setUpClass(cls):
        cls.start_class_servers("truth-upstream", lambda host: dict(
            admin_tokens=[h.AdminToken("ops", cls.TOKEN)],
            policies=[h.PolicyRule(f"{host}/reject/**", "reject")],
            pin_checks=NO_BACKGROUND_CHECKS))

    def get_tag(self, repo: str, accept: Optional[str], method: str = "GET") -> h.Response:
        headers = {} if accept is None else {"Accept": accept}
        return self.regpin.request(method, h.with_query(f"/v2/{repo}/manifests/v1", ns=self.upstream.host), headers)

    def served(self, repo: str, accept: Optional[str]) -> str:
        resp = self.get_tag(repo, accept)
        self.assertEqual(resp.status, 200, f"Accept {accept!r}: {resp.body[:300]!r}")
        self.assertEqual(resp.header("Docker-Content-Digest"), h.sha256_digest(resp.body))
        return resp.header("Docker-Content-Digest")

    def push_v2s2(self, image: h.Image, repo: str) -> str:
        """`image` (one platform) pushed under repo:v1 as a Docker schema 2 manifest; its digest."""
        h.default_skopeo()("copy", "--format", "v2s2", "--dest-tls-verify=false", "--quiet",
                           f"oci:{self.layout.path}:{image.tag}", f"docker://{self.upstream.host}/{repo}:v1")
        digest = self.upstream.manifest_digest(repo, "v1", accept=h.MEDIA_DOCKER_MANIFEST)
        self.assertIsNotNone(digest)
        return digest

    def classes(self, repo: str) -> dict[int, dict]:
        return {p["accept_class"]: p for p in self.pin_doc(repo)["pins"]}

    def history(self, repo: str) -> list[dict]:
        return self.pin_doc(repo)["history"]

    def test_a_pin_answers_every_client_that_accepts_it_after_a_repush_and_with_the_upstream_down(self):
        repo = "truth/any-accept"
        first = self.image("truth-first", seed="truth-1", platforms=("linux/amd64", "linux/arm64"))
        second = self.image("truth-second", seed="truth-2", platforms=("linux/amd64", "linux/arm64"))
        self.push(first, repo)
        self.assertEqual(self.served(repo, self.ACCEPT_OCI), first.digest)
        self.push(second, repo)
        # Online, after the re-push: containerd and every other Accept get the pinned index.
        self.assertEqual(self.ctr_pull(repo), first.digest, "containerd after the re-push")
        for accept in self.OTHER_ACCEPTS:
            self.assertEqual(self.served(repo, accept), first.digest, f"Accept {accept!r} after the re-push")
            self.assertEqual(self.get_tag(repo, accept, "HEAD").header("Docker-Content-Digest"), first.digest)
        self.assertEqual(list(self.classes(repo)), [12], "no pin of another class was made")
        self.assert_history(self.history(repo), [("pinned", "first-pull")])

        # Offline: the same answers, from the one pin.
        self.upstream.stop()
        self.addCleanup(self.upstream.start)
        for accept in self.OTHER_ACCEPTS:
            self.assertEqual(self.served(repo, accept), first.digest, f"Accept {accept!r}, upstream down")
        self.assertEqual(self.ctr_pull(repo), first.digest, "containerd, upstream down")
        # A client that accepts none of the pinned types is not served something else.
        self.assertEqual(self.get_tag(repo, h.MEDIA_DOCKER_MANIFEST).status, 503)

    def test_a_one_platform_pin_gives_way_to_the_index_that_lists_it_and_holds_when_the_tag_moved(self):
        repo = "truth/one-platform"
        list1, child1 = self.push_docker_list(repo, "truth-list-1")
        self.assertEqual(self.served(repo, h.MEDIA_DOCKER_MANIFEST), child1)
        # containerd accepts lists: the upstream's list of the same image is pinned for it.
        self.assertEqual(self.ctr_pull(repo), list1)
        self.assertEqual(sorted(self.classes(repo)), [1, 15])
        self.assert_history(self.history(repo), [("pinned", "first-pull"), ("pinned", "first-pull")])

        moved = "truth/one-platform-moved"
        list1, child1 = self.push_docker_list(moved, "truth-list-3")
        self.assertEqual(self.served(moved, h.MEDIA_DOCKER_MANIFEST), child1)
        list2, child2 = self.push_docker_list(moved, "truth-list-4")
        # The upstream's list is another image now: containerd gets the pinned manifest, no new pin.
        self.assertEqual(self.ctr_pull(moved), child1)
        self.assertEqual(list(self.classes(moved)), [1])

    def test_another_image_for_a_new_accept_class_is_recorded_alerted_and_rejected_by_policy(self):
        for repo, policy in (("truth/diverged", "pin"), ("reject/truth-diverged", "reject")):
            with self.subTest(policy=policy):
                first = self.image(f"diverged-first-{policy}", seed=f"diverged-1-{policy}",
                                   platforms=("linux/amd64", "linux/arm64"))
                other = self.image(f"diverged-other-{policy}", seed=f"diverged-2-{policy}")
                self.push(first, repo)
                self.assertEqual(self.ctr_pull(repo), first.digest)
                # The tag re-pushed as a Docker schema 2 manifest of another image: the pinned
                # OCI index is nothing a Docker-only client accepts.
                docker = self.push_v2s2(other, repo)
                resp = self.get_tag(repo, h.MEDIA_DOCKER_MANIFEST)
                if policy == "pin":
                    self.assertEqual(resp.status, 200, resp.body[:300])
                    self.assertEqual(resp.header("Docker-Content-Digest"), docker)
                else:
                    self.assertEqual(resp.status, 403, resp.body[:300])
                    self.assertIn(b"DENIED", resp.body)
                pins = self.classes(repo)
                self.assertEqual(pins[15]["digest"], first.digest, "containerd's pin is untouched")
                self.assertEqual((pins[1]["digest"], pins[1]["state"]),
                                 (docker, "pinned" if policy == "pin" else "rejected"))
                event = self.history(repo)[-1]
                self.assertEqual({k: event[k] for k in ("type", "accept_class", "old_digest", "new_digest",
                                                        "actor", "policy", "action")},
                                 {"type": "repointed", "accept_class": 1, "old_digest": first.digest,
                                  "new_digest": docker, "actor": "first-pull", "policy": policy,
                                  "action": "diverged"})
                alert = self.assert_signed_alert(self.wait_alert(event["id"]), event)
                self.assertEqual(alert["action"], "diverged")
                self.assertEqual(self.ctr_pull(repo), first.digest, "containerd still gets the first pin")
                if policy == "reject":
                    self.api("POST", "/api/v1/pin/approve", self.target(repo))
                    self.assertEqual(self.served(repo, h.MEDIA_DOCKER_MANIFEST), docker)


# ------------------------------------------------------------------------------------------------
# 4. background checks
# ------------------------------------------------------------------------------------------------


class BackgroundCheckTest(PinLifecycleTestCase):
    """revalidate_after_s 0 and no sweep: a request for a pinned tag starts the only check."""

    @classmethod
    def setUpClass(cls):
        cls.upstream = h.Registry("background-upstream").start()
        cls.addClassCleanup(cls.upstream.close)
        cls.layout = cls.new_layout(cls.addClassCleanup)
        cls.regpin = h.Regpin([h.Upstream.of(cls.upstream.host, cls.upstream)],
                              admin_tokens=[h.AdminToken("ops", "background-token-0123456789")],
                              pin_checks=h.PinChecks(revalidate_after_s=0, sweep_interval_s=86400))
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()

    def test_a_request_for_a_pinned_tag_is_answered_with_the_pin_and_detects_the_repoint_in_the_background(self):
        repo = "bg/app"
        first = h.make_image(self.layout, "bg-first", seed="bg-1")
        second = h.make_image(self.layout, "bg-second", seed="bg-2")
        h.push(self.layout, f"{repo}:v1", self.upstream, source_tag=first.tag)
        self.assertEqual(self.served_digest(repo), first.digest)  # the first pull pins
        h.push(self.layout, f"{repo}:v1", self.upstream, source_tag=second.tag)
        self.assertEqual(self.upstream.manifest_digest(repo, "v1"), second.digest)
        after = self.last_event_id()
        self.assertEqual(h.metric_value(self.metrics(), "regpin_pin_checks_total"), 0, "no check before the request")

        self.assertEqual(self.served_digest(repo), first.digest, "the request that starts the check")

        def repointed() -> Optional[dict]:
            events = self.api("GET", f"/api/v1/events?after={after}&wait_s=2").json()["events"]
            return next((e for e in events if e["type"] == "repointed" and e["reference"] == self.ref(repo)), None)

        event = h.wait_until(repointed, timeout=15, interval=0.05, message="a repointed event from the background")
        self.assert_repoint_event(event, repo, first.digest, second.digest, "pin", "kept")
        pin = self.the_pin(repo)
        self.assertEqual((pin["state"], pin["digest"], pin["pending_digest"]), ("pending", first.digest, second.digest))
        self.assertEqual(self.served_digest(repo), first.digest, "policy pin keeps serving the pin")
        self.assertEqual(h.metric_value(self.metrics(), "regpin_repoints_total", registry=self.upstream.host,
                                      policy="pin"), 1)


    def test_with_a_hung_upstream_the_pinned_answer_does_not_wait_for_its_background_check(self):
        # Own upstream and regpin: this test hangs the upstream.
        self.upstream = h.Registry("hung-upstream").start()
        self.addCleanup(self.upstream.close)
        repo = "hung/app"
        first = h.make_image(self.layout, "hung-first", seed="hung-1")
        h.push(self.layout, f"{repo}:v1", self.upstream, source_tag=first.tag)
        self.regpin = h.Regpin([h.Upstream.of(self.upstream.host, self.upstream, read_timeout_ms=2000)],
                               admin_tokens=[h.AdminToken("ops", "hung-token-0123456789abcd")],
                               pin_checks=h.PinChecks(revalidate_after_s=0, sweep_interval_s=86400))
        self.addCleanup(self.regpin.close)
        self.regpin.start()
        self.assertEqual(self.served_digest(repo), first.digest)
        self.upstream.stop()
        silent = h.SilentServer(self.upstream.port)
        self.addCleanup(silent.close)

        for _ in range(5):
            started = time.monotonic()
            self.assertEqual(self.served_digest(repo), first.digest)
            # An answer that waited for the hung upstream takes at least read_timeout_ms (2 s).
            self.assertLess(time.monotonic() - started, 2.0, "a pinned answer waited for the upstream")

        host = self.upstream.host
        h.wait_until(lambda: h.metric_value(self.metrics(), "regpin_pin_checks_total", registry=host, outcome="error") >= 1,
                     timeout=15, interval=0.05, message="the background check to time out")
        # A forced check times out as well; by then any other background check started by the
        # five requests would have timed out too: there was one, the pin key's only one.
        result = self.check(repo)
        self.assertEqual(result["outcome"], "error", result)
        self.assertTrue(result["error"], result)
        text = self.metrics()
        self.assertEqual(h.metric_value(text, "regpin_pin_checks_total", registry=host, outcome="error"), 2)
        self.assertGreaterEqual(h.metric_value(text, "regpin_upstream_errors_total", registry=host), 2)
        pin = self.the_pin(repo)
        self.assertEqual((pin["state"], pin["digest"], pin["pending_digest"]), ("pinned", first.digest, None))


def start_sweeping_regpin(cls, name: str, sweep_batch: int) -> None:
    """An upstream, a layout and a regpin whose sweep runs every second with `sweep_batch`;
    pins under **/follow/** are due at once (revalidate_after 0), the others after an hour."""
    cls.upstream = h.Registry(f"{name}-upstream").start()
    cls.addClassCleanup(cls.upstream.close)
    cls.layout = cls.new_layout(cls.addClassCleanup)
    cls.regpin = h.Regpin([h.Upstream.of(cls.upstream.host, cls.upstream)],
                          admin_tokens=[h.AdminToken("ops", f"{name}-token-0123456789abc")],
                          policies=[h.PolicyRule("**/follow/**", "follow", revalidate_after_s=0)],
                          pin_checks=h.PinChecks(revalidate_after_s=3600, sweep_interval_s=1, sweep_batch=sweep_batch))
    cls.addClassCleanup(cls.regpin.close)
    cls.regpin.start()


def expect_the_sweep_follows(test, repo: str, first: h.Image, second: h.Image, timeout: float) -> None:
    """With no request for it, the sweep records the re-point of `repo:v1` from `first` to
    `second` (policy follow) within `timeout`, and regpin serves `second` from then on."""

    def repointed() -> Optional[dict]:
        events = test.api("GET", "/api/v1/events?after=0&wait_s=2").json()["events"]
        return next((e for e in events if e["type"] == "repointed"), None)

    event = h.wait_until(repointed, timeout=timeout, interval=0.05, message="a repointed event from the sweep")
    test.assert_repoint_event(event, repo, first.digest, second.digest, "follow", "followed")
    test.assertEqual(test.served_digest(repo), second.digest)


class SweepTest(PinLifecycleTestCase):
    """The periodic sweep (every second here) finds a re-point nobody asked about."""

    @classmethod
    def setUpClass(cls):
        start_sweeping_regpin(cls, "sweep", sweep_batch=10)

    def test_the_sweep_detects_a_repoint_of_a_pin_due_by_its_rule_without_any_request(self):
        repo = "team/follow/app"
        first = h.make_image(self.layout, "sweep-first", seed="sweep-1")
        second = h.make_image(self.layout, "sweep-second", seed="sweep-2")
        h.push(self.layout, f"{repo}:v1", self.upstream, source_tag=first.tag)
        self.assertEqual(self.served_digest(repo), first.digest)
        h.push(self.layout, f"{repo}:v1", self.upstream, source_tag=second.tag)
        expect_the_sweep_follows(self, repo, first, second, timeout=15)


class SweepCursorTest(PinLifecycleTestCase):
    """A sweep reads a page of 4 * sweep_batch pins from where the last one stopped: with
    sweep_batch 1, the pin due by its rule sorts after a full page of pins that are not due."""

    @classmethod
    def setUpClass(cls):
        start_sweeping_regpin(cls, "cursor", sweep_batch=1)

    def test_the_sweep_reaches_a_due_pin_beyond_the_first_page_and_comes_round_again(self):
        first = h.make_image(self.layout, "cursor-first", seed="cursor-1")
        second = h.make_image(self.layout, "cursor-second", seed="cursor-2")
        for tag in ("a", "b", "c", "d", "e"):
            h.push(self.layout, f"team/keep/app:{tag}", self.upstream, source_tag=first.tag)
            self.assertEqual(self.served_digest("team/keep/app", tag), first.digest)
        repo = "team/z/follow/app"  # sorts after team/keep/app
        h.push(self.layout, f"{repo}:v1", self.upstream, source_tag=first.tag)
        self.assertEqual(self.served_digest(repo), first.digest)
        h.push(self.layout, f"{repo}:v1", self.upstream, source_tag=second.tag)
        expect_the_sweep_follows(self, repo, first, second, timeout=20)
        self.assertEqual(self.the_pin("team/keep/app", "e")["digest"], first.digest)


# ------------------------------------------------------------------------------------------------
# 5. alerts survive a receiver that is down, and a restart
# ------------------------------------------------------------------------------------------------


class AlertDurabilityTest(PinLifecycleTestCase):
    """Each test: its own upstream, regpin (fresh data dir) and webhook port."""

    TOKEN = "durable-token-0123456789abc"

    def setUp(self):
        self.upstream = h.Registry("durable-upstream").start()
        self.addCleanup(self.upstream.close)
        self.layout = self.new_layout(self.addCleanup)
        self.secret = "durable-webhook-secret-" + self.id().rsplit(".", 1)[-1][:20]
        self.receiver = WebhookReceiver()  # not started: nothing listens on its port yet
        self.addCleanup(self.receiver.stop)

    def start_regpin(self, webhook: h.Webhook, env: Optional[dict] = None) -> None:
        self.regpin = h.Regpin([h.Upstream.of(self.upstream.host, self.upstream)], env=env,
                               admin_tokens=[h.AdminToken("ops", self.TOKEN)], webhooks=[webhook],
                               pin_checks=NO_BACKGROUND_CHECKS)
        self.addCleanup(self.regpin.close)
        self.regpin.start()

    def repoint(self, repo: str) -> dict:
        first = h.make_image(self.layout, "first", seed=f"{repo}-1")
        second = h.make_image(self.layout, "second", seed=f"{repo}-2")
        h.push(self.layout, f"{repo}:v1", self.upstream, source_tag=first.tag)
        self.assertEqual(self.served_digest(repo), first.digest)
        h.push(self.layout, f"{repo}:v1", self.upstream, source_tag=second.tag)
        result = self.check(repo)
        self.assertEqual(result["outcome"], "repointed", result)
        return result["events"][0]

    def deliveries_metric(self, result: str) -> float:
        return h.metric_value(self.metrics(), "regpin_webhook_deliveries_total", result=result)

    def test_an_alert_queued_while_the_receiver_is_down_survives_a_restart_and_arrives_exactly_once(self):
        secret_file = f"{self.layout.path}/webhook-secret"
        with open(secret_file, "w") as f:
            f.write(self.secret + "\n")
        self.start_regpin(h.Webhook(self.receiver.url, secret_file=secret_file, timeout_ms=1000))
        event = self.repoint("durable/app")
        h.wait_until(lambda: self.deliveries_metric("failed") >= 1, timeout=15, interval=0.05,
                     message="a failed delivery attempt (nothing listens on the webhook port)")
        self.assertEqual(h.metric_value(self.metrics(), "regpin_webhook_queue"), 1)

        self.regpin.stop()
        self.regpin.start()

        self.assertEqual(h.metric_value(self.metrics(), "regpin_webhook_queue"), 1, "the outbox after the restart")
        self.assertEqual([e["id"] for e in self.events() if e["type"] == "repointed"], [event["id"]])
        self.assertEqual(self.receiver.deliveries(), [])
        self.receiver.start()
        # Attempts back off (1 s, 2 s, 4 s, ...) and an entry is due after its next_attempt time.
        delivery = self.wait_alert(event["id"], timeout=40)
        self.assert_signed_alert(delivery, event)
        self.wait_queue_empty()
        self.assertEqual(len(self.receiver.deliveries()), 1,
                         [(d.event_id, d.status) for d in self.receiver.deliveries()])
        self.assertEqual(self.deliveries_metric("ok"), 1)

    def test_an_alert_answered_500_is_retried_with_the_same_signed_body_until_a_2xx(self):
        self.receiver.statuses = [500, 200]
        self.receiver.start()
        self.start_regpin(h.Webhook(self.receiver.url, secret_env="REGPIN_IT_WEBHOOK_SECRET"),
                          env={"REGPIN_IT_WEBHOOK_SECRET": self.secret})
        event = self.repoint("retried/app")

        h.wait_until(lambda: self.receiver.accepted(event["id"]), timeout=20, interval=0.05,
                     message="the retry after a 500")
        self.wait_queue_empty()
        got = self.receiver.deliveries(event["id"])
        self.assertEqual([d.status for d in got], [500, 200])
        self.assertEqual(got[0].body, got[1].body, "a retry sends the same alert")
        for d in got:
            self.assert_signed_alert(d, event)
        self.assertEqual(len(self.receiver.deliveries()), 2)
        self.assertEqual((self.deliveries_metric("failed"), self.deliveries_metric("ok")), (1, 1))

    def test_a_webhook_redirect_is_a_failed_delivery_and_the_alert_never_goes_to_the_redirect_target(self):
        elsewhere = WebhookReceiver().start()
        self.addCleanup(elsewhere.stop)
        self.receiver.statuses = [307, 200]
        self.receiver.location = elsewhere.url
        self.receiver.start()
        self.start_regpin(h.Webhook(self.receiver.url, secret=self.secret))
        event = self.repoint("redirected/app")

        h.wait_until(lambda: self.receiver.accepted(event["id"]), timeout=20, interval=0.05,
                     message="the retry after the redirect, to the configured URL")
        self.wait_queue_empty()
        self.assertEqual([d.status for d in self.receiver.deliveries(event["id"])], [307, 200])
        self.assertEqual(elsewhere.deliveries(), [], "the alert was re-POSTed to the redirect target")
        self.assertEqual((self.deliveries_metric("failed"), self.deliveries_metric("ok")), (1, 1))


# ------------------------------------------------------------------------------------------------
# 7. the metrics exposition
# ------------------------------------------------------------------------------------------------


class MetricsExpositionTest(PinLifecycleTestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = h.Registry("metrics-upstream").start()
        cls.addClassCleanup(cls.upstream.close)
        cls.layout = cls.new_layout(cls.addClassCleanup)
        cls.receiver = WebhookReceiver().start()
        cls.addClassCleanup(cls.receiver.stop)
        cls.secret = "metrics-webhook-secret"
        cls.regpin = h.Regpin([h.Upstream.of(cls.upstream.host, cls.upstream)],
                              admin_tokens=[h.AdminToken("ops", "metrics-token-0123456789ab")],
                              webhooks=[h.Webhook(cls.receiver.url, secret=cls.secret)],
                              pin_checks=NO_BACKGROUND_CHECKS)
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()

    def test_the_metrics_exposition_passes_promtool_check_metrics_with_every_family_typed(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool not found: install the Debian package `prometheus`")
        repo = "metrics/app"
        first = h.make_image(self.layout, "m-first", seed="metrics-1")
        second = h.make_image(self.layout, "m-second", seed="metrics-2")
        h.push(self.layout, f"{repo}:v1", self.upstream, source_tag=first.tag)
        self.assertEqual(self.served_digest(repo), first.digest)
        blob = self.regpin.get(h.with_query(f"/v2/{repo}/blobs/{first.layer_digests[0]}", ns=self.upstream.host))
        self.assertEqual(blob.status, 200)
        self.assertEqual(self.manifest_via_regpin(repo, "missing").status, 404)
        self.assertEqual(self.regpin.get(h.with_query("/v2/nowhere/app/manifests/v1", ns="nowhere.test")).status, 404)
        h.push(self.layout, f"{repo}:v1", self.upstream, source_tag=second.tag)
        event = self.check(repo)["events"][0]
        self.wait_alert(event["id"])
        self.wait_queue_empty()

        text = self.metrics()
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                                timeout=30)
        self.assertEqual(result.returncode, 0, f"promtool check metrics:\n{result.stdout}{result.stderr}\n"
                                               f"--- exposition ---\n{text}")
        self.assertEqual(result.stdout + result.stderr, "", "promtool found problems")
        types = h.metric_types(text)
        expected = {
            "regpin_requests_total": "counter", "regpin_cache_requests_total": "counter",
            "regpin_served_bytes_total": "counter", "regpin_request_duration_seconds": "histogram",
            "regpin_upstream_requests_total": "counter", "regpin_upstream_request_duration_seconds": "histogram",
            "regpin_pin_checks_total": "counter", "regpin_repoints_total": "counter", "regpin_pins": "gauge",
            "regpin_pins_pending": "gauge", "regpin_webhook_deliveries_total": "counter",
            "regpin_webhook_queue": "gauge",
        }
        self.assertEqual({k: types.get(k) for k in expected}, expected, text)
        host = self.upstream.host
        self.assertGreaterEqual(h.metric_value(text, "regpin_requests_total", route="manifest", status="200"), 1)
        self.assertGreaterEqual(h.metric_value(text, "regpin_requests_total", route="manifest", status="404"), 1)
        self.assertGreaterEqual(h.metric_value(text, "regpin_cache_requests_total", route="manifest", result="miss"), 1)
        self.assertGreaterEqual(h.metric_value(text, "regpin_served_bytes_total", route="blob"), len(first.blobs[first.layer_digests[0]]))
        self.assertEqual(h.metric_value(text, "regpin_repoints_total", registry=host, policy="pin"), 1)
        self.assertEqual(h.metric_value(text, "regpin_pin_checks_total", registry=host, outcome="repointed"), 1)
        self.assertEqual((h.metric_value(text, "regpin_pins"), h.metric_value(text, "regpin_pins_pending")), (1, 1))
        self.assertEqual(h.metric_value(text, "regpin_webhook_deliveries_total", result="ok"), 1)
        self.assertGreaterEqual(h.metric_value(text, "regpin_upstream_requests_total", registry=host, status="200"), 2)
        self.assertEqual(h.metric_value(text, "regpin_request_duration_seconds_count", route="manifest"),
                         h.metric_value(text, "regpin_requests_total", route="manifest"))


if __name__ == "__main__":
    unittest.main()
