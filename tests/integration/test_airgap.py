"""Air-gapped sites, end to end (issue 4): `regpin prefetch` through a connected regpin,
`regpin export` of its data folder into a bundle (an OCI image layout in a tar), `regpin import`
of the bundle into a fresh data folder, and a regpin in offline mode that serves it to a real
containerd without any upstream.

Upstreams are real docker-registry instances, one playing docker.io and one under its own
`127.0.0.1:PORT` name; the offline regpins get upstream URLs that point at a closed port (or at a
SilentServer that counts connections), so anything they serve came from the bundle. Run one
class with, e.g.:

    REGPIN_BIN=../../build/regpin python3 -m unittest -v test_airgap.OfflineModeTest
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import unittest
import urllib.parse
from pathlib import Path
from typing import Callable, Optional

import harness as h

DOCKER_HUB = "docker.io"
ADMIN_TOKEN = h.AdminToken("ops", "airgap-admin-token-0123456789")


def closed_port_url() -> str:
    """An upstream URL nothing listens on: a regpin that used it would fail, not succeed."""
    return f"http://127.0.0.1:{h.free_port()}"


class AirgapTestCase(h.LogsOnFailure):
    """Fixtures for bundles, and the tail of every regpin's log when a test fails."""

    _class_regpins: list[h.Regpin] = []

    @classmethod
    def setUpClass(cls):
        cls._class_regpins = []

    def setUp(self):
        self._test_logs: list[tuple[str, str]] = []  # (path, tail) of this test's regpins

    def failure_report(self):
        logs = [(r.log_path, h.tail(r.log_path, 3000)) for r in type(self)._class_regpins]
        return [(f"regpin log ({path}), last lines", text)
                for path, text in logs + list(getattr(self, "_test_logs", []))]

    # -- class fixtures ---------------------------------------------------------------------------

    @classmethod
    def class_registry(cls, name: str) -> h.Registry:
        registry = h.Registry(name)
        cls.addClassCleanup(registry.close)
        return registry.start()

    @classmethod
    def class_dir(cls, prefix: str) -> str:
        d = h.make_temp_dir(prefix)
        cls.addClassCleanup(h.remove_temp_dir, d)
        return d

    @classmethod
    def class_regpin(cls, upstreams: list[h.Upstream], start: bool = True, **kwargs) -> h.Regpin:
        regpin = h.Regpin(upstreams, **kwargs)
        cls.addClassCleanup(regpin.close)
        cls._class_regpins.append(regpin)
        return regpin.start() if start else regpin

    @classmethod
    def class_containerd(cls) -> h.Containerd:
        containerd = h.Containerd()
        cls.addClassCleanup(containerd.close)
        return containerd.start()

    # -- per-test fixtures ------------------------------------------------------------------------

    def new_dir(self, prefix: str = "airgap") -> str:
        d = h.make_temp_dir(prefix)
        self.addCleanup(h.remove_temp_dir, d)
        return d

    def new_regpin(self, upstreams: list[h.Upstream], start: bool = True, **kwargs) -> h.Regpin:
        regpin = h.Regpin(upstreams, **kwargs)
        self.addCleanup(regpin.close)
        # Runs before close() (cleanups run last in, first out): the log outlives the temp dir.
        self.addCleanup(lambda: self._test_logs.append((regpin.log_path, h.tail(regpin.log_path, 3000))))
        return regpin.start() if start else regpin

    def offline_regpin(self, data_dir: str, *registries: str, **kwargs) -> h.Regpin:
        """A regpin started with --offline on `data_dir`, whose upstreams (one per registry name)
        all point at a closed port."""
        dead = closed_port_url()
        return self.new_regpin([h.Upstream(r, dead) for r in registries], data_dir=data_dir,
                               args=["--offline"], **kwargs)

    # -- the CLI ------------------------------------------------------------------------------------

    @staticmethod
    def prefetch(regpin: h.Regpin, *args: str):
        return h.regpin_command("prefetch", "--registry-url", regpin.url, *args)

    @staticmethod
    def export(data_dir: str, output: str, *args: str):
        return h.regpin_command("export", "--data", data_dir, *args, "-o", output)

    @staticmethod
    def import_bundle(bundle: str, *args: str):
        return h.regpin_command("import", bundle, *args)

    @staticmethod
    def require(result) -> None:
        """For fixtures: a command that must succeed."""
        if result.returncode != 0:
            raise RuntimeError(f"{result.args}: rc={result.returncode}\n{result.stdout}\n{result.stderr}")

    def assert_succeeded(self, result, what: str) -> None:
        self.assertEqual(result.returncode, 0, f"{what}: rc={result.returncode}\nstdout: {result.stdout}\n"
                                               f"stderr: {result.stderr}")

    # -- assertions ---------------------------------------------------------------------------------

    def served_digest(self, regpin: h.Regpin, registry: str, repo: str, tag: str) -> Optional[str]:
        """Docker-Content-Digest of GET manifests/<tag>?ns=<registry> through regpin, after checking
        it is sha256 of the body; None when regpin does not answer 200."""
        resp = regpin.get(h.with_query(f"/v2/{repo}/manifests/{tag}", ns=registry),
                          {"Accept": h.ACCEPT_ALL_MANIFESTS})
        if resp.status != 200:
            return None
        self.assertEqual(resp.header("Docker-Content-Digest"), h.sha256_digest(resp.body))
        return resp.header("Docker-Content-Digest")

    def assert_offline_refusal(self, resp: h.Response, what: str) -> None:
        """503 with an OCI error body whose message says regpin is offline."""
        self.assertEqual(resp.status, 503, f"{what}: {resp.status} {resp.body[:300]!r}")
        messages = " ".join(e.get("message", "") for e in resp.json().get("errors", []))
        self.assertIn("offline", messages.lower(), f"{what}: {resp.body[:300]!r}")

    def assert_pulled_offline(self, containerd: h.Containerd, ref: str, image: h.Image,
                              platform: str = "linux/amd64") -> None:
        """ctr pulled `ref` and recorded the upstream's top digest, and holds the platform's blobs."""
        containerd.pull(ref, platform=platform)
        self.assertEqual(containerd.image_digest(ref), image.digest, f"digest containerd recorded for {ref}")
        wanted = {image.manifest_for(platform)}
        if image.is_index:
            wanted.add(image.digest)
        manifest = json.loads(image.blobs[image.manifest_for(platform)])
        wanted |= {manifest["config"]["digest"], *(l["digest"] for l in manifest["layers"])}
        missing = wanted - containerd.content_digests()
        self.assertFalse(missing, f"blobs of {ref} ({platform}) missing from containerd's content store")


def tar_names(bundle: str) -> list[str]:
    with tarfile.open(bundle) as tar:
        return [m.name for m in tar.getmembers()]


