"""`regpin hosts-toml`: the node configuration it writes, used by the real clients (issue 4).

containerd (a private daemon, `ctr --hosts-dir`) reads the hosts.toml files in plain (mirror)
mode and in fail-closed mode, with regpin running and with regpin stopped; skopeo reads the
CRI-O registries.conf; the k3s YAML and the Docker daemon.json are checked for their shape.
Run one class with, e.g.:

    REGPIN_BIN=../../build/regpin python3 -m unittest -v test_node_config.ContainerdHostsTomlTest
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
import unittest
from pathlib import Path
from typing import Any, Optional

import harness as h

DOCKER_HUB = "docker.io"


class NodeConfigTestCase(h.LogsOnFailure):
    regpin: Optional[h.Regpin] = None

    # failure_report: the default (self.regpin's log) from h.LogsOnFailure

    @classmethod
    def class_dir(cls, prefix: str) -> str:
        d = h.make_temp_dir(prefix)
        cls.addClassCleanup(h.remove_temp_dir, d)
        return d

    def new_dir(self, prefix: str) -> str:
        d = h.make_temp_dir(prefix)
        self.addCleanup(h.remove_temp_dir, d)
        return d

    @staticmethod
    def hosts_toml(*args: str):
        return h.regpin_command("hosts-toml", *args)

    def generate(self, *args: str) -> str:
        """`regpin hosts-toml ARGS -o DIR` into a fresh dir; returns the dir."""
        out = self.new_dir("node-config")
        result = self.hosts_toml(*args, "-o", out)
        self.assertEqual(result.returncode, 0, f"hosts-toml {args}: {result.stderr}")
        return out

    def regpin_requests(self, path_regex: str) -> list[str]:
        """Request lines in regpin's log whose path (before any query) fully matches."""
        lines = []
        for line in self.regpin.log().splitlines():
            m = re.search(r" (GET|HEAD) (/\S*) (\d{3}) ", line)
            if m and re.fullmatch(path_regex, m[2].split("?")[0]):
                lines.append(line)
        return lines

    def assert_requested(self, path_regex: str, more_than: int = 0, message: str = "") -> None:
        """Waits (5 s at most) until regpin's log has more than `more_than` request lines for
        `path_regex`: a request's line is written after its answer, so a client can finish first."""
        h.wait_until(lambda: len(self.regpin_requests(path_regex)) > more_than, timeout=5, interval=0.05,
                     message=message or f"more than {more_than} requests for {path_regex} in regpin's log")


# ------------------------------------------------------------------------------------------------
# containerd
# ------------------------------------------------------------------------------------------------


