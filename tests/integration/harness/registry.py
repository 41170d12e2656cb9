"""The upstream: a docker-registry 2.8 (`Registry`) and its parsed access log
(`AccessLogEntry`)."""

from __future__ import annotations

import dataclasses
import http.client
import os
import re
import subprocess
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Mapping, Optional

from .auth import TokenServer, basic_auth, parse_www_authenticate

if TYPE_CHECKING:
    from .images import Image
from .images import ACCEPT_ALL_MANIFESTS, sha256_digest
from .process import (LoopbackServer, TempDirProcess, _spawn, _terminate, free_port, make_temp_dir,
                      tail, wait_until)
from .tls import ServerCert
from .web import Response, http_request

# docker-registry 2.8 writes one Apache "combined" access line per request to stdout
# (gorilla/handlers CombinedLoggingHandler), after the handler returned, e.g.:
#   127.0.0.1 - - [26/Nov/2026:20:51:42 +0000] "HEAD /v2/foo/manifests/bar HTTP/1.1" 404 93 "" "curl/7.88.1"
# The logrus lines (`time="..." level=info msg="response completed" ...`) go to stderr and are
# not counted. The request target in the access line includes the query string.
ACCESS_LINE_RE = re.compile(
    r'^(?P<remote>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] '
    r'"(?P<method>[A-Z]+) (?P<uri>\S+) (?P<proto>[^"]+)" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"\s*$'
)


@dataclasses.dataclass(frozen=True)
class AccessLogEntry:
    method: str
    uri: str  # path plus query, as sent
    path: str  # without the query
    query: str
    status: int
    size: int
    user_agent: str