def rewrite_tar(src: str, dest: str, alter: dict[str, Callable[[bytes], bytes]]) -> None:
    """Copies the tar `src` to `dest` entry by entry (same names, order and headers), passing
    the bytes of each entry named in `alter` through its function."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read() if member.isfile() else b""
            if member.name in alter:
                data = alter[member.name](data)
                member.size = len(data)
            tout.addfile(member, io.BytesIO(data))


def blob_entry(digest: str) -> str:
    return "blobs/sha256/" + digest.split(":", 1)[1]


def prefetch_ok_lines(stderr: str) -> dict[str, str]:
    """{reference: digest} from prefetch's `ok  REF DIGEST (...)` lines."""
    return {m["ref"]: m["digest"]
            for m in re.finditer(r"^ok\s+(?P<ref>\S+) (?P<digest>sha256:[0-9a-f]{64})\b", stderr, re.M)}


# ------------------------------------------------------------------------------------------------
# 1 + 3. connected regpin -> prefetch -> export -> import -> offline regpin -> containerd
# ------------------------------------------------------------------------------------------------


class ConnectedToAirGappedSiteTest(AirgapTestCase):
    """A connected regpin prefetches five images from two upstreams (docker.io names and a
    `127.0.0.1:PORT` registry; single-arch manifests and multi-arch indexes), its data folder is
    exported while it runs, and a fresh regpin with no upstream at all serves the imported bundle
    in offline mode to containerd."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.hub = cls.class_registry("airgap-hub")
        cls.other = cls.class_registry("airgap-other")
        layout = h.OciLayout(cls.class_dir("airgap-layout"))
        cls.alpha = h.make_image(layout, "alpha", seed="airgap-alpha", layer_sizes=(3000, 5000))
        # Same seed, other label: the same layers under another config, so the layers are shared.
        cls.sibling = h.make_image(layout, "sibling", seed="airgap-alpha", layer_sizes=(3000, 5000),
                                   labels={"regpin.test.variant": "sibling"})
        cls.multi = h.make_image(layout, "multi", seed="airgap-multi", platforms=("linux/amd64", "linux/arm64"))
        cls.app = h.make_image(layout, "app", seed="airgap-app")
        cls.tool = h.make_image(layout, "tool", seed="airgap-tool", platforms=("linux/amd64", "linux/arm64"))
        h.push(layout, "library/alpha:1.0", cls.hub, source_tag="alpha")
        h.push(layout, "team/sibling:1.0", cls.hub, source_tag="sibling")
        h.push(layout, "library/multi:2.0", cls.hub, source_tag="multi")
        h.push(layout, "team/app:v1", cls.other, source_tag="app")
        h.push(layout, "team/tool:v2", cls.other, source_tag="tool")
        o = cls.other.host
        # reference -> (registry, repository, tag, image, upstream)
        cls.images = {
            "docker.io/library/alpha:1.0": (DOCKER_HUB, "library/alpha", "1.0", cls.alpha, cls.hub),
            "docker.io/team/sibling:1.0": (DOCKER_HUB, "team/sibling", "1.0", cls.sibling, cls.hub),
            "docker.io/library/multi:2.0": (DOCKER_HUB, "library/multi", "2.0", cls.multi, cls.hub),
            f"{o}/team/app:v1": (o, "team/app", "v1", cls.app, cls.other),
            f"{o}/team/tool:v2": (o, "team/tool", "v2", cls.tool, cls.other),
        }

        cls.connected = cls.class_regpin([h.Upstream.of(DOCKER_HUB, cls.hub), h.Upstream.of(o, cls.other)])
        work = cls.class_dir("airgap-work")
        # Short names on the command line (docker.io is implied), the rest from a list file.
        cls.prefetch_args = cls.prefetch(cls.connected, "alpha:1.0", "docker.io/library/multi:2.0")
        list_file = Path(work, "images.txt")
        list_file.write_text(
            "# images for the air-gapped site\n"
            "\n"
            "docker.io/team/sibling:1.0\n"
            f"  {o}/team/app:v1   # the app\n"
            f"{o}/team/tool:v2\n")
        cls.prefetch_file = cls.prefetch(cls.connected, "--file", str(list_file))

        # Exported while the connected regpin keeps running on its data folder.
        cls.bundle = str(Path(work, "bundle.tar"))
        cls.export_result = cls.export(cls.connected.data_dir, cls.bundle, "--all")
        cls.connected_alive_after_export = cls.connected.running and \
            cls.connected.get("/v2/").status == 200

        cls.site_data = str(Path(work, "site-data"))
        cls.import_result = cls.import_bundle(cls.bundle, "--data", cls.site_data)
        dead = closed_port_url()
        cls.site = cls.class_regpin([h.Upstream(DOCKER_HUB, dead), h.Upstream(o, dead)],
                                    data_dir=cls.site_data, args=["--offline"], admin_tokens=[ADMIN_TOKEN])
        cls.containerd = cls.class_containerd()
        cls.containerd.mirror(DOCKER_HUB, cls.site.url)  # fail-closed: regpin is the `server`
        cls.containerd.mirror(o, cls.site.url)

    def test_prefetch_prints_an_ok_line_per_image_and_a_summary_on_plain_lines(self):
        for result, refs in ((self.prefetch_args, ["docker.io/library/alpha:1.0", "docker.io/library/multi:2.0"]),
                             (self.prefetch_file, ["docker.io/team/sibling:1.0", f"{self.other.host}/team/app:v1",
                                                   f"{self.other.host}/team/tool:v2"])):
            self.assert_succeeded(result, "prefetch")
            ok = prefetch_ok_lines(result.stderr)
            self.assertEqual(sorted(ok), sorted(refs), result.stderr)
            for ref in refs:
                self.assertEqual(ok[ref], self.images[ref][3].digest, f"digest prefetch reported for {ref}")
            self.assertRegex(result.stderr, rf"(?m)^prefetched {len(refs)} of {len(refs)} images\b")
            # Not a terminal: no carriage returns or escape sequences of a progress line.
            self.assertNotIn("\r", result.stderr)
            self.assertNotIn("\x1b", result.stderr)

    def test_export_while_regpin_runs_writes_every_pin_and_leaves_regpin_serving(self):
        self.assert_succeeded(self.export_result, "export")
        self.assertRegex(self.export_result.stdout, r"exported 5 pins\b")
        self.assertTrue(self.connected_alive_after_export, "the connected regpin stopped serving during export")
        with tarfile.open(self.bundle) as tar:
            pins = json.loads(tar.extractfile("regpin-pins.json").read())["pins"]
            index = json.loads(tar.extractfile("index.json").read())
        self.assertEqual({p["reference"]: p["digest"] for p in pins},
                         {ref: v[3].digest for ref, v in self.images.items()})
        named = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}
        self.assertEqual(named, {ref: v[3].digest for ref, v in self.images.items()})

    def test_import_into_a_fresh_data_folder_creates_every_pin(self):
        self.assert_succeeded(self.import_result, "import")
        self.assertIn("5 pins created, 0 unchanged, 0 conflicts", self.import_result.stdout)

    def test_containerd_pulls_every_image_by_tag_from_the_offline_regpin_with_the_upstream_digests(self):
        for ref, (registry, repo, tag, image, upstream) in self.images.items():
            with self.subTest(ref=ref):
                self.assertEqual(upstream.manifest_digest(repo, tag), image.digest, "the upstream's digest")
                self.assert_pulled_offline(self.containerd, ref, image)
        # Everything came from the offline regpin: neither upstream saw containerd.
        for upstream in (self.hub, self.other):
            upstream.sync_log()
            direct = [e.uri for e in upstream.access_log() if e.user_agent.startswith("containerd")]
            self.assertEqual(direct, [], f"containerd reached {upstream.name} directly")
        log = self.site.log()
        for ref, (registry, repo, tag, _, _) in self.images.items():
            self.assertRegex(log, rf"HEAD /v2/{re.escape(repo)}/manifests/{re.escape(tag)}\?ns=\S+ 200 .*cache=pin",
                             f"the offline regpin's log for {ref}")

    def test_the_offline_regpin_answers_503_naming_offline_mode_for_an_image_the_bundle_lacks(self):
        resp = self.site.get(h.with_query("/v2/library/never-prefetched/manifests/1.0", ns=DOCKER_HUB),
                             {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assert_offline_refusal(resp, "an image that is not in the bundle")
        result = self.containerd.pull("docker.io/library/never-prefetched:1.0", check=False)
        self.assertNotEqual(result.returncode, 0, "containerd pulled an image nobody imported")

    def test_imported_pins_are_visible_in_the_admin_api_with_their_provenance(self):
        resp = self.site.admin_request("GET", "/api/v1/pin?registry=docker.io&repository=library/multi&tag=2.0")
        self.assertEqual(resp.status, 200, resp.body[:300])
        doc = resp.json()
        self.assertEqual([(p["digest"], p["state"]) for p in doc["pins"]], [(self.multi.digest, "pinned")])
        self.assertIn("imported", [e["type"] for e in doc["history"]], doc["history"])

    # -- 3. the bundle is a standard OCI layout -------------------------------------------------

    def test_skopeo_reads_every_image_of_the_bundle_with_its_manifest_digest(self):
        skopeo = h.default_skopeo()
        for ref, (_, _, _, image, _) in self.images.items():
            with self.subTest(ref=ref):
                raw = skopeo.inspect_raw(f"oci-archive:{self.bundle}:{ref}")
                self.assertEqual(h.sha256_digest(raw), image.digest)

    def test_skopeo_copies_a_multi_arch_image_out_of_the_bundle_with_every_blob(self):
        dest = self.new_dir("airgap-copy")
        digest = h.default_skopeo().copy_to_oci(f"oci-archive:{self.bundle}:docker.io/library/multi:2.0",
                                                dest, "copied")
        self.assertEqual(digest, self.multi.digest)
        for blob in self.multi.blobs:
            path = Path(dest, "blobs", "sha256", blob.split(":")[1])
            self.assertTrue(path.exists(), f"{blob} was not copied")
            self.assertEqual(h.sha256_digest(path.read_bytes()), blob)

    def test_every_blob_is_in_the_bundle_once_and_a_shared_layer_is_stored_once(self):
        names = tar_names(self.bundle)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        self.assertEqual(duplicates, [], "entries stored more than once")
        shared = set(self.alpha.layer_digests) & set(self.sibling.layer_digests)
        self.assertEqual(len(shared), 2, "precondition: alpha and sibling share their two layers")
        every_blob = set().union(*(v[3].blobs for v in self.images.values()))
        expected = {"oci-layout", "index.json", "regpin-pins.json"} | {blob_entry(d) for d in every_blob}
        self.assertEqual(set(names), expected)
        with tarfile.open(self.bundle) as tar:
            for member in tar.getmembers():
                if member.name.startswith("blobs/"):
                    data = tar.extractfile(member).read()
                    self.assertEqual("blobs/sha256/" + h.sha256_digest(data).split(":")[1], member.name)


# ------------------------------------------------------------------------------------------------
# 2. prefetch: one platform, a failing image
# ------------------------------------------------------------------------------------------------


class PrefetchPlatformAndFailureTest(AirgapTestCase):
    """`prefetch --platform linux/arm64` of a multi-arch image and a good image, with a tag that
    does not exist in between."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.hub = cls.class_registry("prefetch-hub")
        layout = h.OciLayout(cls.class_dir("prefetch-layout"))
        cls.multi = h.make_image(layout, "multi", seed="prefetch-multi", platforms=("linux/amd64", "linux/arm64"))
        cls.good = h.make_image(layout, "good", seed="prefetch-good")
        h.push(layout, "library/multi:3.0", cls.hub, source_tag="multi")
        h.push(layout, "library/good:1.0", cls.hub, source_tag="good")
        cls.connected = cls.class_regpin([h.Upstream.of(DOCKER_HUB, cls.hub)])
        cls.result = cls.prefetch(cls.connected, "--platform", "linux/arm64", "multi:3.0",
                                  "docker.io/library/missing:nope", "good:1.0")
        work = cls.class_dir("prefetch-work")
        cls.bundle = str(Path(work, "bundle.tar"))
        cls.export_result = cls.export(cls.connected.data_dir, cls.bundle, "--all")
        cls.site_data = str(Path(work, "site-data"))
        cls.import_result = cls.import_bundle(cls.bundle, "--data", cls.site_data)
        cls.site = cls.class_regpin([h.Upstream(DOCKER_HUB, closed_port_url())], data_dir=cls.site_data,
                                    offline=True)
        cls.containerd = cls.class_containerd()
        cls.containerd.mirror(DOCKER_HUB, cls.site.url)

    def test_a_missing_tag_is_listed_as_failed_with_exit_status_1_while_the_others_succeed(self):
        self.assertEqual(self.result.returncode, 1, self.result.stderr)
        self.assertEqual(prefetch_ok_lines(self.result.stderr),
                         {"docker.io/library/multi:3.0": self.multi.digest,
                          "docker.io/library/good:1.0": self.good.digest})
        self.assertRegex(self.result.stderr, r"(?m)^prefetched 2 of 3 images\b")
        failed_block = self.result.stderr.split("\nfailed:\n", 1)
        self.assertEqual(len(failed_block), 2, f"no 'failed:' list:\n{self.result.stderr}")
        self.assertRegex(failed_block[1], r"(?m)^\s+docker\.io/library/missing:nope: ")
        self.assertNotIn("good:1.0", failed_block[1])
        self.assertNotIn("\r", self.result.stderr)
        self.assertNotIn("\x1b", self.result.stderr)

    def test_export_warns_that_the_platform_never_prefetched_is_not_in_the_bundle(self):
        self.assert_succeeded(self.export_result, "export")
        warnings = [l for l in self.export_result.stderr.splitlines() if l.startswith("warning:")]
        self.assertEqual(len(warnings), 1, self.export_result.stderr)
        self.assertIn("docker.io/library/multi:3.0", warnings[0])
        self.assertIn("linux/amd64", warnings[0])
        names = set(tar_names(self.bundle))
        self.assertIn(blob_entry(self.multi.manifest_for("linux/arm64")), names)
        self.assertNotIn(blob_entry(self.multi.manifest_for("linux/amd64")), names)

    def test_the_offline_regpin_serves_the_prefetched_platform_and_refuses_the_other(self):
        self.assert_succeeded(self.import_result, "import")
        self.assertIn("2 pins created", self.import_result.stdout)
        self.assert_pulled_offline(self.containerd, "docker.io/library/multi:3.0", self.multi, "linux/arm64")
        self.assert_pulled_offline(self.containerd, "docker.io/library/good:1.0", self.good)
        result = self.containerd.pull("docker.io/library/multi:3.0", platform="linux/amd64", check=False)
        self.assertNotEqual(result.returncode, 0, "containerd pulled a platform that was never prefetched")
        self.assertIn("503", result.stderr)
        resp = self.site.get(h.with_query(f"/v2/library/multi/manifests/{self.multi.manifest_for('linux/amd64')}",
                                          ns=DOCKER_HUB), {"Accept": h.ACCEPT_ALL_MANIFESTS})
        self.assert_offline_refusal(resp, "the amd64 manifest")

    def test_the_missing_tag_is_not_pinned(self):
        with tarfile.open(self.bundle) as tar:
            pins = json.loads(tar.extractfile("regpin-pins.json").read())["pins"]
        self.assertEqual(sorted(p["reference"] for p in pins),
                         ["docker.io/library/good:1.0", "docker.io/library/multi:3.0"])


