"""Crash safety (issue 5): SIGKILL regpin, round after round, in the middle of everything it
writes, restart it on the same data folder, and check what survived.

Each round, against a fake upstream (fake_upstream.FakeUpstream):
- cold blob downloads: fresh multi-MiB blobs that the fake streams at about 1.6 MB/s (64 KiB
  every 40 ms), each asked for by two clients at once, so the kill lands mid-download;
- pin creation: four clients pull distinct new tags as fast as they can (first pulls);
- webhook queueing: a few pinned tags are re-pointed upstream and checked through the admin
  API (`POST /api/v1/pin/check`), while the webhook receiver is down. "Down" is a server that
  accepts and never answers (SilentServer, webhook timeout 120 s): a delivery attempt never
  completes before the next kill, so the outbox keeps its entries without their retry backoff
  growing over the rounds.
regpin is killed (SIGKILL) once a blob is mid-download and a random number of pins were
acknowledged in the round. Then, with the upstream answering 503 to everything (so an answer
can only come from what regpin stored), regpin restarts on the same data folder and:
- every pin acknowledged to a client (a 200 with Docker-Content-Digest before the kill) is
  there, unchanged (HEAD through regpin), with its manifest (GET: the body hashes to it);
- a tag that was in flight at the kill is either not pinned (503) or pinned to what the
  upstream served for it;
- no incomplete blob is visible: every blob regpin serves hashes to its digest and a HEAD 200
  announces the full length;
- every re-point event a check acknowledged is listed by the events API.
At the end the receiver comes up (on the webhook's port), regpin restarts once more, and every
event the events API lists as `repointed` must be delivered (bounded wait).

    REGPIN_BIN=../../build/regpin python3 -m unittest -v test_crash
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import queue
import random
import sys
import threading
import time
import unittest
import urllib.parse
from typing import Optional

import harness as h
from fake_upstream import FakeUpstream, Route
from test_pin_lifecycle import WebhookReceiver

ROUNDS = 20
REPO = "crash/app"
REGISTRY = "fake.test"
TOKEN = "crash-admin-token-0123456789abcdef"
MEDIA = h.MEDIA_OCI_MANIFEST
CONFIG_BLOB = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
BLOB_SIZES = (256 * 1024, 1536 * 1024, 3 * 1024 * 1024)
PIN_CLIENTS = 4
TAGS_PER_ROUND = 400  # more than the clients get through before the kill


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(label: str) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": MEDIA,
        "config": {"mediaType": h.MEDIA_OCI_CONFIG, "digest": digest_of(CONFIG_BLOB), "size": len(CONFIG_BLOB)},
        "layers": [],
        "annotations": {"regpin.test.label": label},
    }, sort_keys=True, separators=(",", ":")).encode()


class Ledger:
    """What clients were told before a kill (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked_pins: dict[str, str] = {}  # tag -> digest acknowledged
        self.in_flight_tags: set[str] = set()  # requested, no answer seen
        self.served: dict[str, set[str]] = {}  # tag -> every digest the fake served for it
        self.blobs: dict[str, int] = {}  # digest -> size, every blob ever asked for
        self.acked_events: dict[int, str] = {}  # event id -> new digest, from check answers
        self.round_acks = 0
        self.round_checks = 0
        self.problems: list[str] = []  # what clients saw that they never should

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


class CrashTest(h.LogsOnFailure):
    def setUp(self) -> None:
        self.rng = random.Random(os.environ.get("REGPIN_CRASH_SEED", "regpin-crash"))
        self.fake = FakeUpstream()
        self.addCleanup(self.fake.close)
        self.fake.routes[f"/v2/{REPO}/blobs/{digest_of(CONFIG_BLOB)}"] = Route(body=CONFIG_BLOB)
        self.hook_port = h.free_port()
        self.silent: Optional[h.SilentServer] = h.SilentServer(self.hook_port)
        self.addCleanup(lambda: self.silent and self.silent.close())
        self.receiver: Optional[WebhookReceiver] = None
        self.regpin = h.Regpin(
            [h.Upstream(REGISTRY, self.fake.url, connect_timeout_ms=1000, read_timeout_ms=5000)],
            log_level="info",
            admin_tokens=[h.AdminToken("ops", TOKEN)],
            webhooks=[h.Webhook(f"http://127.0.0.1:{self.hook_port}/hooks/crash", timeout_ms=120000)],
            pin_checks=h.PinChecks(revalidate_after_s=3600, sweep_interval_s=86400, sweep_batch=0),
        )
        self.addCleanup(self.regpin.close)
        self.ledger = Ledger()

    def failure_report(self):
        return [(f"regpin log ({self.regpin.log_path}), last lines", h.tail(self.regpin.log_path, 5000))]

    # -- the fake upstream ----------------------------------------------------------------------

    def serve_manifest(self, tag: str, label: str) -> str:
        body = manifest_bytes(label)
        d = digest_of(body)
        route = Route(body=body, headers={"Content-Type": MEDIA, "Docker-Content-Digest": d})
        self.fake.routes[f"/v2/{REPO}/manifests/{d}"] = route
        with self.ledger.lock:
            self.ledger.served.setdefault(tag, set()).add(d)
        self.fake.routes[f"/v2/{REPO}/manifests/{tag}"] = route
        return d

    # -- clients --------------------------------------------------------------------------------

    def connection(self, timeout: float = 20) -> http.client.HTTPConnection:
        host, port = self.regpin.host.rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=timeout)

    def pin_client(self, tags: "queue.Queue[str]", stop: threading.Event) -> None:
        conn = self.connection()
        try:
            while not stop.is_set():
                try:
                    tag = tags.get_nowait()
                except queue.Empty:
                    return
                with self.ledger.lock:
                    self.ledger.in_flight_tags.add(tag)
                conn.request("GET", f"/v2/{REPO}/manifests/{tag}", headers={"Accept": MEDIA})
                resp = conn.getresponse()
                body = resp.read()
                d = resp.getheader("Docker-Content-Digest")
                if resp.status != 200 or d is None:
                    self.ledger.problem(f"first pull of {tag}: {resp.status} {body[:200]!r}")
                    return
                if digest_of(body) != d or d not in self.ledger.served.get(tag, set()):
                    self.ledger.problem(f"first pull of {tag}: digest {d}, body {digest_of(body)}")
                with self.ledger.lock:
                    self.ledger.acked_pins[tag] = d
                    self.ledger.in_flight_tags.discard(tag)
                    self.ledger.round_acks += 1
        except (OSError, http.client.HTTPException):
            pass  # the kill
        finally:
            conn.close()

    def blob_client(self, d: str, size: int) -> None:
        conn = self.connection()
        try:
            conn.request("GET", f"/v2/{REPO}/blobs/{d}")
            resp = conn.getresponse()
            if resp.status != 200:
                resp.read()
                return
            body = resp.read()  # IncompleteRead or a reset on the kill
            if len(body) != size or digest_of(body) != d:
                self.ledger.problem(f"blob {d}: a complete-looking body of {len(body)} bytes that does not verify")
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()

    def check_client(self, tags: list[str], stop: threading.Event) -> None:
        for tag in tags:
            if stop.is_set():
                return
            try:
                resp = h.http_request(self.regpin.admin_host, "POST", "/api/v1/pin/check",
                                      {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                                      json.dumps({"registry": REGISTRY, "repository": REPO, "tag": tag}).encode(),
                                      timeout=20)
            except (OSError, http.client.HTTPException):
                return  # the kill
            if resp.status != 200:
                self.ledger.problem(f"check {tag}: {resp.status} {resp.body[:300]!r}")
                return
            with self.ledger.lock:
                for result in resp.json()["results"]:
                    for event in result.get("events", []):
                        if event.get("type") == "repointed":
                            self.ledger.acked_events[int(event["id"])] = event["new_digest"]
                self.ledger.round_checks += 1

    # -- a round ----------------------------------------------------------------------------------

    def load_and_kill(self, round_no: int) -> tuple[list[tuple[str, int]], int]:
        """Starts every client, kills regpin mid-way. Returns this round's blobs and how many
        of them were mid-download at the kill."""
        ledger = self.ledger
        blobs = []
        routes = []
        for size in BLOB_SIZES:
            data = os.urandom(size)
            d = digest_of(data)
            route = Route(body=data, drip_interval=0.04, drip_chunk=64 * 1024)
            self.fake.routes[f"/v2/{REPO}/blobs/{d}"] = route
            blobs.append((d, size))
            routes.append(route)
            ledger.blobs[d] = size
        tags: "queue.Queue[str]" = queue.Queue()
        for i in range(TAGS_PER_ROUND):
            tag = f"r{round_no}-t{i}"
            self.serve_manifest(tag, f"{tag}-first")
            tags.put(tag)
        with ledger.lock:
            pinned = sorted(ledger.acked_pins)
        repoint = self.rng.sample(pinned, min(3, len(pinned)))
        for tag in repoint:
            self.serve_manifest(tag, f"{tag}-repointed-in-round-{round_no}")
        with ledger.lock:
            ledger.round_acks = 0
            ledger.round_checks = 0
        threshold = self.rng.randint(2, 12)

        stop = threading.Event()
        threads = [threading.Thread(target=self.blob_client, args=(d, size), daemon=True)
                   for d, size in blobs for _ in range(2)]
        threads += [threading.Thread(target=self.pin_client, args=(tags, stop), daemon=True)
                    for _ in range(PIN_CLIENTS)]
        threads.append(threading.Thread(target=self.check_client, args=(repoint, stop), daemon=True))
        for t in threads:
            t.start()

        def time_to_kill() -> bool:
            mid_download = any(r.started.is_set() and not r.finished.is_set() for r in routes)
            with ledger.lock:
                return (mid_download and ledger.round_acks >= threshold
                        and (not repoint or ledger.round_checks >= 1))

        h.wait_until(time_to_kill, timeout=20, interval=0.005,
                     message=f"round {round_no}: a blob mid-download, {threshold} pins and a check")
        mid = sum(1 for r in routes if r.started.is_set() and not r.finished.is_set())
        stop.set()
        self.regpin.kill()
        for t in threads:
            t.join(timeout=30)
            self.assertFalse(t.is_alive(), "a client thread hangs after the kill")
        return blobs, mid

    # -- checks after a restart -------------------------------------------------------------------

    def head_tag(self, tag: str) -> h.Response:
        return self.regpin.head(f"/v2/{REPO}/manifests/{tag}", {"Accept": MEDIA}, timeout=20)

    def verify(self, round_no: int, blobs: list[tuple[str, int]], full_blob_check: bool) -> tuple[int, set[str]]:
        """Returns how many acknowledged pins were checked and which blobs verified whole."""
        ledger = self.ledger
        with ledger.lock:
            acked = dict(ledger.acked_pins)
            in_flight = set(ledger.in_flight_tags)
            ledger.in_flight_tags.clear()
            events = dict(ledger.acked_events)
            served = {t: set(s) for t, s in ledger.served.items()}
            all_blobs = dict(ledger.blobs)
        self.assertEqual(ledger.problems, [], "clients saw wrong answers before the kill")

        for tag, d in acked.items():
            resp = self.head_tag(tag)
            self.assertEqual((resp.status, resp.header("Docker-Content-Digest")), (200, d),
                             f"round {round_no}: the acknowledged pin {tag} -> {d} after the restart")
            if tag.startswith(f"r{round_no}-"):
                resp = self.regpin.get(f"/v2/{REPO}/manifests/{tag}", {"Accept": MEDIA}, timeout=20)
                self.assertEqual((resp.status, digest_of(resp.body)), (200, d), f"GET {tag}")
        for tag in in_flight - set(acked):
            resp = self.head_tag(tag)
            if resp.status == 200:
                self.assertIn(resp.header("Docker-Content-Digest"), served[tag],
                              f"round {round_no}: {tag} (in flight at the kill) pinned to a digest never served")
            else:
                self.assertEqual(resp.status, 503, f"{tag}: {resp.status}")

        verified: set[str] = set()
        to_get = all_blobs if full_blob_check else dict(blobs)
        for d, size in all_blobs.items():
            resp = self.regpin.head(f"/v2/{REPO}/blobs/{d}", timeout=20)
            if resp.status == 200:
                self.assertEqual(resp.header("Content-Length"), str(size),
                                 f"round {round_no}: HEAD of blob {d} announces an incomplete length")
            else:
                self.assertEqual(resp.status, 503, f"HEAD blob {d}")
            if d in to_get:
                resp = self.regpin.get(f"/v2/{REPO}/blobs/{d}", timeout=60)
                if resp.status == 200:
                    self.assertEqual((len(resp.body), digest_of(resp.body)), (size, d),
                                     f"round {round_no}: blob {d} served incomplete or wrong after the restart")
                    verified.add(d)
                else:
                    self.assertEqual(resp.status, 503, f"GET blob {d}")

        listed = self.repointed_events()
        for event_id, new_digest in events.items():
            self.assertIn(event_id, listed, f"round {round_no}: acknowledged re-point event {event_id} is gone")
            self.assertEqual(listed[event_id], new_digest)
        return len(acked), verified

    def repointed_events(self) -> dict[int, str]:
        resp = self.regpin.admin_request("GET", "/api/v1/events?after=0&limit=100000")
        self.assertEqual(resp.status, 200, resp.body[:300])
        return {int(e["id"]): e["new_digest"] for e in resp.json()["events"] if e["type"] == "repointed"}

    # -- the test ---------------------------------------------------------------------------------

    def test_sigkill_during_downloads_pin_creation_and_alert_queueing_loses_nothing_acknowledged(self):
        started = time.monotonic()
        self.regpin.start()
        pins_checked = 0
        verified: set[str] = set()
        mid_downloads = 0
        for round_no in range(1, ROUNDS + 1):
            self.fake.down_status = None
            blobs, mid = self.load_and_kill(round_no)
            mid_downloads += mid
            self.fake.down_status = 503  # answers now come from what regpin stored, or fail
            self.regpin.start()
            n, ok = self.verify(round_no, blobs, full_blob_check=round_no % 5 == 0)
            pins_checked += n
            verified |= ok
        self.fake.down_status = None

        # The receiver comes up on the webhook's port; one more crash and restart, and every
        # listed re-point must arrive.
        self.silent.close()
        self.silent = None
        self.receiver = WebhookReceiver(port=self.hook_port).start()
        self.addCleanup(self.receiver.stop)
        self.regpin.kill()
        self.regpin.start()
        listed = self.repointed_events()
        self.assertTrue(set(self.ledger.acked_events) <= set(listed))

        def all_delivered() -> bool:
            got = {int(d.event_id) for d in self.receiver.accepted() if d.event_id}
            return set(listed) <= got

        h.wait_until(all_delivered, timeout=60, interval=0.1,
                     message=f"deliveries of the {len(listed)} re-point events listed")
        delivered = {int(d.event_id) for d in self.receiver.accepted() if d.event_id}
        for d in self.receiver.accepted():
            alert = d.alert()
            if int(d.event_id) in listed:
                self.assertEqual(alert["upstream_digest"], listed[int(d.event_id)])
        print(f"\ncrash test: {ROUNDS} rounds in {time.monotonic() - started:.0f}s, "
              f"{pins_checked} acknowledged pins checked ({len(self.ledger.acked_pins)} distinct), "
              f"{len(verified)} blobs verified whole ({mid_downloads} downloads cut by a kill), "
              f"{len(set(listed) & delivered)} alerts delivered ({len(self.ledger.acked_events)} acknowledged by checks)",
              file=sys.stderr)


class LargeBlobCrashTest(h.LogsOnFailure):
    """Large blobs are written without RocksDB's write-ahead log (half the bytes written) and
    flushed before they are committed. A client gets a blob's last byte only after the commit,
    so a SIGKILL right after a complete download must leave the whole blob servable (whole and
    by ranges, which after the restart come from the blob files by sendfile); without the
    flush, its chunks would die with the memtable."""

    def setUp(self):
        self.upstream = h.Registry("large-blob").start()
        self.addCleanup(self.upstream.close)
        self.regpin = h.Regpin([h.Upstream(self.upstream.host, self.upstream.url)], log_level="info")
        self.addCleanup(self.regpin.close)

    def test_sigkill_after_a_large_blob_download_keeps_every_chunk(self):
        data = random.Random("large-blob").randbytes(20 * 1024 * 1024 + 12345)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.upstream.upload_blob("big", digest, data)

        self.regpin.start()
        got = h.http_request(self.regpin.host, "GET", f"/v2/big/blobs/{digest}", timeout=60)
        self.assertEqual(got.status, 200)
        self.assertEqual(hashlib.sha256(got.body).hexdigest(), digest.split(":")[1])
        self.regpin.kill()

        self.upstream.stop()  # from here on, only what regpin stored can answer
        self.regpin.start()
        again = h.http_request(self.regpin.host, "GET", f"/v2/big/blobs/{digest}", timeout=60)
        self.assertEqual(again.status, 200, again.body[:300])
        self.assertEqual(len(again.body), len(data))
        self.assertEqual(hashlib.sha256(again.body).hexdigest(), digest.split(":")[1])
        # After the restart the chunks sit in RocksDB's blob files: plain connections get them
        # with sendfile. A range across two chunk boundaries and the short last chunk.
        for first, last in ((1048000, 3146000), (len(data) - 20000, len(data) - 1)):
            part = h.http_request(self.regpin.host, "GET", f"/v2/big/blobs/{digest}",
                                  {"Range": f"bytes={first}-{last}"}, timeout=60)
            self.assertEqual(part.status, 206, part.body[:300])
            self.assertEqual(part.body, data[first:last + 1], f"bytes {first}-{last}")


if __name__ == "__main__":
    unittest.main()
