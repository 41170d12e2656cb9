"""A registry stand-in that misbehaves on demand, for what a real docker-registry cannot do:
serve bytes that do not match their digest, stop mid-body, or hold a body half-sent until the
test says go; reset the connection mid-body (`reset_after`), drip a body a few bytes at a time
(`drip_interval`, `drip_chunk`: the server sleeps between writes, that is the fault), send raw
bytes instead of a status line and headers (`raw_head`: garbage, malformed or huge headers),
send more bytes than Content-Length announces (`extra_after_body`), or answer everything with
one status (`down_status`). Everything else belongs to the real registry in harness.Registry.

Routes are exact paths ("/v2/team/app/blobs/sha256:...") mapped to a `Route`; every request is
recorded (method, path, headers) so tests can count upstream calls and inspect what regpin sent.
"""

from __future__ import annotations

import dataclasses
import http.server
import os
import socket
import struct
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
    # Send this many body bytes, then reset the connection (RST, no FIN).
    reset_after: Optional[int] = None
    # Write the body `drip_chunk` bytes at a time, waiting `drip_interval` seconds after each
    # write (a slow or dripping upstream). Ends early when the fake closes.
    drip_interval: Optional[float] = None
    drip_chunk: int = 1
    # Raw bytes sent instead of the status line and headers (written as given, then `body`,
    # then the connection is closed): garbage status lines, malformed or huge headers.
    raw_head: Optional[bytes] = None
    # Written right after the body, in the same write: more bytes than Content-Length says.
    extra_after_body: bytes = b""
    # Send `Connection: close` and close after the response.
    close: bool = False
    # Set when the response header went out; set when the whole body went out.
    started: threading.Event = dataclasses.field(default_factory=threading.Event)
    finished: threading.Event = dataclasses.field(default_factory=threading.Event)


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
        # When set, every request (but GET /v2/) is answered with this status: the upstream
        # is "down" while it still accepts connections.
        self.down_status: Optional[int] = None
        self.open_connections = 0  # client connections open right now (handler threads alive)
        self.connections_accepted = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake.open_connections += 1
                    fake.connections_accepted += 1

            def finish(self) -> None:
                try:
                    super().finish()
                except OSError:
                    pass
                with fake._lock:
                    fake.open_connections -= 1

            def _reset(self) -> None:
                """Closes the connection with an RST: SO_LINGER 0, then the descriptor itself
                (the file objects of http.server would otherwise keep it open)."""
                self.close_connection = True
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                os.close(self.connection.detach())

            def _serve(self, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                with fake._lock:
                    fake.requests.append(Recorded(self.command, path, dict(self.headers.items())))
                    route = fake.routes.get(path)
                    down = fake.down_status
                if path == "/v2/" and route is None:
                    route = Route(body=b"{}", headers={"Content-Type": "application/json"})
                elif down is not None:
                    route = Route(status=down, body=b'{"errors":[{"code":"UNAVAILABLE"}]}',
                                  headers={"Content-Type": "application/json"})
                if route is None:
                    route = Route(status=404, body=b'{"errors":[{"code":"NOT_FOUND"}]}',
                                  headers={"Content-Type": "application/json"})
                if route.raw_head is not None:
                    self.close_connection = True
                    self.wfile.write(route.raw_head + (b"" if head else route.body))
                    self.wfile.flush()
                    route.started.set()
                    return
                self.send_response(route.status)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                length = route.content_length if route.content_length is not None else len(route.body)
                self.send_header("Content-Length", str(length))
                if route.close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                route.started.set()
                if head:
                    route.finished.set()
                    return
                body = route.body
                if route.reset_after is not None:
                    self.wfile.write(body[: route.reset_after])
                    self.wfile.flush()
                    self._reset()
                    return
                if route.drip_interval is not None:
                    step = max(1, route.drip_chunk)
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i:i + step])
                        self.wfile.flush()
                        if fake._stop.wait(route.drip_interval):
                            self.close_connection = True
                            return
                    self.wfile.write(route.extra_after_body)
                    route.finished.set()
                    return
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
                self.wfile.write(body + route.extra_after_body)
                self.wfile.flush()
                route.finished.set()

            def do_GET(self) -> None:
                try:
                    self._serve(head=False)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True  # regpin hung up first: allowed

            def do_HEAD(self) -> None:
                try:
                    self._serve(head=True)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                import sys
                if not isinstance(sys.exc_info()[1], OSError):  # a peer hanging up is no error
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.method == method and r.path == path)

    def total_requests(self) -> int:
        """Every request received so far, whatever its path."""
        with self._lock:
            return len(self.requests)

    def where(self, predicate: Callable[[Recorded], bool]) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if predicate(r)]

    def close(self) -> None:
        self._stop.set()
        for route in self.routes.values():
            route.release.set()
        self.server.shutdown()
        self.server.server_close()