# ------------------------------------------------------------------------------------------------
# 4. import: idempotence, verification, conflicts, locking, plain OCI layouts
# ------------------------------------------------------------------------------------------------


class ImportTest(AirgapTestCase):
    """Bundle A pins docker.io/library/conflict:1 to image `first` (and keep:1); bundle B, made
    after the upstream re-pointed the tag, pins it to `second`."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.hub = cls.class_registry("import-hub")
        cls.layout = h.OciLayout(cls.class_dir("import-layout"))
        cls.first = h.make_image(cls.layout, "first", seed="import-first", revision="1")
        cls.second = h.make_image(cls.layout, "second", seed="import-second", revision="2")
        cls.keep = h.make_image(cls.layout, "keep", seed="import-keep", layer_sizes=(6000,))
        cls.plain = h.make_image(cls.layout, "plain", seed="import-plain",
                                 platforms=("linux/amd64", "linux/arm64"))
        h.push(cls.layout, "library/conflict:1", cls.hub, source_tag="first")
        h.push(cls.layout, "library/keep:1", cls.hub, source_tag="keep")
        h.push(cls.layout, "library/plain-source:src", cls.hub, source_tag="plain")
        cls.work = cls.class_dir("import-work")

        a = cls.class_regpin([h.Upstream.of(DOCKER_HUB, cls.hub)])
        cls.require(cls.prefetch(a, "conflict:1", "keep:1"))
        cls.bundle_a = str(Path(cls.work, "bundle-a.tar"))
        cls.require(cls.export(a.data_dir, cls.bundle_a, "--all"))
        a.stop()

        h.push(cls.layout, "library/conflict:1", cls.hub, source_tag="second")
        b = cls.class_regpin([h.Upstream.of(DOCKER_HUB, cls.hub)])
        cls.require(cls.prefetch(b, "conflict:1"))
        cls.bundle_b = str(Path(cls.work, "bundle-b.tar"))
        cls.require(cls.export(b.data_dir, cls.bundle_b, "--image", "docker.io/library/conflict:1"))
        b.stop()
        cls.containerd = cls.class_containerd()

    def pin_of(self, regpin: h.Regpin, repo: str, tag: str) -> dict:
        resp = regpin.admin_request("GET", f"/api/v1/pin?registry=docker.io&repository={repo}&tag={tag}")
        self.assertEqual(resp.status, 200, resp.body[:300])
        pins = resp.json()["pins"]
        self.assertEqual(len(pins), 1, pins)
        return pins[0]

    def test_importing_the_same_bundle_twice_creates_nothing_the_second_time(self):
        data = str(Path(self.new_dir("import-twice"), "data"))
        first = self.import_bundle(self.bundle_a, "--data", data)
        self.assert_succeeded(first, "first import")
        self.assertIn("2 pins created, 0 unchanged, 0 conflicts", first.stdout)
        second = self.import_bundle(self.bundle_a, "--data", data)
        self.assert_succeeded(second, "second import")
        self.assertIn("0 pins created, 2 unchanged, 0 conflicts", second.stdout)
        self.assertRegex(second.stdout, r"\b0 manifests and 0 blobs added\b")
        self.assertNotIn("conflict:", second.stderr)

    def test_a_bundle_with_one_altered_blob_is_refused_and_pins_nothing(self):
        layer = self.keep.layer_digests[0]
        self.assertIn(blob_entry(layer), tar_names(self.bundle_a), "precondition: the layer is in the bundle")
        tampered = str(Path(self.new_dir("import-tampered"), "tampered.tar"))
        rewrite_tar(self.bundle_a, tampered, {blob_entry(layer): lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:]})
        self.assertEqual(tar_names(tampered), tar_names(self.bundle_a), "the rewrite kept every name")

        data = str(Path(self.new_dir("import-tampered-data"), "data"))
        result = self.import_bundle(tampered, "--data", data)
        self.assertNotEqual(result.returncode, 0, f"the tampered bundle was imported:\n{result.stdout}")
        self.assertIn(layer, result.stderr)
        self.assertIn("does not match", result.stderr)

        site = self.assert_nothing_pinned(data)
        # HEAD: a GET of an uncached blob is what OfflineModeTest's blob test is about.
        resp = site.head(h.with_query(f"/v2/library/keep/blobs/{layer}", ns=DOCKER_HUB), timeout=10)
        self.assertNotEqual(resp.status, 200, "the altered blob is in the cache")

    def assert_nothing_pinned(self, data: str) -> h.Regpin:
        """Starts an offline regpin on `data` and checks it has no pin and serves neither tag."""
        site = self.offline_regpin(data, DOCKER_HUB, admin_tokens=[ADMIN_TOKEN])
        resp = site.admin_request("GET", "/api/v1/pins")
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(resp.json()["pins"], [], "a pin was created by a refused import")
        for repo in ("library/conflict", "library/keep"):
            self.assertIsNone(self.served_digest(site, DOCKER_HUB, repo, "1"), f"{repo}:1 is served")
        return site

    def test_a_bundle_with_an_altered_manifest_is_refused_and_pins_nothing(self):
        manifest = self.keep.digest
        tampered = str(Path(self.new_dir("import-tampered-manifest"), "tampered.tar"))
        # Still valid JSON describing the same blobs, but not the bytes the digest names.
        rewrite_tar(self.bundle_a, tampered, {blob_entry(manifest): lambda b: b + b"\n"})
        self.assertEqual(tar_names(tampered), tar_names(self.bundle_a))
        data = str(Path(self.new_dir("import-tampered-manifest-data"), "data"))
        result = self.import_bundle(tampered, "--data", data)
        self.assertNotEqual(result.returncode, 0, f"the tampered bundle was imported:\n{result.stdout}")
        self.assertIn(manifest, result.stderr)
        self.assert_nothing_pinned(data)

    def test_a_conflicting_bundle_with_policy_pin_keeps_the_existing_pin_and_records_the_bundle_digest_as_pending(self):
        data = str(Path(self.new_dir("import-conflict-pin"), "data"))
        self.assert_succeeded(self.import_bundle(self.bundle_b, "--data", data), "import of bundle B")
        result = self.import_bundle(self.bundle_a, "--data", data)
        self.assert_succeeded(result, "import of bundle A")
        conflicts = [l for l in result.stderr.splitlines() if l.startswith("conflict:")]
        self.assertEqual(len(conflicts), 1, result.stderr)
        for part in ("docker.io/library/conflict:1", self.first.digest, self.second.digest, "pin"):
            self.assertIn(part, conflicts[0])
        self.assertIn("1 pins created, 0 unchanged, 1 conflicts", result.stdout)

        site = self.offline_regpin(data, DOCKER_HUB, admin_tokens=[ADMIN_TOKEN])
        pin = self.pin_of(site, "library/conflict", "1")
        self.assertEqual((pin["state"], pin["digest"], pin["pending_digest"]),
                         ("pending", self.second.digest, self.first.digest))
        self.assertEqual(self.served_digest(site, DOCKER_HUB, "library/conflict", "1"), self.second.digest)
        self.assertEqual(self.served_digest(site, DOCKER_HUB, "library/keep", "1"), self.keep.digest)

    def test_a_conflicting_bundle_with_policy_follow_moves_the_pin(self):
        data = str(Path(self.new_dir("import-conflict-follow"), "data"))
        # The import takes its policies (and data folder) from this regpin's config file.
        site = self.new_regpin([h.Upstream(DOCKER_HUB, closed_port_url())], start=False, data_dir=data,
                               offline=True, admin_tokens=[ADMIN_TOKEN],
                               policies=[h.PolicyRule("docker.io/library/**", "follow")])
        self.assert_succeeded(self.import_bundle(self.bundle_b, "--config", site.config_path), "import of bundle B")
        result = self.import_bundle(self.bundle_a, "--config", site.config_path)
        self.assert_succeeded(result, "import of bundle A")
        conflicts = [l for l in result.stderr.splitlines() if l.startswith("conflict:")]
        self.assertEqual(len(conflicts), 1, result.stderr)
        self.assertIn("follow", conflicts[0])

        site.start()
        pin = self.pin_of(site, "library/conflict", "1")
        self.assertEqual((pin["state"], pin["digest"], pin["pending_digest"]), ("pinned", self.first.digest, None))
        self.assertEqual(self.served_digest(site, DOCKER_HUB, "library/conflict", "1"), self.first.digest)

    def rejected_bundle(self) -> str:
        """A bundle from a connected site (policy reject) where conflict:1, pinned to `first`,
        was rejected when the upstream moved it to `second`."""
        data = str(Path(self.new_dir("import-rejecting"), "data"))
        self.assert_succeeded(self.import_bundle(self.bundle_a, "--data", data), "import of bundle A")
        connected = self.new_regpin([h.Upstream.of(DOCKER_HUB, self.hub)], data_dir=data,
                                    admin_tokens=[ADMIN_TOKEN],
                                    policies=[h.PolicyRule("docker.io/library/conflict:*", "reject")])
        check = connected.admin_request("POST", "/api/v1/pin/check",
                                        {"registry": DOCKER_HUB, "repository": "library/conflict", "tag": "1"})
        self.assertEqual(check.status, 200, check.body[:300])
        pin = self.pin_of(connected, "library/conflict", "1")
        self.assertEqual((pin["state"], pin["pending_digest"]), ("rejected", self.second.digest))
        connected.stop()
        bundle = str(Path(self.new_dir("import-rejected-bundle"), "rejected.tar"))
        self.assert_succeeded(self.export(data, bundle, "--all"), "export")
        return bundle

    def test_a_tag_rejected_at_the_connected_site_is_rejected_at_the_air_gapped_one(self):
        bundle = self.rejected_bundle()
        # Into a fresh site, and into one that had the tag pinned to the same digest.
        fresh = str(Path(self.new_dir("import-rejected-fresh"), "data"))
        pinned = str(Path(self.new_dir("import-rejected-pinned"), "data"))
        self.assert_succeeded(self.import_bundle(self.bundle_a, "--data", pinned), "import of bundle A")
        for data in (fresh, pinned):
            self.assert_succeeded(self.import_bundle(bundle, "--data", data), "import of the rejected bundle")
            site = self.offline_regpin(data, DOCKER_HUB, admin_tokens=[ADMIN_TOKEN])
            pin = self.pin_of(site, "library/conflict", "1")
            self.assertEqual((pin["state"], pin["digest"], pin["pending_digest"]),
                             ("rejected", self.first.digest, self.second.digest), data)
            resp = site.get(h.with_query("/v2/library/conflict/manifests/1", ns=DOCKER_HUB),
                            {"Accept": h.ACCEPT_ALL_MANIFESTS})
            self.assertEqual(resp.status, 403, resp.body[:300])
            self.assertIn(b"DENIED", resp.body)
            self.containerd.mirror(DOCKER_HUB, site.url)
            self.containerd.forget_everything()
            self.assertNotEqual(self.containerd.pull("docker.io/library/conflict:1", check=False).returncode, 0)
            self.assertEqual(self.served_digest(site, DOCKER_HUB, "library/keep", "1"), self.keep.digest)
            history = site.admin_request(
                "GET", "/api/v1/pin?registry=docker.io&repository=library/conflict&tag=1").json()["history"]
            self.assertEqual((history[-1]["type"], history[-1]["action"]), ("imported", "rejected"))
            # An operator there can approve what the connected site would have.
            approved = site.admin_request("POST", "/api/v1/pin/approve",
                                          {"registry": DOCKER_HUB, "repository": "library/conflict", "tag": "1",
                                           "digest": self.first.digest})
            self.assertEqual(approved.status, 200, approved.body[:300])
            self.assertEqual(self.served_digest(site, DOCKER_HUB, "library/conflict", "1"), self.first.digest)
            site.stop()

    def test_a_bundle_with_a_bad_pins_file_entry_is_refused_naming_it_and_pins_nothing(self):
        def rename(body: bytes) -> bytes:
            doc = json.loads(body)
            doc["pins"][-1]["repository"] = "keep"  # Docker Hub's "keep" is written library/keep
            return json.dumps(doc).encode()
        bad = str(Path(self.new_dir("import-bad-pins"), "bad.tar"))
        rewrite_tar(self.bundle_a, bad, {"regpin-pins.json": rename})
        data = str(Path(self.new_dir("import-bad-pins-data"), "data"))
        result = self.import_bundle(bad, "--data", data)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertIn("regpin-pins.json: pins[1] (docker.io/keep:1): the repository must be written "
                      "'library/keep'", result.stderr)
        self.assertFalse(Path(data).exists(), "the data folder was touched by a refused import")

    def test_a_crafted_tar_with_a_huge_size_is_refused_at_once(self):
        work = self.new_dir("import-crafted")
        crafted = Path(work, "crafted.tar")
        header = bytearray(512)
        header[0:10] = b"blobs/evil"
        header[100:107] = b"0000644"
        header[124:136] = b"\xff" + b"\xff" * 9 + b"\xfe\x00"  # base-256: 2^64 - 512
        header[156:157] = b"5"
        header[257:262] = b"ustar"
        header[148:156] = b" " * 8
        header[148:155] = f"{sum(header):06o}\0".encode()
        crafted.write_bytes(bytes(header) + bytes(1024))
        result = self.import_bundle(str(crafted), "--data", str(Path(work, "data")))
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertIn("not a tar file", result.stderr)

    def test_import_into_a_data_folder_a_running_regpin_uses_fails_saying_it_is_in_use(self):
        running = self.offline_regpin(str(Path(self.new_dir("import-busy"), "data")), DOCKER_HUB)
        result = self.import_bundle(self.bundle_a, "--data", running.data_dir)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertIn("in use", result.stderr)
        self.assertIsNone(self.served_digest(running, DOCKER_HUB, "library/keep", "1"))

    def test_a_plain_skopeo_layout_needs_as_and_is_then_served_offline(self):
        work = self.new_dir("import-plain")
        plain = str(Path(work, "plain.tar"))
        h.default_skopeo()("copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--quiet",
                           f"docker://{self.hub.host}/library/plain-source:src", f"oci-archive:{plain}:1.0")
        data = str(Path(work, "data"))

        without = self.import_bundle(plain, "--data", data)
        self.assertNotEqual(without.returncode, 0, without.stdout)
        self.assertIn("--as", without.stderr)

        with_as = self.import_bundle(plain, "--data", data, "--as", "docker.io/library/plain:1.0")
        self.assert_succeeded(with_as, "import --as")
        self.assertIn("1 pins created", with_as.stdout)

        site = self.offline_regpin(data, DOCKER_HUB)
        self.containerd.mirror(DOCKER_HUB, site.url)
        self.assert_pulled_offline(self.containerd, "docker.io/library/plain:1.0", self.plain)
        self.assert_pulled_offline(self.containerd, "docker.io/library/plain:1.0", self.plain, "linux/arm64")


# ------------------------------------------------------------------------------------------------
# 5. offline mode never opens a connection upstream
# ------------------------------------------------------------------------------------------------


class ReferrersUpstream:
    """An upstream with the OCI 1.1 referrers API, which docker-registry 2.8 lacks (it answers
    404): serves `content` (tags and digests to manifests and blobs) and, for each subject, the
    index of the artifacts whose `subject` it is; `down` makes it answer 503 to everything."""

    def __init__(self):
        self.manifests: dict[str, tuple[str, bytes]] = {}  # tag or digest -> (media type, bytes)
        self.blobs: dict[str, bytes] = {}
        self.referrers: dict[str, list[dict]] = {}
        self.down = False
        self.server = h.ScriptedHTTPServer(self.handle).start()
        self.url = self.server.url

    def add_image(self, image: h.Image, tag: str) -> None:
        for digest, body in image.blobs.items():
            self.blobs[digest] = body
            self.manifests[digest] = (h.MEDIA_OCI_MANIFEST, body)
        self.manifests[tag] = (image.media_type, image.blobs[image.digest])

    def add_artifact(self, subject: h.Image, kind: str) -> dict:
        blob = f"{kind} of {subject.digest}".encode()
        for b in (blob, b"{}"):
            self.blobs[h.sha256_digest(b)] = b
        body = json.dumps({
            "schemaVersion": 2, "mediaType": h.MEDIA_OCI_MANIFEST, "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": h.sha256_digest(b"{}"), "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": h.sha256_digest(blob), "size": len(blob)}],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        }).encode()
        desc = {"mediaType": h.MEDIA_OCI_MANIFEST, "digest": h.sha256_digest(body), "size": len(body),
                "artifactType": kind}
        self.manifests[desc["digest"]] = (h.MEDIA_OCI_MANIFEST, body)
        self.referrers.setdefault(subject.digest, []).append(desc)
        return desc

    def handle(self, req: h.RecordedRequest) -> h.Reply:
        json_type = {"Content-Type": "application/json"}
        if self.down:
            return h.Reply(503, json_type, b'{"errors":[{"code":"UNAVAILABLE","message":"down"}]}')
        if req.path == "/v2/":
            return h.Reply(200, json_type, b"{}")
        m = re.fullmatch(r"/v2/(?P<repo>.+)/(?P<kind>manifests|blobs|referrers)/(?P<ref>[^/]+)", req.path)
        if m and m["kind"] == "manifests" and m["ref"] in self.manifests:
            media_type, body = self.manifests[m["ref"]]
            return h.Reply(200, {"Content-Type": media_type, "Docker-Content-Digest": h.sha256_digest(body)}, body)
        if m and m["kind"] == "blobs" and m["ref"] in self.blobs:
            return h.Reply(200, {"Content-Type": "application/octet-stream"}, self.blobs[m["ref"]])
        if m and m["kind"] == "referrers":
            index = {"schemaVersion": 2, "mediaType": h.MEDIA_OCI_INDEX,
                     "manifests": self.referrers.get(m["ref"], [])}
            return h.Reply(200, {"Content-Type": h.MEDIA_OCI_INDEX}, json.dumps(index).encode())
        return h.Reply(404, json_type, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}')

    def close(self) -> None:
        self.server.close()


class ReferrersTest(AirgapTestCase):
    """Referrers are kept per subject: served with a stale Warning when the upstream is down, and
    carried in bundles with the referring manifests, so verification works at air-gapped sites."""

    SBOM = "application/vnd.example.sbom"
    PROVENANCE = "application/vnd.example.provenance"

    def setUp(self):
        super().setUp()
        self.upstream = ReferrersUpstream()
        self.addCleanup(self.upstream.close)
        layout = h.OciLayout(self.new_dir("referrers-layout"))
        self.subject = h.make_image(layout, "subject", seed="referrers-subject")
        self.upstream.add_image(self.subject, "1.0")
        self.sbom = self.upstream.add_artifact(self.subject, self.SBOM)
        self.provenance = self.upstream.add_artifact(self.subject, self.PROVENANCE)
        self.connected = self.new_regpin([h.Upstream(DOCKER_HUB, self.upstream.url)], admin_tokens=[ADMIN_TOKEN])

    def referrers(self, regpin: h.Regpin, artifact_type: Optional[str] = None) -> h.Response:
        path = f"/v2/library/signed/referrers/{self.subject.digest}"
        query = {"ns": DOCKER_HUB, **({"artifactType": artifact_type} if artifact_type else {})}
        return regpin.get(path + "?" + urllib.parse.urlencode(query), {"Accept": h.MEDIA_OCI_INDEX})

    def listed(self, resp: h.Response) -> list[str]:
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(resp.header("Content-Type"), h.MEDIA_OCI_INDEX)
        return [m["artifactType"] for m in json.loads(resp.body)["manifests"]]

    def test_referrers_are_filtered_and_served_stale_when_the_upstream_is_down(self):
        fresh = self.referrers(self.connected)
        self.assertEqual(self.listed(fresh), [self.SBOM, self.PROVENANCE])
        self.assertIsNone(fresh.header("Warning"))
        sbom_only = self.referrers(self.connected, self.SBOM)
        self.assertEqual(self.listed(sbom_only), [self.SBOM])
        self.assertEqual(sbom_only.header("OCI-Filters-Applied"), "artifactType")

        self.upstream.down = True
        stale = self.referrers(self.connected)
        self.assertEqual(self.listed(stale), [self.SBOM, self.PROVENANCE])
        self.assertRegex(stale.header("Warning") or "", r'^110 regpin "Response is Stale: referrers as fetched at ')
        stale_filtered = self.referrers(self.connected, self.PROVENANCE)
        self.assertEqual(self.listed(stale_filtered), [self.PROVENANCE])
        self.assertEqual(stale_filtered.header("OCI-Filters-Applied"), "artifactType")
        # A subject never asked about has nothing kept: the upstream's error.
        other = f"/v2/library/signed/referrers/sha256:{'0' * 64}?ns={DOCKER_HUB}"
        self.assertEqual(self.connected.get(other).status, 503)

    def test_export_carries_a_pinned_images_referrers_to_the_air_gapped_site(self):
        self.assertEqual(self.served_digest(self.connected, DOCKER_HUB, "library/signed", "1.0"), self.subject.digest)
        for digest in self.subject.config_digests + self.subject.layer_digests:
            resp = self.connected.get(h.with_query(f"/v2/library/signed/blobs/{digest}", ns=DOCKER_HUB))
            self.assertEqual(resp.status, 200, digest)
        self.assertEqual(self.listed(self.referrers(self.connected)), [self.SBOM, self.PROVENANCE])
        # A verifier fetched the SBOM (manifest and blobs), not the provenance.
        sbom = json.loads(self.upstream.manifests[self.sbom["digest"]][1])
        for kind, digest in [("manifests", self.sbom["digest"])] + [("blobs", d["digest"]) for d in
                                                                    [sbom["config"], *sbom["layers"]]]:
            resp = self.connected.get(h.with_query(f"/v2/library/signed/{kind}/{digest}", ns=DOCKER_HUB),
                                      {"Accept": h.MEDIA_OCI_MANIFEST})
            self.assertEqual(resp.status, 200, f"{kind} {digest}")
        bundle = str(Path(self.new_dir("referrers-bundle"), "bundle.tar"))
        exported = self.export(self.connected.data_dir, bundle, "--image", "docker.io/library/signed:1.0")
        self.assert_succeeded(exported, "export")
        self.assertIn(self.provenance["digest"], exported.stderr, "the referrer never pulled is named")
        names = tar_names(bundle)
        self.assertIn("regpin-referrers.json", names)
        self.assertIn(blob_entry(self.sbom["digest"]), names)

        data = str(Path(self.new_dir("referrers-site"), "data"))
        self.assert_succeeded(self.import_bundle(bundle, "--data", data), "import")
        site = self.offline_regpin(data, DOCKER_HUB)
        offline = self.referrers(site, self.SBOM)
        self.assertEqual(self.listed(offline), [self.SBOM])
        self.assertIsNotNone(offline.header("Warning"))
        resp = site.get(h.with_query(f"/v2/library/signed/manifests/{self.sbom['digest']}", ns=DOCKER_HUB),
                        {"Accept": h.MEDIA_OCI_MANIFEST})
        self.assertEqual((resp.status, h.sha256_digest(resp.body)), (200, self.sbom["digest"]))


class Sha512BundleTest(AirgapTestCase):
    """An image whose layer is addressed by sha512 (docker-registry accepts any digest algorithm
    go-digest knows) goes through regpin, into a bundle and out at an offline site: the blob's
    path in the tar, blobs/sha512/<128 hex>, is longer than ustar's 100-character name field."""

    def test_a_sha512_layer_is_exported_imported_and_served_offline(self):
        hub = h.Registry("sha512-hub").start()
        self.addCleanup(hub.close)
        layer = b"a layer addressed by sha512\n" * 100
        layer_digest = "sha512:" + hashlib.sha512(layer).hexdigest()
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        hub.upload_blob("library/long", layer_digest, layer)
        hub.upload_blob("library/long", h.sha256_digest(config), config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": h.MEDIA_OCI_MANIFEST,
            "config": {"mediaType": h.MEDIA_OCI_CONFIG, "digest": h.sha256_digest(config), "size": len(config)},
            "layers": [{"mediaType": h.MEDIA_OCI_LAYER_GZIP, "digest": layer_digest, "size": len(layer)}],
        }).encode()
        digest = hub.put_manifest("library/long", "1.0", manifest, h.MEDIA_OCI_MANIFEST)

        connected = self.new_regpin([h.Upstream.of(DOCKER_HUB, hub)])
        self.assertEqual(self.served_digest(connected, DOCKER_HUB, "library/long", "1.0"), digest)
        resp = connected.get(h.with_query(f"/v2/library/long/blobs/{layer_digest}", ns=DOCKER_HUB))
        self.assertEqual((resp.status, resp.body), (200, layer))
        resp = connected.get(h.with_query(f"/v2/library/long/blobs/{h.sha256_digest(config)}", ns=DOCKER_HUB))
        self.assertEqual(resp.status, 200)

        bundle = str(Path(self.new_dir("sha512-bundle"), "bundle.tar"))
        self.assert_succeeded(self.export(connected.data_dir, bundle, "--all"), "export")
        entry = "blobs/sha512/" + layer_digest.split(":", 1)[1]
        self.assertIn(entry, tar_names(bundle))
        listed = subprocess.run(["tar", "-tf", bundle], capture_output=True, text=True, check=True).stdout
        self.assertIn(entry + "\n", listed, "GNU tar reads the long name")

        data = str(Path(self.new_dir("sha512-site"), "data"))
        self.assert_succeeded(self.import_bundle(bundle, "--data", data), "import")
        site = self.offline_regpin(data, DOCKER_HUB)
        self.assertEqual(self.served_digest(site, DOCKER_HUB, "library/long", "1.0"), digest)
        resp = site.get(h.with_query(f"/v2/library/long/blobs/{layer_digest}", ns=DOCKER_HUB))
        self.assertEqual((resp.status, resp.body), (200, layer))