class ContainerdHostsTomlTest(NodeConfigTestCase):
    """hosts.toml for the upstream's `127.0.0.1:PORT` name; plain mode falls back to the upstream
    over http (`--server R=http://...`), so a fallback is visible in the upstream's access log."""

    @classmethod
    def setUpClass(cls):
        cls.upstream = h.Registry("node-upstream")
        cls.addClassCleanup(cls.upstream.close)
        cls.upstream.start()
        layout = h.OciLayout(cls.class_dir("node-layout"))
        cls.images = {}
        for name in ("plain-down", "closed-down", "plain-up", "closed-up"):
            cls.images[name] = h.make_image(layout, name, seed=f"node-{name}")
            h.push(layout, f"team/{name}:v1", cls.upstream, source_tag=name)
        cls.regpin = h.Regpin([h.Upstream.of(cls.upstream.host, cls.upstream)])
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()
        cls.containerd = h.Containerd()
        cls.addClassCleanup(cls.containerd.close)
        cls.containerd.start()

    def write_hosts(self, fail_closed: bool) -> dict[str, Any]:
        """Writes the files straight into containerd's hosts dir; returns the parsed hosts.toml."""
        args = ["--mirror", self.regpin.url, "--registry", self.upstream.host]
        args += ["--fail-closed"] if fail_closed else ["--server", f"{self.upstream.host}={self.upstream.url}"]
        result = self.hosts_toml(*args, "-o", self.containerd.hosts_dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        path = Path(self.containerd.hosts_dir, self.upstream.host, "hosts.toml")
        self.assertIn(str(path), result.stdout)
        doc = tomllib.loads(path.read_text())
        self.assertEqual(doc["server"], self.regpin.url if fail_closed else self.upstream.url)
        self.assertEqual(doc["host"][self.regpin.url]["capabilities"], ["pull", "resolve"])
        return doc

    def stop_regpin_for_this_test(self) -> None:
        self.regpin.stop()
        self.addCleanup(self.regpin.start)

    def containerd_requests_at_upstream(self, repo: str) -> list[h.AccessLogEntry]:
        self.upstream.sync_log()
        return [e for e in self.upstream.access_log()
                if e.path.startswith(f"/v2/{repo}/") and e.user_agent.startswith("containerd")]

    def pull(self, name: str, check: bool = True):
        ref = f"{self.upstream.host}/team/{name}:v1"
        result = self.containerd.pull(ref, check=check)
        if check:
            self.assertEqual(self.containerd.image_digest(ref), self.images[name].digest)
        return result

    def test_plain_mode_with_regpin_stopped_falls_back_to_the_upstream(self):
        self.write_hosts(fail_closed=False)
        self.stop_regpin_for_this_test()
        self.pull("plain-down")
        direct = self.containerd_requests_at_upstream("team/plain-down")
        self.assertTrue(any(e.method in ("GET", "HEAD") and "/manifests/" in e.path for e in direct),
                        "containerd did not resolve at the upstream")
        self.assertTrue(any("/blobs/" in e.path for e in direct), "containerd fetched no blob at the upstream")

    def test_fail_closed_with_regpin_stopped_fails_the_pull(self):
        self.write_hosts(fail_closed=True)
        self.stop_regpin_for_this_test()
        result = self.pull("closed-down", check=False)
        self.assertNotEqual(result.returncode, 0, "the pull succeeded without regpin")
        self.assertEqual(self.containerd_requests_at_upstream("team/closed-down"), [],
                         "containerd went to the upstream itself")

    def test_plain_mode_with_regpin_running_pulls_through_regpin(self):
        self.write_hosts(fail_closed=False)
        self.pull("plain-up")
        self.assert_requested(r"/v2/team/plain-up/manifests/v1", message="regpin did not resolve the tag")
        self.assert_requested(r"/v2/team/plain-up/blobs/sha256:[0-9a-f]{64}",
                              message="regpin served no blob")
        self.assertEqual(self.containerd_requests_at_upstream("team/plain-up"), [],
                         "containerd went to the upstream although regpin was up")

    def test_fail_closed_with_regpin_running_pulls_through_regpin(self):
        self.write_hosts(fail_closed=True)
        self.pull("closed-up")
        self.assert_requested(r"/v2/team/closed-up/manifests/v1", message="regpin did not resolve the tag")
        self.assert_requested(r"/v2/team/closed-up/blobs/sha256:[0-9a-f]{64}",
                              message="regpin served no blob")
        self.assertEqual(self.containerd_requests_at_upstream("team/closed-up"), [])

    def test_without_an_output_dir_the_files_are_printed_with_their_paths(self):
        result = self.hosts_toml("--mirror", self.regpin.url, "--registry", DOCKER_HUB, "--registry", "ghcr.io")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("# --- docker.io/hosts.toml", result.stdout)
        self.assertIn("# --- ghcr.io/hosts.toml", result.stdout)
        # The default fallback of plain mode is the real registry.
        self.assertIn('server = "https://registry-1.docker.io"', result.stdout)
        self.assertIn('server = "https://ghcr.io"', result.stdout)


# ------------------------------------------------------------------------------------------------
# CRI-O / podman / skopeo: registries.conf
# ------------------------------------------------------------------------------------------------


class CrioRegistriesConfTest(NodeConfigTestCase):
    """skopeo reads the generated registries.conf (`--registries-conf`). The registry has a
    DNS-style name: a path prefix cannot hold `host:port` (see the README)."""

    NAME = "registry.test"

    @classmethod
    def setUpClass(cls):
        cls.hub = h.Registry("crio-hub")
        cls.addClassCleanup(cls.hub.close)
        cls.hub.start()
        cls.upstream = h.Registry("crio-upstream")
        cls.addClassCleanup(cls.upstream.close)
        cls.upstream.start()
        layout = h.OciLayout(cls.class_dir("crio-layout"))
        cls.app = h.make_image(layout, "app", seed="crio-app")
        cls.multi = h.make_image(layout, "multi", seed="crio-multi", platforms=("linux/amd64", "linux/arm64"))
        h.push(layout, "team/app:v1", cls.upstream, source_tag="app")
        h.push(layout, "team/multi:v1", cls.upstream, source_tag="multi")
        cls.regpin = h.Regpin([h.Upstream.of(DOCKER_HUB, cls.hub), h.Upstream.of(cls.NAME, cls.upstream)])
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()

    def registries_conf(self, *extra: str) -> tuple[str, dict]:
        out = self.generate("--format", "crio", "--mirror", self.regpin.url, "--registry", self.NAME, *extra)
        text = Path(out, "registries.conf").read_text()
        return text, tomllib.loads(text)

    def skopeo_with(self, text: str) -> h.Skopeo:
        skopeo = h.Skopeo(text)
        self.addCleanup(skopeo.close)
        return skopeo

    def test_fail_closed_registries_conf_routes_skopeo_through_regpin_by_path_prefix(self):
        text, doc = self.registries_conf("--fail-closed")
        [entry] = doc["registry"]
        self.assertEqual(entry["prefix"], self.NAME)
        self.assertEqual(entry["location"], f"{self.regpin.host}/{self.NAME}")
        self.assertTrue(entry["insecure"])
        skopeo = self.skopeo_with(text)
        raw = skopeo.inspect_raw(f"docker://{self.NAME}/team/app:v1")
        self.assertEqual(h.sha256_digest(raw), self.app.digest)
        digest = skopeo.copy_to_oci(f"docker://{self.NAME}/team/multi:v1", self.new_dir("crio-copy"))
        self.assertEqual(digest, self.multi.digest)
        self.assert_requested(rf"/v2/{self.NAME}/team/app/manifests/v1")
        self.assert_requested(rf"/v2/{self.NAME}/team/multi/blobs/sha256:[0-9a-f]{{64}}")

    def test_plain_registries_conf_lists_regpin_as_a_mirror_that_skopeo_uses(self):
        text, doc = self.registries_conf()
        [entry] = doc["registry"]
        self.assertEqual((entry["prefix"], entry["location"]), (self.NAME, self.NAME))
        self.assertEqual(entry["mirror"], [{"location": f"{self.regpin.host}/{self.NAME}", "insecure": True}])
        tag = "v1"
        before = len(self.regpin_requests(rf"/v2/{self.NAME}/team/app/manifests/{tag}"))
        raw = self.skopeo_with(text).inspect_raw(f"docker://{self.NAME}/team/app:{tag}")
        self.assertEqual(h.sha256_digest(raw), self.app.digest)
        self.assert_requested(rf"/v2/{self.NAME}/team/app/manifests/{tag}", more_than=before)


# ------------------------------------------------------------------------------------------------
# k3s and Docker
# ------------------------------------------------------------------------------------------------


def parse_simple_yaml(text: str) -> Any:
    """The YAML subset `hosts-toml --format k3s` writes: nested mappings, lists of scalars,
    double-quoted or plain scalars, `#` comments. Raises ValueError on anything else."""
    lines = []
    for raw in text.splitlines():
        stripped = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if stripped.strip():
            lines.append((len(stripped) - len(stripped.lstrip(" ")), stripped.strip()))

    def scalar(s: str) -> str:
        if s.startswith('"'):
            if not s.endswith('"') or len(s) < 2:
                raise ValueError(f"unterminated string {s!r}")
            return json.loads(s)
        return s

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                items.append(scalar(lines[i][1][2:].strip()))
                i += 1
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            entry = lines[i][1]
            m = re.match(r'("(?:[^"\\]|\\.)*"|[^":#\s-][^:]*):(?:\s+(.*))?$', entry)
            if not m:
                raise ValueError(f"not a mapping entry: {entry!r}")
            key, rest = scalar(m[1].strip()), m[2] or ""
            if key in mapping:
                raise ValueError(f"duplicate key {key!r}")
            if rest.strip():
                mapping[key] = scalar(rest.strip())
                i += 1
            elif i + 1 < len(lines) and lines[i + 1][0] > indent:
                mapping[key], i = block(i + 1, lines[i + 1][0])
            elif i + 1 < len(lines) and lines[i + 1][0] == indent and lines[i + 1][1].startswith("- "):
                mapping[key], i = block(i + 1, indent)
            else:
                mapping[key] = None
                i += 1
        return mapping, i

    if not lines:
        return None
    doc, end = block(0, lines[0][0])
    if end != len(lines):
        raise ValueError(f"unexpected indentation at {lines[end][1]!r}")
    return doc


class K3sAndDockerFormatTest(NodeConfigTestCase):
    MIRROR = "http://10.0.0.5:5000"

    def test_k3s_registries_yaml_lists_regpin_as_the_endpoint_of_every_registry(self):
        out = self.generate("--format", "k3s", "--mirror", self.MIRROR,
                            "--registry", DOCKER_HUB, "--registry", "quay.io", "--registry", "registry.k8s.io")
        text = Path(out, "registries.yaml").read_text()
        doc = parse_simple_yaml(text)
        self.assertEqual(doc, {"mirrors": {r: {"endpoint": [self.MIRROR]}
                                           for r in (DOCKER_HUB, "quay.io", "registry.k8s.io")}})
        try:
            import yaml  # noqa: PLC0415 - optional cross-check, not needed for the test
        except ImportError:
            return
        self.assertEqual(yaml.safe_load(text), doc)

    def test_k3s_with_a_ca_adds_its_tls_config_for_the_mirror_host(self):
        out = self.generate("--format", "k3s", "--mirror", "https://regpin.example:5443", "--registry", DOCKER_HUB,
                            "--ca", "/etc/regpin/ca.pem")
        doc = parse_simple_yaml(Path(out, "registries.yaml").read_text())
        self.assertEqual(doc["mirrors"], {DOCKER_HUB: {"endpoint": ["https://regpin.example:5443"]}})
        self.assertEqual(doc["configs"], {"regpin.example:5443": {"tls": {"ca_file": "/etc/regpin/ca.pem"}}})

    def test_docker_daemon_json_names_regpin_as_the_registry_mirror_and_an_insecure_registry(self):
        out = self.generate("--format", "docker", "--mirror", self.MIRROR, "--registry", DOCKER_HUB)
        doc = json.loads(Path(out, "daemon.json").read_text())
        self.assertEqual(doc, {"registry-mirrors": [self.MIRROR], "insecure-registries": ["10.0.0.5:5000"]})

    def test_docker_over_https_needs_no_insecure_registry(self):
        out = self.generate("--format", "docker", "--mirror", "https://regpin.example", "--registry", DOCKER_HUB)
        doc = json.loads(Path(out, "daemon.json").read_text())
        self.assertEqual(doc, {"registry-mirrors": ["https://regpin.example"]})

    def test_docker_format_without_docker_io_fails_with_a_clear_message(self):
        out = self.new_dir("node-config-docker")
        result = self.hosts_toml("--format", "docker", "--mirror", self.MIRROR, "--registry", "quay.io", "-o", out)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("docker.io", result.stderr)
        self.assertIn("Docker Hub", result.stderr)
        self.assertEqual(list(Path(out).iterdir()), [], "a file was written anyway")


if __name__ == "__main__":
    unittest.main()
