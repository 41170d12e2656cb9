"""Helpers for regpin's integration tests: real servers and clients on loopback.

Everything a test starts lives in a fresh temporary directory (tempfile.mkdtemp), listens on
127.0.0.1 on a port picked by the kernel, and writes its log to a file in that directory, so
a failing test can show the log tail. Readiness is awaited by polling (`wait_until`); nothing
here sleeps to synchronise.

Servers and tools, all from Debian 12 packages unless noted:

- `Registry`: a docker-registry 2.8 (Distribution) upstream with filesystem storage.
- `OciLayout`, `make_image`, `push`: synthetic images written by Python as an OCI image
  layout, pushed with `skopeo copy --all --preserve-digests`.
- `Containerd`: a private containerd 1.6 daemon (own root, state and socket), driven by `ctr`.
- `Skopeo`: skopeo with a private policy.json and registries.conf.
- `Regpin`: the binary under test (`$REGPIN_BIN`, default `<repo>/build/regpin`).
- `CertificateAuthority`: a throwaway CA and server certificates, made with the `openssl` CLI.
- `write_htpasswd`: a bcrypt htpasswd file (`htpasswd` from apache2-utils).
- `TokenServer` (Python): a Docker token server issuing RS256 JWTs for docker-registry's
  `auth.token`, signed with `openssl dgst`.
- `ScriptedHTTPServer` (Python): fake upstreams and CDNs that record every request;
  `SilentServer` (Python): accepts connections and never answers.

Only the standard library is used.
"""

from __future__ import annotations

import atexit
import base64
import dataclasses
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
import unittest
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]

# The containerd namespace every `ctr` call uses.
CTR_NAMESPACE = "regpin-test"

# Set REGPIN_TEST_KEEP=1 to keep temp dirs (logs, storage) after the tests for debugging.
KEEP_TEMP = os.environ.get("REGPIN_TEST_KEEP") == "1"

MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

# What containerd 1.6 sends when it resolves a tag (one header line).
ACCEPT_ALL_MANIFESTS = ", ".join(
    [MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX, "*/*"]
)

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Polls `predicate` until it returns a truthy value, and returns that value.

    Exceptions raised by the predicate count as "not yet". Raises TimeoutError after
    `timeout` seconds, naming `message` and the last exception seen, if any.
    """
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}{detail}")
        time.sleep(interval)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_temp_dir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=f"regpin-it-{prefix}-")


def remove_temp_dir(path: Optional[str]) -> None:
    if path and not KEEP_TEMP:
        shutil.rmtree(path, ignore_errors=True)


def tail(path: str | Path, max_bytes: int = 6000) -> str:
    """The last `max_bytes` of a log file, for failure messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"


class CommandError(RuntimeError):
    def __init__(self, cmd: Sequence[str], result: subprocess.CompletedProcess):
        self.cmd = list(cmd)
        self.result = result
        super().__init__(
            f"command failed with rc={result.returncode}: {' '.join(self.cmd)}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
        )


def run(
    cmd: Sequence[str],
    *,
    env: Optional[Mapping[str, str]] = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Runs `cmd`, capturing text output. Raises CommandError on a non-zero exit if `check`."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    result = subprocess.run(
        list(cmd),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise CommandError(cmd, result)
    return result


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


_live_processes: set[subprocess.Popen] = set()
_live_lock = threading.Lock()


def _spawn(cmd: Sequence[str], log_path: str, env: Optional[Mapping[str, str]] = None) -> subprocess.Popen:
    """Starts a long-running server with stdout and stderr appended to `log_path`. It is
    terminated at interpreter exit if the test forgot to stop it. `env` adds to os.environ."""
    full_env = dict(os.environ, **env) if env else None
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=full_env)
    with _live_lock:
        _live_processes.add(proc)
    return proc


@atexit.register
def _terminate_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live_processes)
    for proc in leftovers:
        try:
            _terminate(proc, timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    with _live_lock:
        _live_processes.discard(proc)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    with _live_lock:
        _live_processes.discard(proc)


# --------------------------------------------------------------------------------------------
# Upstream: docker-registry 2.8
# --------------------------------------------------------------------------------------------

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


class Registry:
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

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

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

    def close(self) -> None:
        self.stop()
        remove_temp_dir(self.dir)

    def __enter__(self) -> "Registry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def retag(self, repo: str, source_tag: str, new_tag: str) -> str:
        """Points `new_tag` at the manifest that `source_tag` names. Returns its digest."""
        resp = self.get_manifest(repo, source_tag)
        if resp.status != 200:
            raise RuntimeError(f"GET manifest {repo}:{source_tag} on {self.name}: {resp.status}")
        media_type = (resp.header("Content-Type") or "").split(";")[0].strip()
        return self.put_manifest(repo, new_tag, resp.body, media_type)


# --------------------------------------------------------------------------------------------
# Synthetic images in an OCI image layout
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Image:
    """What `make_image` built: the digests a test compares against."""

    tag: str
    digest: str  # top-level manifest digest (the index's for multi-arch images)
    media_type: str  # MEDIA_OCI_MANIFEST or MEDIA_OCI_INDEX
    size: int
    platform_manifests: dict[str, str]  # "linux/amd64" -> manifest digest
    config_digests: list[str]
    layer_digests: list[str]
    blobs: dict[str, bytes]  # every manifest, config and layer by digest

    @property
    def all_digests(self) -> list[str]:
        return list(self.blobs)

    @property
    def is_index(self) -> bool:
        return self.media_type == MEDIA_OCI_INDEX

    def manifest_for(self, platform: str) -> str:
        return self.platform_manifests[platform]

    def layer_bytes(self, digest: str) -> bytes:
        return self.blobs[digest]


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _deterministic_layer(rng: random.Random, size: int, name: str) -> tuple[bytes, bytes]:
    """(uncompressed tar, tar.gz) holding one file of `size` random bytes. Timestamps and
    owners are fixed, so the same seed gives the same digests on every run."""
    content = rng.randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=1) as f:
        f.write(tar_bytes)
    return tar_bytes, gz.getvalue()


