"""A registry stand-in that misbehaves on demand, for what a real docker-registry cannot do:
serve bytes that do not match their digest, stop mid-body, or hold a body half-sent until the
test says go. Everything else belongs to the real registry in harness.Registry.

Routes are exact paths ("/v2/team/app/blobs/sha256:...") mapped to a `Route`; every request is
recorded (method, path, headers) so tests can count upstream calls and inspect what regpin sent.
"""

from __future__ import annotations

import dataclasses
import http.server
import threading
from typing import Callable, Optional

from harness import free_port


@dataclasses.dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    # Content-Length to announce; None means len(body).
    content_length: Optional[int] = None
    # Send this many body bytes, then wait for `release` before sending the rest.
    hold_after: Optional[int] = None
    release: threading.Event = dataclasses.field(default_factory=threading.Event)
    # Close the connection after this many body bytes (a short body).
    cut_after: Optional[int] = None
    # Set once `hold_after` bytes have been written and flushed.
    held: threading.Event = dataclasses.field(default_factory=threading.Event)


@dataclasses.dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


class FakeUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.routes: dict[str, Route] = {}
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _serve(self, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                with fake._lock:
                    fake.requests.append(Recorded(self.command, path, dict(self.headers.items())))
                    route = fake.routes.get(path)
                if path == "/v2/" and route is None:
                    route = Route(body=b"{}", headers={"Content-Type": "application/json"})
                if route is None:
                    route = Route(status=404, body=b'{"errors":[{"code":"NOT_FOUND"}]}',
                                  headers={"Content-Type": "application/json"})
                self.send_response(route.status)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                length = route.content_length if route.content_length is not None else len(route.body)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if head:
                    return
                body = route.body
                if route.cut_after is not None:
                    self.wfile.write(body[: route.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if route.hold_after is not None:
                    self.wfile.write(body[: route.hold_after])
                    self.wfile.flush()
                    route.held.set()
                    route.release.wait(timeout=60)
                    body = body[route.hold_after:]
                self.wfile.write(body)
                self.wfile.flush()

            def do_GET(self) -> None:
                try:
                    self._serve(head=False)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # regpin hung up first: allowed

            def do_HEAD(self) -> None:
                try:
                    self._serve(head=True)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.method == method and r.path == path)

    def where(self, predicate: Callable[[Recorded], bool]) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if predicate(r)]

    def close(self) -> None:
        for route in self.routes.values():
            route.release.set()
        self.server.shutdown()
        self.server.server_close()
