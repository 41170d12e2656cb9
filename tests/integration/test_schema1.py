"""Signed Docker schema 1 manifests (issue 18, point 1).

Distribution answers a client that accepts only OCI types, for an image pushed as Docker schema
2, with a schema 1 manifest it signs itself (`application/vnd.docker.distribution.manifest.v1+prettyjws`).
Its Docker-Content-Digest names the JWS payload (the body without its `signatures` section, as
the protected header's formatLength and formatTail describe it), not the body. regpin verifies
it that way, caches it, pins it, and serves it with the upstream stopped. A forged signed
manifest (a payload that is not what the digest names) is refused and never cached.

Run with, e.g.: cd tests/integration && /usr/bin/python3 -m unittest test_schema1 -v
"""

from __future__ import annotations

import base64
import hashlib
import json

import harness as h
from test_pin_lifecycle import PinLifecycleTestCase

PRETTYJWS = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_ONLY = f"{h.MEDIA_OCI_MANIFEST}, application/vnd.oci.image.index.v1+json"


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def jws_payload(body: bytes) -> bytes:
    """The signed payload of a prettyjws manifest, as the format defines it (written here from
    the format, independently of regpin's code)."""
    (sig, *_) = json.loads(body)["signatures"]
    header = json.loads(b64url_decode(sig["protected"]))
    return body[:header["formatLength"]] + b64url_decode(header["formatTail"])


class Schema1Test(PinLifecycleTestCase):
    SECRET = "schema1-webhook-secret"

    @classmethod
    def setUpClass(cls):
        cls.start_class_servers("schema1-upstream", lambda host: dict(
            admin_tokens=[h.AdminToken("ops", "schema1-ops-token-0123456789")]))

    def push_v2s2(self, image: h.Image, repo: str) -> None:
        h.default_skopeo()("copy", "--format", "v2s2", "--dest-tls-verify=false", "--quiet",
                           f"oci:{self.layout.path}:{image.tag}", f"docker://{self.upstream.host}/{repo}:v1")

    def test_a_signed_schema1_manifest_is_verified_by_its_payload_cached_pinned_and_served_offline(self):
        repo = "legacy/app"
        self.push_v2s2(self.image("legacy-app", seed="legacy-app"), repo)
        up = self.upstream.request("GET", f"/v2/{repo}/manifests/v1", {"Accept": OCI_ONLY})
        self.assertEqual((up.status, up.header("Content-Type")), (200, PRETTYJWS), up.body[:300])
        digest = up.header("Docker-Content-Digest")
        self.assertNotEqual(digest, h.sha256_digest(up.body), "the digest names the payload, not the body")
        self.assertEqual(digest, "sha256:" + hashlib.sha256(jws_payload(up.body)).hexdigest())

        # Through regpin: the same digest and media type, by tag and by digest; pinned.
        resp = self.regpin.request("GET", h.with_query(f"/v2/{repo}/manifests/v1", ns=self.upstream.host),
                                   {"Accept": OCI_ONLY})
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual((resp.header("Docker-Content-Digest"), resp.header("Content-Type")), (digest, PRETTYJWS))
        self.assertEqual("sha256:" + hashlib.sha256(jws_payload(resp.body)).hexdigest(), digest)
        by_digest = self.regpin.request("GET", h.with_query(f"/v2/{repo}/manifests/{digest}", ns=self.upstream.host),
                                        {"Accept": OCI_ONLY})
        self.assertEqual((by_digest.status, by_digest.body), (200, resp.body))
        (pin,) = [p for p in self.pin_doc(repo)["pins"] if p["media_type"] == PRETTYJWS]
        self.assertEqual((pin["digest"], pin["state"]), (digest, "pinned"))

        # Re-hashing what is stored finds it sound (the scrub knows the format too).
        verify = self.regpin.cli("verify")
        self.assertEqual(verify.returncode, 0, verify.stdout + verify.stderr)

        # The upstream stops: the pinned tag and the digest are served from the cache.
        self.upstream.stop()
        self.addCleanup(self.upstream.start)
        offline = self.regpin.request("GET", h.with_query(f"/v2/{repo}/manifests/v1", ns=self.upstream.host),
                                      {"Accept": OCI_ONLY})
        self.assertEqual((offline.status, offline.header("Docker-Content-Digest"), offline.body),
                         (200, digest, resp.body))
        offline = self.regpin.request("HEAD", h.with_query(f"/v2/{repo}/manifests/{digest}", ns=self.upstream.host),
                                      {"Accept": OCI_ONLY})
        self.assertEqual((offline.status, offline.header("Content-Type")), (200, PRETTYJWS))