class OciLayout:
    """An OCI image layout directory (oci-layout, index.json, blobs/sha256/) written by Python.

    Several images may share one layout; each is named in index.json by the
    `org.opencontainers.image.ref.name` annotation, which is what `oci:<dir>:<tag>` selects.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        self._index_path = self.path / "index.json"
        if not self._index_path.exists():
            self._write_index([])

    def _write_index(self, manifests: list[dict]) -> None:
        self._index_path.write_bytes(
            _json_bytes({"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": manifests})
        )

    def add_blob(self, data: bytes, media_type: str) -> dict:
        """Stores `data` and returns its descriptor."""
        digest = sha256_digest(data)
        blob_path = self.path / "blobs" / "sha256" / digest.split(":", 1)[1]
        if not blob_path.exists():
            blob_path.write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def _name_ref(self, descriptor: dict, tag: str) -> None:
        index = json.loads(self._index_path.read_text())
        entries = [
            m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
        ]
        entry = dict(descriptor)
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        entries.append(entry)
        self._write_index(entries)

    def add_image(
        self,
        tag: str,
        *,
        seed: str,
        platforms: Sequence[str] = ("linux/amd64",),
        multi_arch: Optional[bool] = None,
        layer_sizes: Sequence[int] = (4096,),
        labels: Optional[Mapping[str, str]] = None,
        revision: Optional[str] = None,
    ) -> Image:
        """Builds an image and names it `tag` in this layout.

        `seed` makes the content: the same seed and arguments give the same digests, another
        seed gives other layers. Each platform gets its own config and layers of
        `layer_sizes` random bytes (gzip of random data is barely smaller than the data).
        With more than one platform, or `multi_arch=True`, the tag names an OCI index over
        one manifest per platform; otherwise it names the single OCI manifest.
        `revision` sets the `org.opencontainers.image.revision` label (and annotation).
        """
        if multi_arch is None:
            multi_arch = len(platforms) > 1
        all_labels = dict(labels or {})
        if revision is not None:
            all_labels["org.opencontainers.image.revision"] = revision
        blobs: dict[str, bytes] = {}
        platform_manifests: dict[str, str] = {}
        config_digests: list[str] = []
        layer_digests: list[str] = []
        manifest_descriptors: list[dict] = []

        def store(data: bytes, media_type: str) -> dict:
            desc = self.add_blob(data, media_type)
            blobs[desc["digest"]] = data
            return desc

        for platform in platforms:
            os_name, _, arch_variant = platform.partition("/")
            arch, _, variant = arch_variant.partition("/")
            rng = random.Random(f"{seed}|{platform}")
            layer_descs, diff_ids = [], []
            for i, size in enumerate(layer_sizes):
                tar_bytes, gz_bytes = _deterministic_layer(rng, size, f"regpin-test/layer-{i}.bin")
                diff_ids.append(sha256_digest(tar_bytes))
                desc = store(gz_bytes, MEDIA_OCI_LAYER_GZIP)
                layer_descs.append(desc)
                layer_digests.append(desc["digest"])
            config = {
                "architecture": arch,
                "os": os_name,
                "created": "2024-01-01T00:00:00Z",
                "config": {
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                    "Cmd": ["/regpin-test/layer-0.bin"],
                    "Labels": dict(all_labels, **{"regpin.test.seed": seed}),
                },
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
                "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"regpin test {seed}"}],
            }
            if variant:
                config["variant"] = variant
            config_desc = store(_json_bytes(config), MEDIA_OCI_CONFIG)
            config_digests.append(config_desc["digest"])
            manifest = {
                "schemaVersion": 2,
                "mediaType": MEDIA_OCI_MANIFEST,
                "config": config_desc,
                "layers": layer_descs,
            }
            if revision is not None:
                manifest["annotations"] = {"org.opencontainers.image.revision": revision}
            manifest_desc = store(_json_bytes(manifest), MEDIA_OCI_MANIFEST)
            platform_manifests[platform] = manifest_desc["digest"]
            plat = {"architecture": arch, "os": os_name}
            if variant:
                plat["variant"] = variant
            manifest_descriptors.append(dict(manifest_desc, platform=plat))

        if multi_arch:
            index = {"schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": manifest_descriptors}
            top = store(_json_bytes(index), MEDIA_OCI_INDEX)
        else:
            top = {k: v for k, v in manifest_descriptors[0].items() if k != "platform"}
        self._name_ref(top, tag)
        return Image(
            tag=tag,
            digest=top["digest"],
            media_type=top["mediaType"],
            size=top["size"],
            platform_manifests=platform_manifests,
            config_digests=config_digests,
            layer_digests=layer_digests,
            blobs=blobs,
        )


def make_image(layout: OciLayout | str | Path, tag: str, **kwargs: Any) -> Image:
    """`OciLayout(layout).add_image(tag, **kwargs)`; see OciLayout.add_image."""
    if not isinstance(layout, OciLayout):
        layout = OciLayout(layout)
    return layout.add_image(tag, **kwargs)


def make_large_image(layout: OciLayout | str | Path, tag: str, *, seed: str, size: int = 8 << 20) -> Image:
    """A single-platform image with one layer of `size` random bytes (default 8 MiB)."""
    return make_image(layout, tag, seed=seed, layer_sizes=(size,))


# --------------------------------------------------------------------------------------------
# skopeo
# --------------------------------------------------------------------------------------------


class Skopeo:
    """skopeo with its own policy.json (accept anything) and registries.conf, so the host's
    /etc/containers files do not matter. `registries_conf` is the registries.conf text, e.g.
    from mirror_registries_conf(); every subcommand that reads it gets `--registries-conf`."""

    def __init__(self, registries_conf: str = ""):
        self.dir = make_temp_dir("skopeo")
        self.policy_path = os.path.join(self.dir, "policy.json")
        self.registries_conf_path = os.path.join(self.dir, "registries.conf")
        self.tmp_dir = os.path.join(self.dir, "tmp")
        os.mkdir(self.tmp_dir)
        with open(self.policy_path, "w") as f:
            json.dump({"default": [{"type": "insecureAcceptAnything"}]}, f)
        self.set_registries_conf(registries_conf)

    def set_registries_conf(self, text: str) -> None:
        with open(self.registries_conf_path, "w") as f:
            f.write(text)

    # Subcommands that take the hidden `--registries-conf FILE` flag. skopeo 1.9.3 ignores the
    # CONTAINERS_REGISTRIES_CONF environment variable (measured: it still loads
    # /etc/containers/registries.conf), so the flag is what makes the file count.
    _TAKES_REGISTRIES_CONF = {"copy", "inspect", "list-tags", "sync", "delete", "login", "logout"}

    def _env(self) -> dict[str, str]:
        return {
            # Honoured by newer skopeo versions; harmless here.
            "CONTAINERS_REGISTRIES_CONF": self.registries_conf_path,
            # Keep skopeo away from any auth file on the host.
            "REGISTRY_AUTH_FILE": os.path.join(self.dir, "auth.json"),
            "TMPDIR": self.tmp_dir,
        }

    def _command(self, args: Sequence[str]) -> list[str]:
        args = list(args)
        # Global flags (--debug, ...) may come first; the flag goes right after the subcommand.
        for i, arg in enumerate(args):
            if not arg.startswith("-"):
                if arg in self._TAKES_REGISTRIES_CONF:
                    args[i + 1:i + 1] = ["--registries-conf", self.registries_conf_path]
                break
        return ["skopeo", "--policy", self.policy_path, "--registries.d", self.dir, *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Runs `skopeo --policy P --registries.d D SUBCOMMAND --registries-conf F ARGS...`."""
        return run(self._command(args), env=self._env(), timeout=timeout, check=check)

    def copy_to_oci(self, source: str, dest_dir: str | Path, tag: str = "copied", *extra: str) -> str:
        """`skopeo copy --all --preserve-digests SOURCE oci:DEST:TAG`, then returns the digest
        the layout records for TAG (the top-level manifest or index digest as fetched)."""
        self("copy", "--all", "--preserve-digests", "--quiet", *extra, source, f"oci:{dest_dir}:{tag}")
        index = json.loads((Path(dest_dir) / "index.json").read_text())
        for m in index["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return m["digest"]
        raise RuntimeError(f"tag {tag} not in {dest_dir}/index.json")

    def inspect_raw(self, source: str, *extra: str) -> bytes:
        """The manifest bytes `skopeo inspect --raw SOURCE` prints (exactly as served)."""
        # Binary output: run() would decode it as text.
        result = subprocess.run(
            self._command(["inspect", "--raw", *extra, source]),
            stdin=subprocess.DEVNULL, capture_output=True, timeout=120, env=dict(os.environ, **self._env()),
        )
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace")
            raise RuntimeError(f"skopeo inspect --raw {source} failed: {stderr}")
        return result.stdout

    def close(self) -> None:
        remove_temp_dir(self.dir)


_default_skopeo: Optional[Skopeo] = None
_default_skopeo_lock = threading.Lock()


def default_skopeo() -> Skopeo:
    """A process-wide Skopeo with an empty registries.conf (removed at exit)."""
    global _default_skopeo
    with _default_skopeo_lock:
        if _default_skopeo is None:
            _default_skopeo = Skopeo()
            atexit.register(_default_skopeo.close)
        return _default_skopeo


def mirror_registries_conf(prefix: str, mirror_location: str, dead_location: str = "127.0.0.1:1") -> str:
    """registries.conf text that sends references under `prefix` to the mirror
    `mirror_location` ("host:port/path-prefix", plain HTTP) and nowhere else.

    The primary `location` is rewritten to `dead_location` (nothing listens on port 1), so
    if the mirror fails, skopeo's fallback fails too: a successful pull came from the mirror.
    Use a loopback "127.0.0.1:PORT" as `prefix`, never a DNS name: should the file not be
    read, skopeo would otherwise look the name up in DNS.
    The mirror's path must be valid in a docker reference: "127.0.0.1:5000/docker.io" is,
    "127.0.0.1:5000/127.0.0.1:6000" is not (a path component may not hold ':').
    """
    return (
        "[[registry]]\n"
        f'prefix = "{prefix}"\n'
        f'location = "{dead_location}"\n'
        "\n"
        "[[registry.mirror]]\n"
        f'location = "{mirror_location}"\n'
        "insecure = true\n"
    )


def push(layout: OciLayout | str | Path, ref: str, registry: Registry | str, *, source_tag: Optional[str] = None,
         credentials: Optional[tuple[str, str]] = None) -> None:
    """Copies the image named `source_tag` (default: the tag of `ref`) from the layout to
    `<registry host>/<ref>` with `skopeo copy --all --preserve-digests`, over plain HTTP or
    over HTTPS without verification (`--dest-tls-verify=false` tries HTTPS first).

    `ref` is "repo:tag"; `registry` a Registry or a "host:port" string. `credentials`
    (default: the Registry's own) go to skopeo as `--dest-creds`.
    """
    layout_path = layout.path if isinstance(layout, OciLayout) else Path(layout)
    host = registry.host if isinstance(registry, Registry) else registry
    repo, _, tag = ref.rpartition(":")
    if not repo or "/" in tag:
        raise ValueError(f"push wants 'repo:tag', got {ref!r}")
    if credentials is None and isinstance(registry, Registry):
        credentials = registry.credentials
    creds = ["--dest-creds", f"{credentials[0]}:{credentials[1]}"] if credentials else []
    default_skopeo()(
        "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "--quiet", *creds,
        f"oci:{layout_path}:{source_tag or tag}", f"docker://{host}/{repo}:{tag}",
    )


# --------------------------------------------------------------------------------------------
# containerd
# --------------------------------------------------------------------------------------------


def write_hosts_toml(hosts_dir: str | Path, registry: str, mirror_url: str, fail_closed: bool = True) -> Path:
    """Writes `<hosts_dir>/<registry>/hosts.toml` so containerd pulls `registry` via `mirror_url`.

    `registry` is the reference's host as written ("docker.io", "127.0.0.1:5000"); containerd
    1.6 looks up `host_port_` first, then `host:port`, then `_default`, and this writes the
    `host:port` form. With `fail_closed`, `server` is the mirror itself, so no other endpoint
    can serve the pull (containerd still adds `?ns=<registry>` because the hosts differ).
    Otherwise `server` is left out and containerd falls back to the registry itself; never
    use that for docker.io here, where the fallback is registry-1.docker.io off this machine.
    """
    mirror_url = mirror_url.rstrip("/")
    lines = []
    if fail_closed:
        lines.append(f'server = "{mirror_url}"')
        lines.append("")
    lines += [
        f'[host."{mirror_url}"]',
        '  capabilities = ["pull", "resolve"]',
        '  dial_timeout = "2s"',
        "",
    ]
    directory = Path(hosts_dir) / registry
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hosts.toml"
    path.write_text("\n".join(lines))
    return path


@dataclasses.dataclass(frozen=True)
class CtrImage:
    name: str
    media_type: str
    digest: str
    platforms: str


class Containerd:
    """A private containerd 1.6 daemon: root, state, sockets and config in a fresh temp dir.

    The CRI plugin and the snapshotters that need special filesystems are disabled. Pulls
    unpack with the `native` snapshotter (`SNAPSHOTTER`), which needs no mounts; overlayfs
    happens to work on this machine too but is not needed to test a registry proxy.
    """

    SNAPSHOTTER = "native"

    def __init__(self) -> None:
        self.dir = make_temp_dir("containerd")
        self.root = os.path.join(self.dir, "root")
        self.state = os.path.join(self.dir, "state")
        self.address = os.path.join(self.dir, "containerd.sock")
        self.config_path = os.path.join(self.dir, "config.toml")
        self.log_path = os.path.join(self.dir, "containerd.log")
        self.hosts_dir = os.path.join(self.dir, "certs.d")
        os.makedirs(self.hosts_dir)
        self._proc: Optional[subprocess.Popen] = None
        with open(self.config_path, "w") as f:
            f.write(
                "version = 2\n"
                f'root = "{self.root}"\n'
                f'state = "{self.state}"\n'
                "disabled_plugins = [\n"
                '  "io.containerd.grpc.v1.cri",\n'
                '  "io.containerd.snapshotter.v1.aufs",\n'
                '  "io.containerd.snapshotter.v1.btrfs",\n'
                '  "io.containerd.snapshotter.v1.devmapper",\n'
                '  "io.containerd.snapshotter.v1.zfs",\n'
                '  "io.containerd.internal.v1.tracing",\n'
                "]\n"
                "\n[grpc]\n"
                f'  address = "{self.address}"\n'
                "\n[ttrpc]\n"
                f'  address = "{self.address}.ttrpc"\n'
                "\n[debug]\n"
                '  address = ""\n'
                '  level = "info"\n'
                "\n[metrics]\n"
                '  address = ""\n'
                "\n[plugins]\n"
                '  [plugins."io.containerd.internal.v1.opt"]\n'
                f'    path = "{os.path.join(self.dir, "opt")}"\n'
            )

    def start(self) -> "Containerd":
        self._proc = _spawn(["containerd", "--config", self.config_path], self.log_path)

        def ready() -> bool:
            if self._proc.poll() is not None:
                raise RuntimeError(f"containerd exited with {self._proc.returncode}:\n{tail(self.log_path)}")
            return os.path.exists(self.address) and self.ctr("version", check=False, timeout=5).returncode == 0

        try:
            wait_until(ready, timeout=30, interval=0.05, message="containerd to answer `ctr version`")
        except BaseException as e:
            log = tail(self.log_path)
            self.close()
            raise RuntimeError(f"{e}\n--- containerd log ---\n{log}") from e
        return self

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Runs `ctr --address SOCK --namespace regpin-test ARGS...`."""
        cmd = ["ctr", "--address", self.address, "--namespace", CTR_NAMESPACE, *args]
        return run(cmd, timeout=timeout, check=check)

    # -- hosts.toml ----------------------------------------------------------------------------

    def mirror(self, registry: str, mirror_url: str, fail_closed: bool = True) -> Path:
        """write_hosts_toml into this daemon's hosts dir (passed to ctr as --hosts-dir)."""
        return write_hosts_toml(self.hosts_dir, registry, mirror_url, fail_closed)

    # -- pulls -----------------------------------------------------------------------------------

    def pull(self, ref: str, *, platform: Optional[str] = None, all_platforms: bool = False,
             check: bool = True) -> subprocess.CompletedProcess:
        """`ctr images pull --hosts-dir ... --snapshotter native REF`: fetches and unpacks."""
        args = ["images", "pull", "--hosts-dir", self.hosts_dir, "--snapshotter", self.SNAPSHOTTER]
        if all_platforms:
            args.append("--all-platforms")
        elif platform:
            args += ["--platform", platform]
        return self.ctr(*args, ref, check=check)

    def fetch(self, ref: str, *, platform: Optional[str] = None, all_platforms: bool = False,
              check: bool = True) -> subprocess.CompletedProcess:
        """`ctr content fetch --hosts-dir ... REF`: fetches content and records the image,
        without unpacking."""
        args = ["content", "fetch", "--hosts-dir", self.hosts_dir]
        if all_platforms:
            args.append("--all-platforms")
        elif platform:
            args += ["--platform", platform]
        return self.ctr(*args, ref, check=check)

    def images(self) -> dict[str, CtrImage]:
        """`ctr images ls` parsed: name -> image."""
        out = self.ctr("images", "ls").stdout.splitlines()
        result = {}
        for line in out[1:]:
            fields = line.split()
            if len(fields) < 5:
                continue
            # REF TYPE DIGEST SIZE(two fields: "1.2" "KiB") PLATFORMS LABELS
            name, media_type, digest = fields[0], fields[1], fields[2]
            platforms = fields[5] if len(fields) > 5 else ""
            result[name] = CtrImage(name, media_type, digest, platforms)
        return result

    def image_digest(self, ref: str) -> Optional[str]:
        image = self.images().get(ref)
        return image.digest if image else None

    def content_digests(self) -> set[str]:
        """Digests of every blob in this namespace's content store (`ctr content ls -q`)."""
        return set(self.ctr("content", "ls", "-q").stdout.split())

    def forget_everything(self) -> None:
        """Removes every image and blob of the test namespace, so the next pull must fetch
        all content again (snapshots are collected by the synchronous GC)."""
        names = list(self.images())
        if names:
            self.ctr("images", "rm", "--sync", *names)
        digests = sorted(self.content_digests())
        if digests:
            self.ctr("content", "rm", *digests)
        remaining = self.content_digests()
        if remaining:
            raise RuntimeError(f"content still present after removal: {sorted(remaining)}")

    # -- shutdown --------------------------------------------------------------------------------

    def stop(self) -> None:
        if self._proc is not None:
            _terminate(self._proc, timeout=10)
            self._proc = None
        self._unmount_all()

    def _unmount_all(self) -> None:
        """Unmounts anything still mounted below this daemon's directory, deepest first."""
        prefix = self.dir.rstrip("/") + "/"
        mounts = []
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    mount_point = line.split()[4].replace("\\040", " ")
                    if mount_point.startswith(prefix):
                        mounts.append(mount_point)
        except OSError:
            return
        for mount_point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)

    def close(self) -> None:
        self.stop()
        remove_temp_dir(self.dir)

    def __enter__(self) -> "Containerd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# HTTP auth helpers
