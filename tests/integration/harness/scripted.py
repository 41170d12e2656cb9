"""Scripted servers in Python: `ScriptedHTTPServer` (fake upstreams, CDNs and token servers
that record every request as a `RecordedRequest` and answer with a `Reply`) and
`SilentServer` (accepts connections and never answers)."""

from __future__ import annotations

import dataclasses
import http.server
import re
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Any, Callable, Mapping, Optional

from .process import wait_until


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: tuple[tuple[str, str], ...]  # every header line, in order, as received
    time: float  # time.monotonic() when the request arrived

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive), one per line received."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> Optional[str]:
        values = self.header_values(name)
        return values[0] if values else None


@dataclasses.dataclass
class Reply:
    status: int = 200
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""


class ScriptedHTTPServer:
    """A threaded HTTP/1.1 server (http.server) on `bind_host`:<kernel port>. Every request is
    recorded (`requests`), then answered by `handler(request) -> Reply`; Content-Length is
    always set, so connections stay alive. `bind_host` may be another loopback address such as
    127.0.0.2, to play a second host."""

    def __init__(self, handler: Callable[[RecordedRequest], Reply], bind_host: str = "127.0.0.1",
                 tls: Optional["ServerCert"] = None):
        """`tls` (a ServerCert) serves HTTPS instead of HTTP."""
        self.handler = handler
        self.tls = tls
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with outer._lock:
                    outer._sockets.add(self.connection)

            def finish(self) -> None:
                with outer._lock:
                    outer._sockets.discard(self.connection)
                super().finish()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                pass

            def _serve(self) -> None:
                split = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                request = RecordedRequest(
                    method=self.command,
                    path=split.path,
                    query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
                    headers=tuple(self.headers.items()),
                    time=time.monotonic(),
                )
                with outer._lock:
                    outer.requests.append(request)
                try:
                    reply = outer.handler(request)
                except Exception as e:  # noqa: BLE001 - a broken fake answers 500, visibly
                    reply = Reply(500, {"Content-Type": "text/plain"}, f"fake server error: {e!r}".encode())
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD" and reply.body:
                    self.wfile.write(reply.body)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

        self._server = http.server.ThreadingHTTPServer((bind_host, 0), Handler)
        self._server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert_path, tls.key_path)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.bind_host = bind_host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def host(self) -> str:
        return f"{self.bind_host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self) -> "ScriptedHTTPServer":
        self._thread.start()
        return self

    def recorded(self, method: Optional[str] = None, path_regex: Optional[str] = None) -> list[RecordedRequest]:
        """Requests received so far (a snapshot), optionally filtered by method and by a path
        that fully matches `path_regex`. A request is recorded before it is answered, so every
        request whose answer a client has seen is in here."""
        with self._lock:
            requests = list(self.requests)
        pattern = re.compile(path_regex) if path_regex else None
        return [
            r for r in requests
            if (method is None or r.method == method) and (pattern is None or pattern.fullmatch(r.path))
        ]

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:  # end kept-alive connections, so no handler thread lingers
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "ScriptedHTTPServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1:`port` and never answers: a hung upstream.
    Reads and discards whatever arrives. Bounded: every wait has a timeout; close() ends it."""

    def __init__(self, port: int):
        self.port = port
        self.accepted = 0
        self.peers: list[tuple[str, int]] = []  # the client address of each accepted connection
        self._barrier_peers: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except socket.timeout:
                pass
            except OSError:
                return
            else:
                conn.setblocking(False)
                with self._lock:
                    self._conns.append(conn)
                    self.accepted += 1
                    self.peers.append(peer)
            with self._lock:
                conns = list(self._conns)
            for c in conns:  # drain, so the peer's writes never block
                try:
                    while c.recv(65536):
                        pass
                except (BlockingIOError, OSError):
                    pass

    def connections_before_barrier(self, timeout: float = 10.0) -> int:
        """How many connections others made before now, without sleeping: connects once itself,
        waits until that connection is accepted (the kernel hands out pending connections in
        arrival order, so every earlier one has been accepted by then) and counts the others."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            mine = s.getsockname()
            with self._lock:
                self._barrier_peers.add(mine)

            def others_before_mine() -> Optional[list[tuple[str, int]]]:
                with self._lock:
                    if mine not in self.peers:
                        return None
                    before = self.peers[:self.peers.index(mine)]
                    return [[p for p in before if p not in self._barrier_peers]]  # truthy

            return len(wait_until(others_before_mine, timeout=timeout, message="the barrier connection")[0])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._listener.close()
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()


class CuttableProxy:
    """A TCP proxy on 127.0.0.1:`port` to `target` ("127.0.0.1:PORT"): a network link that a
    test can cut (every open connection is closed and new ones are refused at once) and restore.
    For partitioning one client from a server while others still reach it."""

    def __init__(self, target: str):
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self._cut.is_set():
                conn.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._conns += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(None)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Closes every connection through the proxy and refuses new ones."""
        self._cut.set()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)