class ForgedSchema1Test(PinLifecycleTestCase):
    """A scripted upstream serving signed schema 1 manifests whose payload is not what the
    digest names: refused (503), not cached, not pinned."""

    SECRET = "schema1-forged-secret"

    @classmethod
    def setUpClass(cls):
        payload = json.dumps({"schemaVersion": 1, "name": "forged/app", "tag": "v1", "architecture": "amd64",
                              "fsLayers": [], "history": []}, indent=3).encode()
        body_good = cls.sign(payload)
        cls.good_digest = "sha256:" + hashlib.sha256(payload).hexdigest()
        # The same signatures, with a body changed before formatLength: its payload differs.
        cls.forged = body_good.replace(b'"amd64"', b'"arm64"')
        # Signatures that describe no payload (a formatLength past the end).
        cls.broken = cls.sign(payload, length=len(payload) * 10)

        def handler(req: h.RecordedRequest) -> h.Reply:
            body = {"/v2/forged/app/manifests/v1": cls.forged,
                    "/v2/forged/broken/manifests/v1": cls.broken}.get(req.path)
            if body is None:
                return h.Reply(404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            return h.Reply(200, {"Content-Type": PRETTYJWS, "Docker-Content-Digest": cls.good_digest}, body)

        cls.upstream = h.ScriptedHTTPServer(handler).start()
        cls.addClassCleanup(cls.upstream.close)
        cls.regpin = h.Regpin([h.Upstream(cls.upstream.host, cls.upstream.url)],
                              admin_tokens=[h.AdminToken("ops", "schema1-ops-token-0123456789")])
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()

    @staticmethod
    def sign(payload: bytes, length: int | None = None) -> bytes:
        """A prettyjws body the way Distribution lays it out: the payload up to its closing
        brace, a signatures section, then the tail; the signature bytes themselves are not part
        of the digest and are not checked by clients that verify digests."""
        cut = payload.rindex(b"\n}")
        header = {"formatLength": cut if length is None else length, "formatTail": b64url(payload[cut:]),
                  "time": "2026-12-05T00:00:00Z"}
        sig = {"header": {"alg": "ES256"}, "signature": "c2ln", "protected": b64url(json.dumps(header).encode())}
        return payload[:cut] + b',\n   "signatures": ' + json.dumps([sig]).encode() + payload[cut:]

    def test_a_payload_that_is_not_the_digest_is_refused_and_never_cached(self):
        for repo in ("forged/app", "forged/broken"):
            with self.subTest(repo=repo):
                path = h.with_query(f"/v2/{repo}/manifests/v1", ns=self.upstream.host)
                resp = self.regpin.request("GET", path, {"Accept": OCI_ONLY})
                self.assertEqual(resp.status, 503, resp.body[:300])
                self.assertEqual(json.loads(resp.body)["errors"][0]["code"], "UNAVAILABLE")
                by_digest = self.regpin.request("GET", h.with_query(f"/v2/{repo}/manifests/{self.good_digest}",
                                                                    ns=self.upstream.host), {"Accept": OCI_ONLY})
                self.assertNotEqual(by_digest.status, 200, "a forged manifest was cached")
        pins = json.loads(self.regpin.admin_request("GET", "/api/v1/pins").body)["pins"]
        self.assertEqual(pins, [])
        self.assertIn("does not hash to", self.regpin.log())


if __name__ == "__main__":
    import unittest
    unittest.main()