# --------------------------------------------------------------------------------------------


def basic_auth(username: str, password: str) -> str:
    """An `Authorization: Basic ...` value."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def parse_basic_auth(value: Optional[str]) -> Optional[tuple[str, str]]:
    """(user, password) from an `Authorization: Basic ...` value, or None."""
    if not value or not value.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def parse_www_authenticate(value: str) -> dict[str, str]:
    """`Bearer realm="r",service="s",scope="x"` -> {"scheme": "bearer", "realm": "r", ...}."""
    scheme, _, rest = value.strip().partition(" ")
    result = {"scheme": scheme.lower()}
    for m in re.finditer(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))', rest):
        result[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return result


def write_htpasswd(directory: str | Path, users: Mapping[str, str]) -> str:
    """A bcrypt htpasswd file (`htpasswd -Bbn`, Debian package apache2-utils) for
    docker-registry's `auth.htpasswd`. Returns its path."""
    lines = [run(["htpasswd", "-Bbn", user, password]).stdout.strip() for user, password in users.items()]
    path = os.path.join(directory, "htpasswd")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# TLS: a throwaway CA made with the openssl CLI
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServerCert:
    """A server certificate and key (PEM files) and the CA that issued it."""

    cert_path: str
    key_path: str
    ca_path: str

    def client_context(self) -> ssl.SSLContext:
        """An SSLContext that trusts only the issuing CA (and checks the host name)."""
        return ssl.create_default_context(cafile=self.ca_path)


