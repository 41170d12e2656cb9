"""TLS on regpin's own listeners (issue 5): `tls` on the registry API and `admin.tls` on the
admin API, with certificates from a throwaway CA (openssl CLI, harness.CertificateAuthority).

Real clients pull through regpin over HTTPS: skopeo (`--src-cert-dir` holding the CA) and
containerd (hosts.toml `ca = "<ca.pem>"` for an `https://127.0.0.1:PORT` host), from a real
docker-registry upstream; clients that do not trust the CA fail. `openssl s_client` shows that
TLS 1.0 and 1.1 are refused while 1.2 and 1.3 work; a control `openssl s_server` proves that
this s_client can speak TLS 1.0/1.1 at all (security level 0), so the refusal is regpin's.

    REGPIN_BIN=../../build/regpin python3 -m unittest -v test_tls_listeners
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import unittest
from pathlib import Path

import harness as h
from test_pull_through import RegpinTestCase

TOKEN = "tls-admin-token-0123456789abcdef"
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"  # lets this s_client offer TLS 1.0/1.1 at all


def s_client(host: str, *args: str) -> subprocess.CompletedProcess:
    """`openssl s_client -connect HOST -brief ARGS` with stdin closed: handshakes, then quits."""
    return subprocess.run(["openssl", "s_client", "-connect", host, "-brief", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)


def negotiated(result: subprocess.CompletedProcess) -> str:
    """The protocol s_client reports ("TLSv1.3"), or "" when the handshake failed."""
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith("Protocol version:"):
            return line.split(":", 1)[1].strip()
    return ""


class TlsListenerTest(RegpinTestCase):
    @classmethod
    def setUpClass(cls):
        cls.ca = h.CertificateAuthority("regpin-listener-test-ca")
        cls.addClassCleanup(cls.ca.close)
        cls.cert = cls.ca.issue("regpin-registry", ips=("127.0.0.1",))
        cls.admin_cert = cls.ca.issue("regpin-admin", ips=("127.0.0.1",))
        cls.upstream = h.Registry("tls-listener-upstream").start()
        cls.addClassCleanup(cls.upstream.close)
        cls.layout = h.OciLayout(tempfile.mkdtemp(prefix="regpin-it-layout-"))
        cls.addClassCleanup(h.remove_temp_dir, str(cls.layout.path))
        cls.image = h.make_image(cls.layout, "app", seed="tls-listener-app", layer_sizes=(64 * 1024, 4096))
        cls.index = h.make_image(cls.layout, "multi", seed="tls-listener-multi",
                                 platforms=("linux/amd64", "linux/arm64"))
        h.push(cls.layout, "team/app:v1", cls.upstream, source_tag="app")
        h.push(cls.layout, "team/multi:v1", cls.upstream, source_tag="multi")
        cls.regpin = h.Regpin([h.Upstream.of(cls.upstream.host, cls.upstream)], tls=cls.cert,
                              admin_tls=cls.admin_cert, admin_tokens=[h.AdminToken("ops", TOKEN)])
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()
        cls.dir = h.make_temp_dir("tls-clients")
        cls.addClassCleanup(h.remove_temp_dir, cls.dir)
        cls.cert_dir = os.path.join(cls.dir, "certs")  # skopeo: *.crt files are CAs
        os.mkdir(cls.cert_dir)
        shutil.copy(cls.ca.cert_path, os.path.join(cls.cert_dir, "regpin-ca.crt"))

    def test_the_listeners_speak_https(self):
        self.assertTrue(self.regpin.url.startswith("https://"))
        self.assertTrue(self.regpin.admin_url.startswith("https://"))
        self.assertRegex(self.regpin.log(), r"serving the registry API on https://127\.0\.0\.1:%d" % self.regpin.port)

    def test_a_client_trusting_the_ca_pulls_manifest_and_blobs_over_https(self):
        resp = self.regpin.get("/v2/team/app/manifests/v1", {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, self.image.digest))
        for d in self.image.layer_digests + self.image.config_digests:
            resp = self.regpin.get(f"/v2/team/app/blobs/{d}")
            self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, d))

    def test_skopeo_with_the_ca_in_its_cert_dir_copies_through_regpin_with_the_right_digests(self):
        skopeo = h.Skopeo()
        self.addCleanup(skopeo.close)
        for repo, image in (("team/app", self.image), ("team/multi", self.index)):
            with self.subTest(repo=repo):
                out = os.path.join(self.dir, f"skopeo-{repo.replace('/', '-')}")
                digest = skopeo.copy_to_oci(f"docker://{self.regpin.host}/{repo}:v1", out, "copied",
                                            "--src-cert-dir", self.cert_dir, "--src-tls-verify=true")
                self.assertEqual(digest, image.digest)
                blobs = {"sha256:" + p.name for p in (Path(out) / "blobs" / "sha256").iterdir()}
                self.assertEqual(set(image.blobs) - blobs, set(), "blobs missing from the copy")

    def test_skopeo_without_the_ca_fails_on_the_certificate(self):
        skopeo = h.Skopeo()
        self.addCleanup(skopeo.close)
        result = skopeo("inspect", "--raw", "--tls-verify=true", f"docker://{self.regpin.host}/team/app:v1",
                        check=False, timeout=60)
        self.assertNotEqual(result.returncode, 0, result.stdout[:300])
        self.assertRegex(result.stderr, r"(?i)x509|certificate")

    def test_containerd_with_the_ca_in_hosts_toml_pulls_through_regpin_over_https(self):
        containerd = h.Containerd().start()
        self.addCleanup(containerd.close)
        mirror = self.regpin.url
        registry_dir = Path(containerd.hosts_dir) / self.upstream.host
        registry_dir.mkdir(parents=True)
        (registry_dir / "hosts.toml").write_text(
            f'server = "{mirror}"\n\n[host."{mirror}"]\n  capabilities = ["pull", "resolve"]\n'
            f'  ca = "{self.ca.cert_path}"\n')
        ref = f"{self.upstream.host}/team/app:v1"
        containerd.pull(ref)
        self.assertEqual(containerd.image_digest(ref), self.image.digest)
        self.assertEqual(set(self.image.blobs) - containerd.content_digests(), set())

        # The same mirror without the CA: containerd refuses the certificate.
        untrusting = Path(containerd.dir) / "certs-no-ca" / self.upstream.host
        untrusting.mkdir(parents=True)
        (untrusting / "hosts.toml").write_text(
            f'server = "{mirror}"\n\n[host."{mirror}"]\n  capabilities = ["pull", "resolve"]\n')
        containerd.forget_everything()
        result = containerd.ctr("images", "pull", "--hosts-dir", str(untrusting.parent),
                                "--snapshotter", containerd.SNAPSHOTTER, ref, check=False, timeout=60)
        self.assertNotEqual(result.returncode, 0, result.stdout[-500:])
        self.assertRegex(result.stdout + result.stderr, r"(?i)x509|certificate")

    def test_a_client_that_does_not_trust_the_ca_fails_the_handshake(self):
        for host in (self.regpin.host, self.regpin.admin_host):
            with self.subTest(host=host):
                with self.assertRaises(ssl.SSLCertVerificationError):
                    h.http_request(host, "GET", "/v2/", timeout=10, ssl_context=ssl.create_default_context())

    def test_plain_http_on_a_tls_listener_gets_no_answer_from_the_api(self):
        for host, path in ((self.regpin.host, "/v2/team/app/manifests/v1"), (self.regpin.admin_host, "/api/v1/pins")):
            with self.subTest(host=host):
                try:
                    resp = h.http_request(host, "GET", path, {"Authorization": f"Bearer {TOKEN}"}, timeout=10)
                except (OSError, http.client.HTTPException):
                    continue  # closed: fine
                self.assertNotEqual(resp.status, 200, resp.body[:300])
                self.assertNotIn(b"schemaVersion", resp.body)
        self.assertTrue(self.regpin.running)

    def test_tls_1_0_and_1_1_are_refused_and_tls_1_2_and_1_3_are_accepted(self):
        for host in (self.regpin.host, self.regpin.admin_host):
            for flag in ("-tls1", "-tls1_1"):
                with self.subTest(host=host, version=flag):
                    result = s_client(host, flag, "-cipher", LEGACY_CIPHERS)
                    self.assertEqual(negotiated(result), "", result.stdout + result.stderr)
                    self.assertNotEqual(result.returncode, 0, result.stdout + result.stderr)
            for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
                with self.subTest(host=host, version=flag):
                    result = s_client(host, flag, "-CAfile", self.ca.cert_path, "-verify_return_error",
                                      "-verify_ip", "127.0.0.1")
                    self.assertEqual(negotiated(result), version, result.stdout + result.stderr)
                    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_control_this_s_client_can_speak_tls_1_0_and_1_1_to_a_server_that_allows_them(self):
        port = h.free_port()
        server = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", self.cert.cert_path,
             "-key", self.cert.key_path, "-cipher", LEGACY_CIPHERS],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # stdin kept open
        self.addCleanup(lambda: (server.kill(), server.wait(timeout=10), server.stdin.close()))
        h.wait_until(lambda: s_client_connects(port), timeout=10, message="openssl s_server listening")
        for flag, version in (("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")):
            with self.subTest(version=flag):
                result = s_client(f"127.0.0.1:{port}", flag, "-cipher", LEGACY_CIPHERS)
                self.assertEqual(negotiated(result), version, result.stdout + result.stderr)

    def test_the_admin_api_works_over_https_with_the_token_and_refuses_without_it(self):
        self.assertEqual(self.regpin.admin_request("GET", "/healthz", token=None).status, 200)
        resp = self.regpin.admin_request("GET", "/api/v1/pins")
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertIn("pins", resp.json())
        self.assertEqual(self.regpin.admin_request("GET", "/api/v1/pins", token=None).status, 401)
        self.assertEqual(self.regpin.admin_request("GET", "/api/v1/pins", token="wrong-token-0123456789").status, 401)
        self.assertIn("regpin_requests_total", self.regpin.metrics_text())
        # A pin made over HTTPS shows up in the API over HTTPS.
        self.assertEqual(self.regpin.head("/v2/team/app/manifests/v1", {"Accept": h.ACCEPT_ALL_MANIFESTS}).status, 200)
        pins = self.regpin.admin_request("GET", "/api/v1/pins").json()["pins"]
        self.assertIn(self.image.digest, [p["digest"] for p in pins if p["repository"] == "team/app"])

    def test_the_cli_works_against_the_https_admin_api_with_its_ca_and_refuses_an_untrusted_one(self):
        self.assertEqual(self.regpin.head("/v2/team/app/manifests/v1", {"Accept": h.ACCEPT_ALL_MANIFESTS}).status, 200)
        ref = f"{self.upstream.host}/team/app:v1"
        # --cacert: the throwaway CA that issued the admin certificate.
        listed = self.regpin.cli("pins", "list", "--json", "--cacert", self.ca.cert_path)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn(self.image.digest, [p["digest"] for p in json.loads(listed.stdout)["pins"]])
        shown = self.regpin.cli("pins", "show", ref, "--cacert", self.ca.cert_path)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn("team/app:v1", shown.stdout)
        events = self.regpin.cli("events", "--json", "--cacert", self.ca.cert_path)
        self.assertEqual(events.returncode, 0, events.stderr)
        self.assertTrue(any(json.loads(line)["type"] == "pinned" for line in events.stdout.splitlines()))

        # Without it, the certificate is not trusted: a clear failure, nothing printed as a result.
        untrusted = self.regpin.cli("pins", "list", "--json")
        self.assertEqual(untrusted.returncode, 1, untrusted.stdout)
        self.assertEqual(untrusted.stdout, "")
        self.assertIn("certificate verify failed", untrusted.stderr)
        self.assertIn("cannot reach the admin API at https://", untrusted.stderr)

        # The system trust store: OpenSSL's default verify paths honour SSL_CERT_FILE.
        token_file = os.path.join(self.dir, "cli-token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        env = {k: v for k, v in os.environ.items() if k not in ("REGPIN_ADMIN_TOKEN", "REGPIN_ADMIN")}
        env["SSL_CERT_FILE"] = self.ca.cert_path
        system = subprocess.run([self.regpin.binary, "pins", "list", "--json", "--admin", self.regpin.admin_url,
                                 "--token-file", token_file],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(system.returncode, 0, system.stderr)
        self.assertIn(self.image.digest, [p["digest"] for p in json.loads(system.stdout)["pins"]])


def s_client_connects(port: int) -> bool:
    """Whether something accepts TCP connections on the port (s_server shrugs off a bare
    connect that closes at once and goes on accepting)."""
    import socket
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    unittest.main()
