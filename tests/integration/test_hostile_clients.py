"""Hostile and broken clients (issue 5): what a client can send to regpin's registry listener.

Raw sockets, so that requests no well-behaved client library would send can be sent: invalid
and traversal names, oversized headers, a header dripped one byte at a time (slowloris), a
client that never reads, more connections than `max_connections`, Content-Length together with
Transfer-Encoding (request smuggling), pipelining, HTTP/1.0, methods other than GET and HEAD,
and a push. The only upstream is a recording fake (fake_upstream.FakeUpstream), so "no upstream
request" is a count; regpin's own log (one line per request) tells which requests reached the
handler. After every test regpin must still be alive and answering.

    REGPIN_BIN=../../build/regpin python3 -m unittest -v test_hostile_clients
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import socket
import time
import unittest
from typing import Optional

import harness as h
from fake_upstream import FakeUpstream, Route
from test_pull_through import RegpinTestCase

HEADER_TIMEOUT_MS = 1500
IDLE_TIMEOUT_MS = 2000
MEDIA_OCI_MANIFEST = h.MEDIA_OCI_MANIFEST


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(label: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST, "layers": [],
                       "config": {"mediaType": h.MEDIA_OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2},
                       "annotations": {"label": label}}, sort_keys=True).encode()


# ------------------------------------------------------------------------------------------------
# A raw HTTP/1.1 connection
# ------------------------------------------------------------------------------------------------


class RawResponse:
    def __init__(self, version: str, status: int, reason: str, headers: list[tuple[str, str]], body: bytes):
        self.version, self.status, self.reason, self.headers, self.body = version, status, reason, headers, body

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def error_codes(self) -> list[str]:
        try:
            return [e.get("code") for e in json.loads(self.body)["errors"]]
        except (ValueError, KeyError, TypeError):
            return []

    def __repr__(self) -> str:
        return f"<{self.version} {self.status} {self.reason} {self.body[:200]!r}>"


class RawConnection:
    """One TCP connection to `host` ("127.0.0.1:PORT"): send any bytes, parse answers."""

    def __init__(self, host: str, timeout: float = 10.0, rcvbuf: Optional[int] = None):
        hostname, _, port = host.rpartition(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((hostname, int(port)))
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, head: bool = False) -> RawResponse:
        """The next answer on the connection. EOFError if the connection closed first."""
        line = self.file.readline(65537)
        if not line:
            raise EOFError("connection closed before a status line")
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3}) ?(.*?)\r?\n$", line)
        if not m:
            raise ValueError(f"not a status line: {line[:200]!r}")
        headers = []
        for _ in range(1000):
            hl = self.file.readline(65537)
            if hl in (b"\r\n", b"\n", b""):
                break
            name, _, value = hl.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        resp = RawResponse(m[1].decode(), int(m[2]), m[3].decode("latin-1"), headers, b"")
        if head or resp.status in (204, 304) or 100 <= resp.status < 200:
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            for _ in range(1 << 20):
                size = int(self.file.readline(1024).split(b";")[0].strip(), 16)
                if size == 0:
                    self.file.readline(1024)
                    break
                chunks.append(self.file.read(size))
                self.file.readline(1024)
            resp.body = b"".join(chunks)
        elif resp.header("Content-Length") is not None:
            resp.body = self.file.read(int(resp.header("Content-Length")))
        else:
            resp.body = self.file.read()
        return resp

    def closed_within(self, seconds: float) -> bool:
        """True when the peer closes (EOF or reset) within `seconds`, discarding whatever
        arrives meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                if not self.file.read1(65536):
                    return True
            except (ConnectionError, OSError) as e:
                if isinstance(e, (TimeoutError, socket.timeout)):
                    return False
                return True

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def request_bytes(method: str, target: str, headers: Optional[list[tuple[str, str]]] = None,
                  version: str = "HTTP/1.1", body: bytes = b"") -> bytes:
    lines = [f"{method} {target} {version}", "Host: regpin.test"]
    lines += [f"{k}: {v}" for k, v in (headers or [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ------------------------------------------------------------------------------------------------


class HostileClientTestCase(RegpinTestCase):
    SETTINGS: dict = {}

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeUpstream()
        cls.addClassCleanup(cls.fake.close)
        # pin_content "none": a pin made by one test would otherwise fetch its content in the
        # background while a later test counts the upstream's requests (CI saw 7 for 6 once).
        cls.regpin = h.Regpin([h.Upstream("fake.test", cls.fake.url)], log_level="debug",
                              settings={"pin_content": "none", **cls.SETTINGS})
        cls.addClassCleanup(cls.regpin.close)
        cls.regpin.start()

    def tearDown(self):
        self.assertTrue(self.regpin.running, f"regpin died:\n{self.regpin.log()[-3000:]}")
        self.assertEqual(self.regpin.get("/v2/", timeout=10).status, 200, "regpin no longer answers")

    def raw(self, **kwargs) -> RawConnection:
        conn = RawConnection(self.regpin.host, **kwargs)
        self.addCleanup(conn.close)
        return conn

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in self.regpin.log().splitlines() if needle in line]

    def add_manifest(self, path: str, label: str) -> bytes:
        body = manifest_bytes(label)
        # By tag and by digest, as a registry serves it (a HEAD by tag is followed by a GET by
        # digest).
        for p in (path, path.rpartition("/")[0] + "/" + digest_of(body)):
            self.fake.routes[p] = Route(body=body, headers={"Content-Type": MEDIA_OCI_MANIFEST,
                                                            "Docker-Content-Digest": digest_of(body)})
        return body


class HostileRequestTest(HostileClientTestCase):
    SETTINGS = {"client_header_timeout_ms": HEADER_TIMEOUT_MS, "client_idle_timeout_ms": IDLE_TIMEOUT_MS}

    # Invalid names, tags and digests: 400, and regpin asks no upstream.
    INVALID = [
        "/v2/a/%2e%2e/manifests/x",
        "/v2/..%2f../manifests/x",
        "/v2/team/%2e%2e/%2e%2e/etc/manifests/x",
        "/v2/team/app%2fother/manifests/x",
        "/v2/team/app%00/manifests/x",
        "/v2/team/app/manifests/%2e%2e%2f%2e%2e%2fx",
        "/v2/team/app/blobs/sha256:%2e%2e%2f%2e%2e",
        "/v2/a/../manifests/x",
        "/v2/../../etc/passwd/manifests/x",
        "/v2/./team/manifests/x",
        "/v2/../team/manifests/x",
        "/v2/team/../../v2/manifests/x",
        "/v2/team/app/manifests/.hidden",
        "/v2/team/app/manifests/-dash",
        "/v2/team/app/manifests/" + "t" * 129,
        "/v2/" + "a" * 256 + "/manifests/x",
        "/v2/" + "/".join(["abcdefgh"] * 40) + "/manifests/x",
        "/v2/team/app/blobs/sha256:" + "A" * 64,
        "/v2/team/app/blobs/sha256:" + "a" * 63,
        "/v2/team/app/blobs/md5:" + "a" * 32,
        "/v2/team/app/blobs/sha256:" + "a" * 64 + "..",
        "/v2/Team/App/manifests/x",
        "/v2/team\\app/manifests/x",
        "/v2/team/app/tags/list/../../manifests/x",
    ]
    # Paths whose reference holds a slash are not API paths at all: 400 or 404, never upstream.
    NOT_API = [
        "/v2/team/app/manifests/../x",
        "/v2/team/app/blobs/../../etc/passwd",
        "/v2/team/app/manifests/x/../../blobs/y",
        "/v2/team/app/manifests/",
        "/v2/team/app/manifests/sha256:../../etc",
    ]

    def test_invalid_names_tags_and_digests_are_400_before_any_upstream_request(self):
        before = (self.fake.total_requests(), self.fake.connections_accepted)
        for path in self.INVALID:
            for method in ("GET", "HEAD"):
                with self.subTest(method=method, path=path[:120]):
                    conn = self.raw()
                    conn.send(request_bytes(method, path, [("Accept", MEDIA_OCI_MANIFEST)]))
                    resp = conn.response(head=method == "HEAD")
                    self.assertEqual(resp.status, 400, f"{method} {path[:120]}: {resp}")
                    if method == "GET":
                        self.assertTrue(resp.error_codes(), f"not an OCI error body: {resp}")
        for path in self.NOT_API:
            with self.subTest(path=path):
                conn = self.raw()
                conn.send(request_bytes("GET", path))
                resp = conn.response()
                self.assertIn(resp.status, (400, 404), resp)
                self.assertTrue(resp.error_codes(), f"not an OCI error body: {resp}")
        self.assertEqual((self.fake.total_requests(), self.fake.connections_accepted), before,
                         "an invalid request reached the upstream")

    def test_absolute_form_and_connect_targets_never_make_regpin_contact_that_host(self):
        """A client naming a host in the request target (proxy style) must not make regpin
        contact it: the fake's own address is the target."""
        before = (self.fake.total_requests(), self.fake.connections_accepted)
        for method, target in [("GET", f"http://127.0.0.1:{self.fake.port}/v2/team/app/manifests/x"),
                               ("GET", f"//127.0.0.1:{self.fake.port}/v2/team/app/manifests/x"),
                               ("CONNECT", f"127.0.0.1:{self.fake.port}")]:
            with self.subTest(method=method, target=target):
                conn = self.raw()
                conn.send(request_bytes(method, target))
                resp = conn.response()
                self.assertGreaterEqual(resp.status, 400, resp)
                self.assertLess(resp.status, 500, resp)
        self.assertEqual((self.fake.total_requests(), self.fake.connections_accepted), before)

    def test_request_line_or_headers_over_max_header_bytes_are_431(self):
        before = self.fake.total_requests()
        cases = {
            "long request line": request_bytes("GET", "/v2/team/app/manifests/" + "a" * 20000),
            "one huge header": request_bytes("GET", "/v2/", [("X-Big", "b" * 20000)]),
            "many headers": request_bytes("GET", "/v2/", [(f"X-H{i}", "h" * 100) for i in range(200)]),
        }
        for name, data in cases.items():
            with self.subTest(case=name):
                conn = self.raw()
                try:
                    conn.send(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # closed while we were still sending: then the answer must be there
                resp = conn.response()
                self.assertEqual(resp.status, 431, resp)
        self.assertEqual(self.fake.total_requests(), before)

    def test_slowloris_header_dripped_one_byte_per_200ms_is_cut_off_while_others_are_served(self):
        conn = self.raw()
        data = request_bytes("GET", "/v2/", [("X-Slow", "s" * 200)])[:-4]  # never ends
        started = time.monotonic()
        closed_after: Optional[float] = None
        served_meanwhile = None
        for i in range(len(data)):  # bounded: at most len(data) drips of 200 ms
            try:
                conn.send(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - started
                break
            if i == 3:  # while the drip goes on, another client is served promptly
                t = time.monotonic()
                resp = self.regpin.get("/v2/", timeout=5)
                served_meanwhile = (resp.status, time.monotonic() - t)
            readable, _, _ = select.select([conn.sock], [], [], 0.2)  # the drip's interval
            if readable:
                try:
                    got = conn.sock.recv(65536)
                except ConnectionResetError:
                    got = b""
                if not got or got.startswith(b"HTTP/"):
                    closed_after = time.monotonic() - started
                    break
        self.assertIsNotNone(closed_after, "regpin never cut the dripping client off")
        limit = HEADER_TIMEOUT_MS / 1000
        self.assertLess(closed_after, limit + 1.5, f"cut off after {closed_after:.2f}s")
        self.assertGreater(closed_after, limit * 0.6, f"cut off after {closed_after:.2f}s: too early to be the header timeout")
        self.assertIsNotNone(served_meanwhile)
        self.assertEqual(served_meanwhile[0], 200)
        self.assertLess(served_meanwhile[1], 1.0, "another client waited behind the slow one")

    def test_a_client_that_never_reads_a_big_blob_blocks_nobody_and_is_dropped_after_the_idle_timeout(self):
        data = os.urandom(24 * 1024 * 1024)
        d = digest_of(data)
        path = f"/v2/team/big/blobs/{d}"
        self.fake.routes[path] = Route(body=data)
        resp = self.regpin.get(path)  # cache it
        self.assertEqual((resp.status, digest_of(resp.body)), (200, d))

        stalled = self.raw(rcvbuf=4096)
        stalled.send(request_bytes("GET", path + "?stalled=1"))  # and never read
        # Others are served meanwhile: the same blob whole, and a manifest.
        started = time.monotonic()
        resp = self.regpin.get(path, timeout=20)
        self.assertEqual((resp.status, digest_of(resp.body)), (200, d))
        self.assertEqual(self.regpin.get("/v2/", timeout=5).status, 200)
        self.assertLess(time.monotonic() - started, IDLE_TIMEOUT_MS / 1000,
                        "the other clients waited for the one that does not read")
        # regpin gives the stalled write up after client_idle_timeout_ms and logs the request
        # with the bytes it managed to write.
        line = h.wait_until(lambda: self.log_lines("stalled=1"), timeout=IDLE_TIMEOUT_MS / 1000 + 10,
                            message="regpin to give up on the client that does not read")
        m = re.search(r" bytes=(\d+) ", line[0])
        self.assertIsNotNone(m, line)
        self.assertLess(int(m.group(1)), len(data), line)
        # What the stalled client can still read is the beginning of the blob, then the end.
        got = 0
        stalled.sock.settimeout(5)
        try:
            for _ in range(100000):
                chunk = stalled.sock.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
        except (ConnectionResetError, socket.timeout):
            pass
        self.assertLess(got, len(data) + 4096, "the stalled client got the whole blob after the timeout")

    SMUGGLED = "/v2/smuggled-{}/manifests/x"

    def smuggling_cases(self) -> dict[str, bytes]:
        def hidden(tag: str) -> bytes:
            return request_bytes("GET", self.SMUGGLED.format(tag))

        cases = {}
        body = b"0\r\n\r\n" + hidden("cl-te")
        cases["cl-te"] = request_bytes("GET", "/v2/", [("Content-Length", str(len(body))),
                                                       ("Transfer-Encoding", "chunked")], body=body)
        body = b"0\r\n\r\n" + hidden("te-cl")
        cases["te-cl"] = request_bytes("GET", "/v2/", [("Transfer-Encoding", "chunked"),
                                                       ("Content-Length", str(len(body)))], body=body)
        body = b"0\r\n\r\n" + hidden("cl0-te")
        cases["cl0-te"] = request_bytes("GET", "/v2/", [("Content-Length", "0"),
                                                        ("Transfer-Encoding", "chunked")], body=body)
        body = hidden("te-obfuscated")
        cases["te-obfuscated"] = request_bytes("GET", "/v2/", [("Content-Length", str(len(body))),
                                                               ("Transfer-Encoding", "xchunked")], body=body)
        body = hidden("two-cl")
        cases["two-cl"] = request_bytes("GET", "/v2/", [("Content-Length", "0"),
                                                        ("Content-Length", str(len(body)))], body=body)
        body = hidden("get-body")
        cases["get-body"] = request_bytes("GET", "/v2/", [("Content-Length", str(len(body)))], body=body)
        body = b"5\r\nhello\r\n0\r\n\r\n" + hidden("chunked-get")
        cases["chunked-get"] = request_bytes("GET", "/v2/", [("Transfer-Encoding", "chunked")], body=body)
        return cases

    def test_content_length_with_transfer_encoding_is_refused_and_nothing_is_smuggled(self):
        for name, data in self.smuggling_cases().items():
            with self.subTest(case=name):
                conn = self.raw()
                conn.send(data)
                answers = []
                for _ in range(3):  # at most the two requests, and then EOF
                    try:
                        answers.append(conn.response())
                    except (EOFError, ConnectionError):
                        break
                    except socket.timeout:
                        self.fail(f"{name}: the connection stayed open after {answers}")
                self.assertLessEqual(len(answers), 1, f"{name}: more than one answer: {answers}")
                if answers:
                    self.assertGreaterEqual(answers[0].status, 400, f"{name}: {answers[0]}")
                    self.assertLess(answers[0].status, 500, f"{name}: {answers[0]}")
                self.assertEqual(self.log_lines(f"smuggled-{name}"), [], "the hidden request reached the handler")
                self.assertEqual(self.fake.count("GET", self.SMUGGLED.format(name)), 0)

    def test_pipelined_requests_get_their_answers_in_order(self):
        a = self.add_manifest("/v2/team/pipe/manifests/a", "pipe-a")
        b = self.add_manifest("/v2/team/pipe/manifests/b", "pipe-b")
        accept = [("Accept", MEDIA_OCI_MANIFEST)]
        conn = self.raw()
        conn.send(request_bytes("GET", "/v2/team/pipe/manifests/a", accept)
                  + request_bytes("HEAD", "/v2/team/pipe/manifests/b", accept)
                  + request_bytes("GET", "/v2/team/pipe/manifests/b", accept)
                  + request_bytes("GET", "/v2/"))
        first = conn.response()
        second = conn.response(head=True)
        third = conn.response()
        fourth = conn.response()
        self.assertEqual((first.status, first.header("Docker-Content-Digest"), first.body), (200, digest_of(a), a))
        self.assertEqual((second.status, second.header("Docker-Content-Digest")), (200, digest_of(b)))
        self.assertEqual(second.header("Content-Length"), str(len(b)))
        self.assertEqual((third.status, third.header("Docker-Content-Digest"), third.body), (200, digest_of(b), b))
        self.assertEqual(fourth.status, 200)
        self.assertEqual(json.loads(fourth.body), {})

    def test_http_1_0_request_gets_a_valid_answer_and_the_connection_closes(self):
        body = self.add_manifest("/v2/team/old/manifests/v1", "old")
        for target, expected in [("/v2/", None), ("/v2/team/old/manifests/v1", body)]:
            with self.subTest(target=target):
                conn = self.raw()
                conn.send(f"GET {target} HTTP/1.0\r\nAccept: {MEDIA_OCI_MANIFEST}\r\n\r\n".encode())
                resp = conn.response()
                self.assertRegex(resp.version, r"^HTTP/1\.[01]$")
                self.assertEqual(resp.status, 200, resp)
                if expected is not None:
                    self.assertEqual(resp.body, expected)
                self.assertTrue(conn.closed_within(5), "the HTTP/1.0 connection stayed open")

    def test_methods_other_than_get_and_head_are_405_unsupported_and_reach_no_upstream(self):
        before = (self.fake.total_requests(), self.fake.connections_accepted)
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"):
            for path in ("/v2/", "/v2/team/app/manifests/v1", f"/v2/team/app/blobs/sha256:{'a' * 64}",
                         "/v2/team/app/tags/list"):
                with self.subTest(method=method, path=path):
                    conn = self.raw()
                    conn.send(request_bytes(method, path, [("Content-Length", "0")]))
                    resp = conn.response()
                    self.assertEqual(resp.status, 405, resp)
                    self.assertIn("UNSUPPORTED", resp.error_codes(), resp)
                    allow = {m.strip() for m in (resp.header("Allow") or "").split(",")}
                    self.assertEqual(allow, {"GET", "HEAD"}, resp.headers)
        self.assertEqual((self.fake.total_requests(), self.fake.connections_accepted), before)

    def test_a_push_is_refused_clearly_at_once_without_reading_its_body(self):
        before = self.fake.total_requests()
        conn = self.raw()
        conn.send(request_bytes("POST", "/v2/team/app/blobs/uploads/", [("Content-Length", "0")]))
        resp = conn.response()
        self.assertEqual(resp.status, 405, resp)
        self.assertIn("UNSUPPORTED", resp.error_codes(), resp)
        self.assertRegex(resp.body.decode(), r"(?i)pull|read-only|push", "the refusal does not say why")

        # A push as skopeo sends it: a manifest PUT with its (small) body.
        manifest = manifest_bytes("pushed")
        conn = self.raw()
        conn.send(request_bytes("PUT", "/v2/team/app/manifests/v1",
                                [("Content-Type", MEDIA_OCI_MANIFEST), ("Content-Length", str(len(manifest)))],
                                body=manifest))
        resp = conn.response()
        self.assertEqual(resp.status, 405, resp)
        self.assertIn("UNSUPPORTED", resp.error_codes(), resp)

        # A manifest PUT announcing 100 MiB: the answer comes before (without) the body.
        conn = self.raw()
        started = time.monotonic()
        conn.send(request_bytes("PUT", "/v2/team/app/manifests/v1",
                                [("Content-Type", MEDIA_OCI_MANIFEST), ("Content-Length", str(100 << 20))],
                                body=b'{"schemaVersion":2,'))
        resp = conn.response()
        self.assertEqual(resp.status, 405, resp)
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertTrue(conn.closed_within(5), "regpin kept the connection of a refused push open")
        self.assertEqual(self.fake.total_requests(), before)


class MaxConnectionsTest(HostileClientTestCase):
    SETTINGS = {"max_connections": 10}

    def open_established(self) -> RawConnection:
        """A connection regpin accepted and counts: it answered a request on it."""
        def attempt() -> Optional[RawConnection]:
            conn = RawConnection(self.regpin.host)
            conn.send(request_bytes("GET", "/v2/"))
            resp = conn.response()
            if resp.status == 200:
                return conn
            conn.close()  # a connection of a previous check may not be counted out yet
            return None

        conn = h.wait_until(attempt, timeout=10, interval=0.05, message="an accepted connection")
        self.addCleanup(conn.close)
        return conn

    def open_busy(self) -> RawConnection:
        """A connection in the middle of a request: the first half of its header sent (regpin
        waits for the rest up to client_header_timeout_ms, 10 s by default)."""
        conn = self.open_established()
        conn.send(b"GET /v2/ HTTP/1.1\r\n")
        return conn

    def test_the_eleventh_connection_gets_503_at_once_when_ten_are_in_a_request(self):
        busy = [self.open_busy() for _ in range(10)]

        started = time.monotonic()
        extra = self.raw(timeout=5)
        resp = extra.response()  # without sending anything: regpin answers at once
        # A connection regpin accepted would wait for a request until the idle timeout.
        self.assertLess(time.monotonic() - started, IDLE_TIMEOUT_MS / 1000, "the refusal was not immediate")
        self.assertEqual(resp.status, 503, resp)
        self.assertIn("UNAVAILABLE", resp.error_codes(), resp)
        self.assertTrue((resp.header("Content-Type") or "").startswith("application/json"), resp.headers)
        self.assertTrue(extra.closed_within(5), "the refused connection was not closed")

        # The ten finish their requests undisturbed.
        for i, conn in enumerate(busy):
            with self.subTest(connection=i):
                conn.send(b"Host: regpin.test\r\n\r\n")
                self.assertEqual(conn.response().status, 200)

    def test_at_the_cap_the_connection_idle_longest_makes_room_for_a_new_one(self):
        idle = [self.open_established() for _ in range(10)]  # oldest first, all waiting
        # regpin starts a connection's idle time after it has sent the answer, so two
        # connections opened one after the other may start theirs in either order. Another
        # round trip on every connection but the first makes the first the idle longest by
        # nine answers at least.
        for conn in idle[1:]:
            conn.send(request_bytes("GET", "/v2/"))
            self.assertEqual(conn.response().status, 200)
        newcomer = self.raw(timeout=5)
        newcomer.send(request_bytes("GET", "/v2/"))
        self.assertEqual(newcomer.response().status, 200)
        self.assertTrue(idle[0].closed_within(5), "the oldest idle connection was not closed")
        for i, conn in enumerate(idle[1:], start=1):
            with self.subTest(connection=i):
                conn.send(request_bytes("GET", "/v2/"))
                self.assertEqual(conn.response().status, 200)

    def tearDown(self):
        # Close everything first, so the liveness check of the base class gets a connection.
        self.doCleanups()
        h.wait_until(lambda: self.regpin.get("/v2/", timeout=5).status == 200, timeout=10,
                     message="regpin to serve again after the connections closed")
        super().tearDown()


if __name__ == "__main__":
    unittest.main()