class Registry(LoopbackServer, TempDirProcess):
    """A docker-registry 2.8 (`docker-registry serve CONFIG`) on 127.0.0.1:<free port>.

    Storage, config and log live in a fresh temp dir and survive stop()/start(), which reuse
    the same port. Use as a context manager or call close() to stop and delete everything.
    """

    def __init__(
        self,
        name: str = "upstream",
        *,
        tls: Optional["ServerCert"] = None,
        htpasswd: Optional[str] = None,
        token_auth: Optional["TokenServer"] = None,
        credentials: Optional[tuple[str, str]] = None,
    ):
        """`tls`: serve HTTPS with this certificate (`http.tls`); the harness's own requests
        trust the CA that issued it. `htpasswd`: require Basic auth against this bcrypt file
        (`auth.htpasswd`). `token_auth`: require Bearer tokens from this TokenServer
        (`auth.token`). `credentials`: (user, password) the harness uses for its own requests
        and for push() (Basic for htpasswd, at the token server for token auth)."""
        if htpasswd and token_auth:
            raise ValueError("docker-registry takes one auth method")
        self.name = name
        self.dir = make_temp_dir(f"registry-{name}")
        self.port = free_port()
        self.storage_dir = os.path.join(self.dir, "storage")
        self.config_path = os.path.join(self.dir, "config.yml")
        self.log_path = os.path.join(self.dir, "registry.log")
        self.tls = tls
        self.credentials = credentials
        self.ssl_context = tls.client_context() if tls else None
        self.requires_auth = bool(htpasswd or token_auth)
        self._proc: Optional[subprocess.Popen] = None
        config = (
            "version: 0.1\n"
            "log:\n"
            "  level: info\n"
            "  accesslog:\n"
            "    disabled: false\n"
            "storage:\n"
            "  filesystem:\n"
            f"    rootdirectory: {self.storage_dir}\n"
            "  delete:\n"
            "    enabled: true\n"
            "http:\n"
            f"  addr: 127.0.0.1:{self.port}\n"
            f"  secret: {uuid.uuid4().hex}\n"
        )
        if tls:
            config += f"  tls:\n    certificate: {tls.cert_path}\n    key: {tls.key_path}\n"
        if htpasswd:
            config += f"auth:\n  htpasswd:\n    realm: regpin-test\n    path: {htpasswd}\n"
        if token_auth:
            config += (
                "auth:\n  token:\n"
                f"    realm: {token_auth.realm}\n"
                f"    service: {token_auth.service}\n"
                f"    issuer: {token_auth.issuer}\n"
                f"    rootcertbundle: {token_auth.root_cert_bundle}\n"
            )
        with open(self.config_path, "w") as f:
            f.write(config)

    def request(self, method: str, path: str, headers: Optional[Mapping[str, str]] = None,
                body: Optional[bytes] = None, timeout: float = 30.0, authenticate: bool = True) -> Response:
        """A request straight to the registry (HTTPS if it has TLS). With `authenticate`, a 401
        is answered the way a client would: Basic with `credentials`, or a token fetched from
        the challenge's realm with `credentials` (anonymously without them), then retried."""
        hdrs = dict(headers or {})
        resp = http_request(self.host, method, path, hdrs, body, timeout, ssl_context=self.ssl_context)
        if resp.status != 401 or not authenticate:
            return resp
        challenge = parse_www_authenticate(resp.header("WWW-Authenticate") or "")
        if challenge.get("scheme") == "basic" and self.credentials:
            hdrs["Authorization"] = basic_auth(*self.credentials)
        elif challenge.get("scheme") == "bearer" and challenge.get("realm"):
            query = {"service": challenge.get("service", "")}
            if challenge.get("scope"):
                query["scope"] = challenge["scope"]
            realm = urllib.parse.urlsplit(challenge["realm"])
            token_headers = {"Authorization": basic_auth(*self.credentials)} if self.credentials else {}
            token_resp = http_request(realm.netloc, "GET", f"{realm.path}?{urllib.parse.urlencode(query)}",
                                      token_headers, timeout=timeout)
            if token_resp.status != 200:
                return resp
            hdrs["Authorization"] = "Bearer " + token_resp.json()["token"]
        else:
            return resp
        return http_request(self.host, method, path, hdrs, body, timeout, ssl_context=self.ssl_context)

    def start(self) -> "Registry":
        if self.running:
            return self
        self._proc = _spawn(["docker-registry", "serve", self.config_path], self.log_path)
        # An auth-protected registry answers GET /v2/ with 401 once it is up.
        ready_statuses = (200, 401) if self.requires_auth else (200,)
        try:
            wait_until(
                lambda: self._check_alive() and self.request("GET", "/v2/", timeout=2, authenticate=False).status in ready_statuses,
                timeout=15,
                message=f"docker-registry {self.name} on {self.host}",
            )
        except BaseException as e:
            self.stop()
            raise RuntimeError(f"{e}\n--- log ---\n{tail(self.log_path)}") from e
        return self

    def _check_alive(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(
                f"docker-registry {self.name} exited with {self._proc.returncode}:\n{tail(self.log_path)}"
            )
        return True

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stops the registry (SIGTERM, then SIGKILL after 10 s) and waits for it to exit,
        after which its port refuses connections. Storage and log are kept."""
        if self._proc is not None:
            _terminate(self._proc, timeout=10)
            self._proc = None


    # -- access log --------------------------------------------------------------------------

    def access_log(self) -> list[AccessLogEntry]:
        """Every request the registry logged so far, in log order."""
        entries = []
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                m = ACCESS_LINE_RE.match(line)
                if not m:
                    continue
                path, _, query = m["uri"].partition("?")
                size = m["size"]
                entries.append(
                    AccessLogEntry(
                        method=m["method"],
                        uri=m["uri"],
                        path=path,
                        query=query,
                        status=int(m["status"]),
                        size=0 if size == "-" else int(size),
                        user_agent=m["agent"],
                    )
                )
        return entries

    def access_log_count(self, method: str, path_regex: str) -> int:
        """How many logged requests had `method` and a path (query excluded) that
        fully matches `path_regex`."""
        pattern = re.compile(path_regex)
        return sum(
            1 for e in self.access_log() if e.method == method and pattern.fullmatch(e.path)
        )

    def sync_log(self, timeout: float = 10.0) -> None:
        """Barrier for access_log(): the registry logs a request only after answering it, so a
        request that has just completed may not be in the log yet. This sends a marker request
        and waits until its line appears; lines of requests that completed before are then
        in the log as well (each is written right after its handler returns)."""
        marker = f"/v2/?regpin-log-sync={uuid.uuid4().hex}"
        # Unauthenticated on purpose: a 401 is logged too, and no token is requested.
        self.request("GET", marker, timeout=timeout, authenticate=False)
        wait_until(
            lambda: any(e.uri == marker for e in self.access_log()),
            timeout=timeout,
            message=f"log marker of {self.name}",
        )

    # -- direct registry operations (test setup and assertions) -------------------------------

    def manifest_digest(self, repo: str, reference: str, accept: str = ACCEPT_ALL_MANIFESTS) -> Optional[str]:
        """Docker-Content-Digest of a HEAD on the manifest, or None on 404."""
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", {"Accept": accept})
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise RuntimeError(f"HEAD manifest {repo}:{reference} on {self.name}: {resp.status}")
        return resp.header("Docker-Content-Digest")

    def get_manifest(self, repo: str, reference: str, accept: str = ACCEPT_ALL_MANIFESTS) -> Response:
        return self.request("GET", f"/v2/{repo}/manifests/{reference}", {"Accept": accept})

    def upload_blob(self, repo: str, digest: str, body: bytes | str, timeout: float = 600) -> None:
        """Monolithic blob upload (POST, then one PUT with the whole body): `body` is the bytes,
        or the path of a file to stream (blobs too large to hold in memory). Plain HTTP, no
        auth: the registries the tests and benchmarks start for content."""
        started = self.request("POST", f"/v2/{repo}/blobs/uploads/", {"Content-Length": "0"})
        if started.status != 202:
            raise RuntimeError(f"upload of {digest} to {self.name}: {started.status} {started.body[:200]!r}")
        location = urllib.parse.urlsplit(started.header("Location"))
        query = (location.query + "&" if location.query else "") + "digest=" + urllib.parse.quote(digest)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/octet-stream"}
            if isinstance(body, bytes):
                conn.request("PUT", f"{location.path}?{query}", body=body, headers=headers)
            else:
                headers["Content-Length"] = str(os.path.getsize(body))
                with open(body, "rb") as f:
                    conn.request("PUT", f"{location.path}?{query}", body=f, headers=headers)
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        if resp.status != 201:
            raise RuntimeError(f"upload of {digest} to {self.name}: {resp.status}")

    def put_manifest(self, repo: str, tag: str, body: bytes, media_type: str) -> str:
        """Pushes manifest bytes under `tag` (its blobs must already be in `repo`)."""
        resp = self.request("PUT", f"/v2/{repo}/manifests/{tag}", {"Content-Type": media_type}, body)
        if resp.status != 201:
            raise RuntimeError(f"PUT manifest {repo}:{tag} on {self.name}: {resp.status} {resp.body!r}")
        return resp.header("Docker-Content-Digest") or sha256_digest(body)

    def push_image(self, repo: str, img: "Image") -> str:
        """Pushes an image made by images.make_image over the HTTP API (its blobs, then its
        manifest under its tag): no skopeo, for tests that push many. Returns its digest."""
        for d, data in img.blobs.items():
            if d != img.digest:
                self.upload_blob(repo, d, data)
        return self.put_manifest(repo, img.tag, img.blobs[img.digest], img.media_type)

    def retag(self, repo: str, source_tag: str, new_tag: str) -> str:
        """Points `new_tag` at the manifest that `source_tag` names. Returns its digest."""
        resp = self.get_manifest(repo, source_tag)
        if resp.status != 200:
            raise RuntimeError(f"GET manifest {repo}:{source_tag} on {self.name}: {resp.status}")
        media_type = (resp.header("Content-Type") or "").split(";")[0].strip()
        return self.put_manifest(repo, new_tag, resp.body, media_type)