class OfflineModeTest(AirgapTestCase):
    """The upstream URL points at a SilentServer, which counts every connection it accepts."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.hub = cls.class_registry("offline-hub")
        layout = h.OciLayout(cls.class_dir("offline-layout"))
        cls.image = h.make_image(layout, "app", seed="offline-app", layer_sizes=(2000, 7000))
        cls.other = h.make_image(layout, "other", seed="offline-other")
        h.push(layout, "library/app:1.0", cls.hub, source_tag="app")
        h.push(layout, "library/other:1.0", cls.hub, source_tag="other")
        connected = cls.class_regpin([h.Upstream.of(DOCKER_HUB, cls.hub)])
        cls.require(cls.prefetch(connected, "app:1.0"))
        cls.bundle = str(Path(cls.class_dir("offline-work"), "bundle.tar"))
        cls.require(cls.export(connected.data_dir, cls.bundle, "--all"))
        connected.stop()

    def setUp(self):
        super().setUp()
        self.silent = h.SilentServer(h.free_port())
        self.addCleanup(self.silent.close)
        self.data = str(Path(self.new_dir("offline-data"), "data"))
        self.assert_succeeded(self.import_bundle(self.bundle, "--data", self.data), "import")

    def silent_upstream(self, **kwargs) -> h.Upstream:
        return h.Upstream(DOCKER_HUB, f"http://127.0.0.1:{self.silent.port}", **kwargs)

    def check_serves_pins_and_refuses_the_rest_without_connecting(self, regpin: h.Regpin) -> None:
        self.assertEqual(self.served_digest(regpin, DOCKER_HUB, "library/app", "1.0"), self.image.digest)
        for digest in self.image.blobs:
            kind = "manifests" if digest == self.image.digest else "blobs"
            resp = regpin.get(h.with_query(f"/v2/library/app/{kind}/{digest}", ns=DOCKER_HUB),
                              {"Accept": h.ACCEPT_ALL_MANIFESTS})
            self.assertEqual(resp.status, 200, f"{kind} {digest}")
            self.assertEqual(h.sha256_digest(resp.body), digest)

        # GET of an uncached blob: see test_a_get_of_an_uncached_blob_is_refused_at_once...
        uncached = [
            ("GET", "an unpinned tag of an imported repository", "/v2/library/app/manifests/2.0"),
            ("HEAD", "an unpinned tag of an imported repository", "/v2/library/app/manifests/2.0"),
            ("GET", "a tag that exists upstream", "/v2/library/other/manifests/1.0"),
            ("HEAD", "a tag that exists upstream", "/v2/library/other/manifests/1.0"),
            ("GET", "a manifest by digest", f"/v2/library/other/manifests/{self.other.digest}"),
            ("HEAD", "a blob", f"/v2/library/other/blobs/{self.other.layer_digests[0]}"),
        ]
        for method, what, path in uncached:
            resp = regpin.request(method, h.with_query(path, ns=DOCKER_HUB), {"Accept": h.ACCEPT_ALL_MANIFESTS},
                                  timeout=10)
            if method == "GET":
                self.assert_offline_refusal(resp, what)
            else:
                self.assertEqual(resp.status, 503, f"HEAD {what}")
        self.assertEqual(self.silent.connections_before_barrier(), 0, "regpin connected to the upstream")

    def test_serve_offline_serves_imported_pins_and_refuses_the_rest_without_connecting_upstream(self):
        regpin = self.new_regpin([self.silent_upstream()], data_dir=self.data, args=["--offline"])
        self.assertIn("offline", regpin.log())
        self.check_serves_pins_and_refuses_the_rest_without_connecting(regpin)

    def test_offline_true_in_the_config_file_does_the_same(self):
        regpin = self.new_regpin([self.silent_upstream()], data_dir=self.data, offline=True)
        self.check_serves_pins_and_refuses_the_rest_without_connecting(regpin)

    def test_a_get_of_an_uncached_blob_is_refused_at_once_and_regpin_keeps_serving(self):
        regpin = self.new_regpin([self.silent_upstream()], data_dir=self.data, args=["--offline"])
        # Twice: with two worker threads, a request that never returns could hide behind the other.
        for layer in self.other.layer_digests + self.other.config_digests:
            try:
                resp = regpin.get(h.with_query(f"/v2/library/other/blobs/{layer}", ns=DOCKER_HUB), timeout=5)
            except TimeoutError:
                stuck = h.tail(regpin.log_path, 1500)
                regpin.kill()  # a stuck regpin may not stop on SIGTERM either
                self.fail(f"GET of the uncached blob {layer} got no answer within 5 s; log tail:\n{stuck}")
            self.assert_offline_refusal(resp, f"GET of the uncached blob {layer}")
        self.assertEqual(regpin.get("/v2/", timeout=5).status, 200)
        self.assertEqual(self.served_digest(regpin, DOCKER_HUB, "library/app", "1.0"), self.image.digest)
        self.assertEqual(self.silent.connections_before_barrier(), 0, "regpin connected to the upstream")

    def test_without_offline_the_same_regpin_does_connect_to_the_silent_upstream(self):
        # The control: SilentServer counts what an online regpin does for uncached content.
        regpin = self.new_regpin([self.silent_upstream(connect_timeout_ms=1000, read_timeout_ms=300)],
                                 data_dir=self.data)
        self.assertEqual(self.served_digest(regpin, DOCKER_HUB, "library/app", "1.0"), self.image.digest)
        resp = regpin.head(h.with_query("/v2/library/other/manifests/1.0", ns=DOCKER_HUB),
                           {"Accept": h.ACCEPT_ALL_MANIFESTS}, timeout=10)
        self.assertNotEqual(resp.status, 200)
        self.assertGreaterEqual(self.silent.connections_before_barrier(), 1)


if __name__ == "__main__":
    unittest.main()