class CertificateAuthority:
    """A self-signed RSA CA in a fresh temp dir, made with `openssl req -x509`.

    `issue()` signs server certificates with IP and DNS subjectAltNames. The CA's own cert and
    key double as a JWT signing certificate for TokenServer (self-signed, so it is its own root).
    """

    def __init__(self, common_name: str = "regpin-test-ca", days: int = 2):
        self.dir = make_temp_dir("ca")
        self.cert_path = os.path.join(self.dir, "ca.pem")
        self.key_path = os.path.join(self.dir, "ca.key")
        self._serial = 0
        run([
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-keyout", self.key_path, "-out", self.cert_path, "-days", str(days),
            "-subj", f"/CN={common_name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ])

    def cert_der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(Path(self.cert_path).read_text())

    def issue(self, name: str, *, ips: Sequence[str] = ("127.0.0.1",), dns_names: Sequence[str] = (),
              days: int = 2) -> ServerCert:
        """A server certificate for `ips` and `dns_names` (subjectAltName), signed by this CA."""
        self._serial += 1
        key = os.path.join(self.dir, f"{name}.key")
        csr = os.path.join(self.dir, f"{name}.csr")
        cert = os.path.join(self.dir, f"{name}.pem")
        ext = os.path.join(self.dir, f"{name}.ext")
        sans = [f"IP:{ip}" for ip in ips] + [f"DNS:{d}" for d in dns_names]
        with open(ext, "w") as f:
            f.write(
                f"subjectAltName={','.join(sans)}\n"
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
            )
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", f"/CN={(list(ips) + list(dns_names))[0]}"])
        run(["openssl", "x509", "-req", "-sha256", "-in", csr, "-CA", self.cert_path, "-CAkey", self.key_path,
             "-set_serial", str(1000 + self._serial), "-out", cert, "-days", str(days), "-extfile", ext])
        return ServerCert(cert, key, self.cert_path)

    def sign_sha256_rsa(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 over SHA-256 with the CA key (`openssl dgst -sha256 -sign`): RS256."""
        result = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key_path],
            input=data, capture_output=True, timeout=30, check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"openssl dgst -sign failed: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def close(self) -> None:
        remove_temp_dir(self.dir)


# --------------------------------------------------------------------------------------------
# Scripted HTTP servers: fake upstreams, CDNs and token servers that record every request
# --------------------------------------------------------------------------------------------


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

    def __init__(self, handler: Callable[[RecordedRequest], Reply], bind_host: str = "127.0.0.1"):
        self.handler = handler
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
        self.bind_host = bind_host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def host(self) -> str:
        return f"{self.bind_host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

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


# --------------------------------------------------------------------------------------------
# A token server for docker-registry's `auth.token` (the Docker Registry v2 token protocol)
# --------------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclasses.dataclass(frozen=True)
class Grant:
    """TokenServer policy: `user` (None: anyone, anonymous included) may do `actions` on
    repositories whose name fully matches the regex `repository`."""

    repository: str
    actions: tuple[str, ...] = ("pull",)
    user: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class TokenRequest:
    time: float  # time.monotonic() when the request arrived
    user: Optional[str]  # None for anonymous
    service: str
    scopes: tuple[str, ...]
    status: int
    access: tuple[tuple[str, tuple[str, ...]], ...]  # granted (repository, actions)
    expires_in: int


class TokenServer:
    """A Docker token server (distribution `docs/spec/auth/token.md`) on 127.0.0.1, stdlib only.

    `GET /token?service=S&scope=repository:NAME:ACTIONS[&scope=...]`, with Basic credentials
    or none (anonymous). Wrong credentials get 401. Otherwise it grants the intersection of the
    requested actions and what `grants` allow, as an RS256 JWT signed with `openssl dgst` by a
    self-signed certificate that is both the token's `x5c` and the registry's rootcertbundle.
    What distribution 2.8 checks (registry/auth/token/token.go): `iss` is the configured issuer,
    `aud` is a string equal to the service, exp/nbf with 60 s leeway, a signature by the leaf
    of `x5c` (standard base64 DER) that chains to rootcertbundle, and `access` covers the
    request. Every request is in `requests`; `expires_in` is per repository via
    `expires_in_for` ({regex: seconds}).
    """

    def __init__(self, grants: Sequence[Grant], users: Optional[Mapping[str, str]] = None, *,
                 expires_in: int = 300, expires_in_for: Optional[Mapping[str, int]] = None,
                 service: str = "regpin-test-registry", issuer: str = "regpin-test-token-issuer"):
        self.grants = list(grants)
        self.users = dict(users or {})
        self.expires_in = expires_in
        self.expires_in_for = dict(expires_in_for or {})
        self.service = service
        self.issuer = issuer
        self.signer = CertificateAuthority("regpin-test-token-signer")
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._http = ScriptedHTTPServer(self._handle)

    @property
    def realm(self) -> str:
        return f"{self._http.url}/token"

    @property
    def root_cert_bundle(self) -> str:
        return self.signer.cert_path

    def start(self) -> "TokenServer":
        self._http.start()
        return self

    def close(self) -> None:
        self._http.close()
        self.signer.close()

    def __enter__(self) -> "TokenServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def token_requests(self, scope_regex: Optional[str] = None) -> list[TokenRequest]:
        """Requests so far; with `scope_regex`, those with a scope that fully matches it."""
        with self._lock:
            requests = list(self.requests)
        if scope_regex is None:
            return requests
        pattern = re.compile(scope_regex)
        return [r for r in requests if any(pattern.fullmatch(s) for s in r.scopes)]

    def _allowed(self, user: Optional[str], repository: str) -> set[str]:
        allowed: set[str] = set()
        for g in self.grants:
            if (g.user is None or g.user == user) and re.fullmatch(g.repository, repository):
                allowed.update(g.actions)
        return allowed

    def _expiry(self, repositories: Sequence[str]) -> int:
        for pattern, seconds in self.expires_in_for.items():
            if any(re.fullmatch(pattern, r) for r in repositories):
                return seconds
        return self.expires_in

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _handle(self, req: RecordedRequest) -> Reply:
        service = (req.query.get("service") or [""])[0]
        scopes = tuple(s for value in req.query.get("scope", []) for s in value.split())
        if req.method != "GET" or req.path != "/token":
            return Reply(404, {"Content-Type": "text/plain"}, b"not found")
        user: Optional[str] = None
        authorization = req.header("Authorization")
        if authorization is not None:
            creds = parse_basic_auth(authorization)
            if creds is None or self.users.get(creds[0]) != creds[1]:
                self._record(TokenRequest(req.time, creds[0] if creds else None, service, scopes, 401, (), 0))
                return Reply(401, {"Content-Type": "application/json",
                                   "WWW-Authenticate": 'Basic realm="regpin-test-token"'},
                             b'{"details":"incorrect username or password"}')
            user = creds[0]
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")  # the name may hold host:port
            if kind != "repository" or not name:
                continue
            granted = sorted(set(actions.split(",")) & self._allowed(user, name))
            access.append((name, tuple(granted)))
        expires_in = self._expiry([name for name, _ in access])
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.signer.cert_der()).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": service,
            "exp": now + expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [{"type": "repository", "name": n, "actions": list(a)} for n, a in access],
        }
        signing_input = (_b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())).encode()
        token = signing_input.decode() + "." + _b64url(self.signer.sign_sha256_rsa(signing_input))
        self._record(TokenRequest(req.time, user, service, scopes, 200, tuple(access), expires_in))
        body = json.dumps({
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        }).encode()
        return Reply(200, {"Content-Type": "application/json"}, body)


# --------------------------------------------------------------------------------------------
# regpin
# --------------------------------------------------------------------------------------------


def regpin_binary() -> str:
    path = os.environ.get("REGPIN_BIN") or str(REPO_ROOT / "build" / "regpin")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"regpin binary not found or not executable at {path}; build it first "
            "(cmake --build build) or set REGPIN_BIN"
        )
    return path


@dataclasses.dataclass
class Upstream:
    """One entry of regpin's `upstreams`: `registry` is the name clients use (the `ns` value
    and path prefix), `url` where regpin fetches from. Fields left None are not written, so
    regpin's defaults apply."""

    registry: str
    url: str
    connect_timeout_ms: Optional[int] = 2000
    read_timeout_ms: Optional[int] = 5000
    ca_file: Optional[str] = None
    tls_verify: Optional[bool] = None
    username: Optional[str] = None
    password: Optional[str] = None
    password_file: Optional[str] = None
    password_env: Optional[str] = None
    max_idle_connections: Optional[int] = None
    aliases: Optional[list[str]] = None
    send_ns: Optional[bool] = None
    low_speed_limit_bytes_per_s: Optional[int] = None

    @classmethod
    def of(cls, registry_name: str, upstream: Registry, **kwargs: Any) -> "Upstream":
        return cls(registry_name, upstream.url, **kwargs)

    def to_json(self) -> dict:
        doc: dict[str, Any] = {"registry": self.registry, "url": self.url}
        for key in ("aliases", "ca_file", "tls_verify", "username", "password", "password_file",
                    "password_env", "connect_timeout_ms", "read_timeout_ms", "max_idle_connections",
                    "send_ns", "low_speed_limit_bytes_per_s"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value
        return doc


@dataclasses.dataclass
class AdminToken:
    """One entry of regpin's `admin.tokens`: the token's `name` (the actor "token:<name>" in pin
    histories) and its value from exactly one of `token`, `token_file`, `token_env`.
    `value` is what a client presents (the harness's own copy; never written to the config)."""

    name: str
    value: str
    source: str = "token"  # "token", "token_file" or "token_env"

    def to_json(self, directory: str, env: dict[str, str]) -> dict:
        """The config entry. A token_file is written into `directory`; a token_env variable is
        added to `env` (regpin's environment)."""
        doc: dict[str, Any] = {"name": self.name}
        if self.source == "token":
            doc["token"] = self.value
        elif self.source == "token_file":
            path = os.path.join(directory, f"admin-token-{self.name}")
            with open(path, "w") as f:
                f.write(self.value + "\n")
            os.chmod(path, 0o600)
            doc["token_file"] = path
        elif self.source == "token_env":
            var = "REGPIN_IT_ADMIN_TOKEN_" + re.sub(r"[^A-Za-z0-9]", "_", self.name).upper()
            env[var] = self.value
            doc["token_env"] = var
        else:
            raise ValueError(f"unknown token source {self.source!r}")
        return doc


@dataclasses.dataclass
class Webhook:
    """One entry of regpin's `webhooks`. The secret (HMAC-SHA256 key) comes from at most one of
    `secret`, `secret_file`, `secret_env`; fields left None are not written."""

    url: str
    secret: Optional[str] = None
    secret_file: Optional[str] = None
    secret_env: Optional[str] = None
    timeout_ms: Optional[int] = None

    def to_json(self) -> dict:
        doc: dict[str, Any] = {"url": self.url}
        for key in ("secret", "secret_file", "secret_env", "timeout_ms"):
            value = getattr(self, key)
            if value is not None:
                doc[key] = value
        return doc


@dataclasses.dataclass
class PolicyRule:
    """One entry of regpin's `policies`: the first rule whose glob `match` matches
    "registry/repository:tag" decides (`*` not across `/`, `**` anything)."""

    match: str
    policy: str  # "pin", "follow" or "reject"
    revalidate_after_s: Optional[int] = None

    def to_json(self) -> dict:
        doc: dict[str, Any] = {"match": self.match, "policy": self.policy}
        if self.revalidate_after_s is not None:
            doc["revalidate_after_s"] = self.revalidate_after_s
        return doc


@dataclasses.dataclass
class PinChecks:
    """regpin's `pin_checks`; fields left None are not written, so regpin's defaults apply."""

    revalidate_after_s: Optional[int] = None
    concurrency: Optional[int] = None
    sweep_interval_s: Optional[int] = None
    sweep_batch: Optional[int] = None
    ratelimit_low_water: Optional[int] = None
    ratelimit_pause_s: Optional[int] = None

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _as_json(item: Any) -> Any:
    """A harness config dataclass's to_json(), or a plain dict/list as given."""
    return item.to_json() if hasattr(item, "to_json") else item


class Regpin:
    """regpin under test: `regpin serve --config FILE` on 127.0.0.1:<free port>.

    The harness writes the JSON config and keeps data dir, config and log in a fresh temp
    dir. restart() reuses data dir and ports. The first upstream is the default one.
    The admin API always gets its own free port (`admin.listen`), so several regpins never
    fight over the default 127.0.0.1:5001; `admin_tokens`, `webhooks`, `policies` and
    `pin_checks` are written when given (harness dataclasses or plain dicts).
    """

    def __init__(self, upstreams: Sequence[Upstream], *, default_upstream: Optional[str] = None,
                 log_level: str = "debug", env: Optional[Mapping[str, str]] = None,
                 admin_tokens: Optional[Sequence[AdminToken | dict]] = None,
                 webhooks: Optional[Sequence[Webhook | dict]] = None,
                 policies: Optional[Sequence[PolicyRule | dict]] = None,
                 pin_checks: Optional[PinChecks | dict] = None,
                 offline: Optional[bool] = None,
                 data_dir: Optional[str] = None,
                 args: Sequence[str] = (),
                 tls: Optional[ServerCert] = None,
                 admin_tls: Optional[ServerCert] = None,
                 settings: Optional[Mapping[str, Any]] = None):
        """`env` is added to regpin's environment (e.g. for an upstream's `password_env`).
        `admin_tokens` as AdminToken (their token_file/token_env are set up here) or as
        config dicts ({name, token|token_file|token_env}). `offline` writes the config key
        `offline` when not None. `data_dir` runs on an existing data folder (e.g. one a bundle
        was imported into; it is not deleted by close()) instead of a fresh one. `args` are
        added to the command line after `serve --config FILE` (e.g. "--offline").
        `tls` / `admin_tls` (a ServerCert) write `tls` / `admin.tls` ({cert_file, key_file}):
        the listener serves HTTPS, and the harness's own requests trust the issuing CA.
        `settings` are more top-level config keys, written as given (e.g.
        {"max_connections": 10, "client_header_timeout_ms": 1500})."""
        if not upstreams:
            raise ValueError("regpin needs at least one upstream")
        self.binary = regpin_binary()
        self.dir = make_temp_dir("regpin")
        self.port = free_port()
        self.admin_port = free_port()
        if data_dir is None:
            self.data_dir = os.path.join(self.dir, "data")
            os.mkdir(self.data_dir)
        else:
            self.data_dir = str(data_dir)
        self.extra_args = list(args)
        self.config_path = os.path.join(self.dir, "regpin.json")
        self.log_path = os.path.join(self.dir, "regpin.log")
        self.upstreams = list(upstreams)
        self.env = dict(env or {})
        self.admin_tokens = list(admin_tokens or [])
        self.tls = tls
        self.admin_tls = admin_tls
        self.ssl_context = tls.client_context() if tls else None
        self.admin_ssl_context = admin_tls.client_context() if admin_tls else None
        self._proc: Optional[subprocess.Popen] = None
        config: dict[str, Any] = {
            "listen": self.host,
            "data_dir": self.data_dir,
            "default_upstream": default_upstream or self.upstreams[0].registry,
            "log_level": log_level,
            "upstreams": [u.to_json() for u in self.upstreams],
            "admin": {"listen": self.admin_host},
        }
        if self.admin_tokens:
            config["admin"]["tokens"] = [
                t.to_json(self.dir, self.env) if isinstance(t, AdminToken) else t for t in self.admin_tokens
            ]
        if webhooks is not None:
            config["webhooks"] = [_as_json(w) for w in webhooks]
        if policies is not None:
            config["policies"] = [_as_json(p) for p in policies]
        if pin_checks is not None:
            config["pin_checks"] = _as_json(pin_checks)
        if offline is not None:
            config["offline"] = offline
        if tls is not None:
            config["tls"] = {"cert_file": tls.cert_path, "key_file": tls.key_path}
        if admin_tls is not None:
            config["admin"]["tls"] = {"cert_file": admin_tls.cert_path, "key_file": admin_tls.key_path}
        config.update(settings or {})
        self.config = config
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def admin_host(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    @property
    def admin_url(self) -> str:
        return f"{'https' if self.admin_tls else 'http'}://{self.admin_host}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        """The process id of the running regpin (None when it is not running)."""
        return self._proc.pid if self.running else None

    def open_fds(self) -> int:
        """How many file descriptors the running regpin has open (`/proc/PID/fd`)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def open_fd_targets(self) -> list[str]:
        """What each open descriptor points at (`socket:[...]`, files), for failure messages."""
        out = []
        for fd in sorted(os.listdir(f"/proc/{self.pid}/fd"), key=int):
            try:
                out.append(os.readlink(f"/proc/{self.pid}/fd/{fd}"))
            except OSError:
                pass
        return out

    def thread_count(self) -> int:
        """The running regpin's thread count (`Threads:` in /proc/PID/status)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        raise RuntimeError("no Threads: line in /proc/PID/status")

    @property
    def command(self) -> list[str]:
        """The command line start() runs."""
        return [self.binary, "serve", "--config", self.config_path, *self.extra_args]

    def start(self) -> "Regpin":
        with open(self.log_path, "ab") as log:
            log.write(f"=== harness: starting {' '.join(self.command)}\n".encode())
        self._proc = _spawn(self.command, self.log_path, self.env)

        def ready() -> bool:
            if self._proc.poll() is not None:
                raise RuntimeError(f"regpin exited with {self._proc.returncode}:\n{tail(self.log_path)}")
            return (http_request(self.host, "GET", "/v2/", timeout=2, ssl_context=self.ssl_context).status == 200
                    and http_request(self.admin_host, "GET", "/healthz", timeout=2,
                                     ssl_context=self.admin_ssl_context).status == 200)

        try:
            wait_until(ready, timeout=20,
                       message=f"regpin GET /v2/ == 200 on {self.host} and GET /healthz on {self.admin_host}")
        except BaseException as e:
            self.kill()
            raise RuntimeError(f"regpin did not become ready: {e}\n--- log ---\n{tail(self.log_path)}") from e
        return self

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after `timeout`. Returns the exit code (None if not running)."""
        if self._proc is None:
            return None
        _terminate(self._proc, timeout=timeout)
        code = self._proc.returncode
        self._proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        if self._proc is not None:
            _kill(self._proc)
            self._proc = None

    def restart(self) -> "Regpin":
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        remove_temp_dir(self.dir)

    def log(self) -> str:
        return tail(self.log_path, 20000)

    def __enter__(self) -> "Regpin":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------------

    def request(self, method: str, path: str, headers: Optional[Mapping[str, str]] = None,
                timeout: float = 30.0) -> Response:
        return http_request(self.host, method, path, headers, timeout=timeout, ssl_context=self.ssl_context)

    def get(self, path: str, headers: Optional[Mapping[str, str]] = None, timeout: float = 30.0) -> Response:
        return self.request("GET", path, headers, timeout)

    def head(self, path: str, headers: Optional[Mapping[str, str]] = None, timeout: float = 30.0) -> Response:
        return self.request("HEAD", path, headers, timeout)

    # -- the admin API and the CLI ------------------------------------------------------------

    def admin_token(self, name: Optional[str] = None) -> str:
        """The value of the admin token named `name` (default: the first configured one)."""
        for t in self.admin_tokens:
            if isinstance(t, AdminToken) and (name is None or t.name == name):
                return t.value
        raise KeyError(f"no AdminToken named {name!r} in this regpin's config")

    def admin_request(self, method: str, path: str, body: Any = None, *, token: Optional[str] = "",
                      headers: Optional[Mapping[str, str]] = None, timeout: float = 30.0) -> Response:
        """A request to the admin listener. `body` (not bytes) is sent as JSON. `token` is sent as
        `Authorization: Bearer <token>`; "" (default) means the first configured token, None
        sends no Authorization header."""
        hdrs = dict(headers or {})
        if token == "":
            token = self.admin_token()
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data: Optional[bytes] = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        return http_request(self.admin_host, method, path, hdrs, data, timeout, ssl_context=self.admin_ssl_context)

    def metrics_text(self) -> str:
        """GET /metrics on the admin listener (no token needed)."""
        resp = http_request(self.admin_host, "GET", "/metrics", timeout=10, ssl_context=self.admin_ssl_context)
        if resp.status != 200:
            raise RuntimeError(f"GET /metrics: {resp.status} {resp.body[:300]!r}")
        return resp.body.decode("utf-8")

    def cli(self, *args: str, token: Optional[str] = "", timeout: float = 60,
            check: bool = False) -> subprocess.CompletedProcess:
        """Runs `regpin ARGS... --admin URL [--token-file F]` (pins, events). `token` as in
        admin_request: "" the first configured token, None none at all (and no
        REGPIN_ADMIN_TOKEN in the environment)."""
        if token == "":
            token = self.admin_token()
        cmd = [self.binary, *args, "--admin", self.admin_url]
        if token is not None:
            fd, path = tempfile.mkstemp(prefix="cli-token-", dir=self.dir)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
            cmd += ["--token-file", path]
        env = {k: v for k, v in os.environ.items() if k not in ("REGPIN_ADMIN_TOKEN", "REGPIN_ADMIN")}
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise CommandError(cmd, result)
        return result


def regpin_command(*args: str, timeout: float = 120, check: bool = False,
                   env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
    """Runs `$REGPIN_BIN ARGS...` (prefetch, export, import, hosts-toml, ...) to completion,
    capturing text output; stdin is /dev/null and stdout/stderr are pipes, never a terminal.
    Raises CommandError on a non-zero exit only with `check`."""
    return run([regpin_binary(), *args], timeout=timeout, check=check, env=env)


def with_query(path: str, **params: str) -> str:
    """`path` with `params` added to its query string (e.g. ns=docker.io)."""
    if not params:
        return path
    sep = "&" if "?" in path else "?"
    return path + sep + urllib.parse.urlencode(params)


# --------------------------------------------------------------------------------------------
# Test cases
# --------------------------------------------------------------------------------------------


class LogsOnFailure(unittest.TestCase):
    """A TestCase that prints the tail of regpin's log (and anything else failure_report()
    adds) when a test fails or errors, so a CI log shows why."""

    def failure_report(self) -> list[tuple[str, str]]:
        """(title, text) pairs to print on failure; by default the tail of self.regpin's log."""
        regpin = getattr(self, "regpin", None)
        if regpin is None:
            return []
        return [(f"regpin log ({regpin.log_path}), last lines", tail(regpin.log_path, 4000))]

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        outcome = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            for title, text in self.failure_report():
                sys.stderr.write(f"\n--- {title}, for {self.id()} ---\n{text}\n--- end ---\n")
        return outcome
