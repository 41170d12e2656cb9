"""Backup and restore (issue 15, point 6): `regpin backup DIR` makes a consistent copy of a
running regpin's data folder while pulls run; a regpin started on that copy serves every pinned
tag with the upstream stopped."""

from __future__ import annotations

import json
import os
import threading

import harness as h



class BackupTest(h.LogsOnFailure):
    def setUp(self):
        self.upstream = h.Registry().start()
        self.addCleanup(self.upstream.close)
        layout = h.OciLayout(os.path.join(h.make_temp_dir("layout"), "oci"))
        self.images = []
        for i in range(8):
            img = h.make_image(layout, "v1", seed=f"backup-{i}", layer_sizes=(3 << 20, 200_000))
            self.upstream.push_image(f"team/app{i}", img)
            self.images.append(img)
        self.regpin = h.Regpin([h.Upstream("upstream.test", self.upstream.url)],
                               admin_tokens=[h.AdminToken("ops", "backup-token-0123456789")]).start()
        self.addCleanup(self.regpin.close)

    def pull(self, regpin: h.Regpin, i: int) -> None:
        img = self.images[i]
        resp = regpin.get(f"/v2/team/app{i}/manifests/v1", {"Accept": h.MEDIA_OCI_MANIFEST})
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(resp.header("Docker-Content-Digest"), img.digest)
        for d in img.config_digests + img.layer_digests:
            r = regpin.get(f"/v2/team/app{i}/blobs/{d}", timeout=60)
            self.assertEqual(r.status, 200, r.body[:300])
            self.assertEqual(h.sha256_digest(r.body), d)

    def test_a_backup_taken_during_pulls_restores_every_pin_offline(self):
        for i in range(4):
            self.pull(self.regpin, i)
        # Pulls of the other images run while the backup is taken.
        errors: list[BaseException] = []

        def pulling() -> None:
            try:
                for i in range(4, 8):
                    self.pull(self.regpin, i)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = threading.Thread(target=pulling)
        t.start()
        backup = os.path.join(h.make_temp_dir("backup"), "regpin-backup")
        out = self.regpin.cli("backup", backup, check=True).stdout
        t.join()
        self.assertEqual(errors, [])
        self.assertIn("backup written to " + backup, out)

        # Refused clearly: an existing folder, a relative path.
        again = self.regpin.cli("backup", backup)
        self.assertEqual(again.returncode, 1)
        self.assertIn("exists", again.stderr)
        relative = self.regpin.cli("backup", "relative/dir")
        self.assertEqual(relative.returncode, 1)
        self.assertIn("absolute", relative.stderr)

        # What the backup holds of the pins: every tag pinned before it began.
        pins = json.loads(self.regpin.admin_request("GET", "/api/v1/pins").body)["pins"]
        self.assertGreaterEqual(len(pins), 4)

        # Restore: a regpin on the backup folder, the upstream stopped.
        self.upstream.stop()
        restored = h.Regpin([h.Upstream("upstream.test", self.upstream.url)], data_dir=backup,
                            admin_tokens=[h.AdminToken("ops", "backup-token-0123456789")]).start()
        self.addCleanup(restored.close)
        for i in range(4):
            self.pull(restored, i)
        restored_pins = json.loads(restored.admin_request("GET", "/api/v1/pins").body)["pins"]
        by_ref = {p["reference"]: p["digest"] for p in restored_pins}
        for i in range(4):
            self.assertEqual(by_ref.get(f"upstream.test/team/app{i}:v1"), self.images[i].digest)
        # The history came along too.
        history = json.loads(restored.admin_request(
            "GET", "/api/v1/pin?registry=upstream.test&repository=team/app0&tag=v1").body)
        self.assertEqual([e["type"] for e in history["history"]], ["pinned"])


if __name__ == "__main__":
    import unittest
    unittest.main()
