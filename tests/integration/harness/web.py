"""HTTP client helpers: `http_request` (one request on a fresh connection, optionally HTTPS),
its `Response`, and `with_query` for query strings."""

from __future__ import annotations

import dataclasses
import http.client
import json
import ssl
import urllib.parse
from typing import Any, Mapping, Optional, Sequence


@dataclasses.dataclass
class Response:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def error_codes(self) -> list[str]:
        """The `code`s of an OCI error body, or [] if the body is not one."""
        try:
            doc = self.json()
            return [e.get("code") for e in doc.get("errors", [])]
        except (ValueError, AttributeError):
            return []


def http_request(
    host: str,
    method: str,
    path: str,
    headers: Optional[Mapping[str, str] | Sequence[tuple[str, str]]] = None,
    body: Optional[bytes] = None,
    timeout: float = 30.0,
    ssl_context: Optional[ssl.SSLContext] = None,
) -> Response:
    """One HTTP/1.1 request to `host` ("127.0.0.1:PORT") on a fresh connection.

    `headers` is a mapping, or a sequence of (name, value) pairs when a header must be sent
    on several lines (e.g. two `Accept` lines). With `ssl_context` the request goes over HTTPS.
    """
    hostname, _, port = host.rpartition(":")
    if ssl_context is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            hostname, int(port), timeout=timeout, context=ssl_context)
    else:
        conn = http.client.HTTPConnection(hostname, int(port), timeout=timeout)
    try:
        if headers is None or isinstance(headers, Mapping):
            conn.request(method, path, body=body, headers=dict(headers or {}))
        else:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.reason, resp.headers, data)
    finally:
        conn.close()


def with_query(path: str, **params: str) -> str:
    """`path` with `params` added to its query string (e.g. ns=docker.io)."""
    if not params:
        return path
    sep = "&" if "?" in path else "?"
    return path + sep + urllib.parse.urlencode(params)
