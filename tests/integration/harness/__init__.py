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
- `EtcdCluster`: etcd 3.4 members (package etcd-server) for replicas sharing pins.
- `CertificateAuthority`: a throwaway CA and server certificates, made with the `openssl` CLI.
- `write_htpasswd`: a bcrypt htpasswd file (`htpasswd` from apache2-utils).
- `TokenServer` (Python): a Docker token server issuing RS256 JWTs for docker-registry's
  `auth.token`, signed with `openssl dgst`.
- `ScriptedHTTPServer` (Python): fake upstreams and CDNs that record every request;
  `SilentServer` (Python): accepts connections and never answers.

One module per concern; each imports only modules listed above it:

- `process`: `free_port`, `wait_until`, `run`, `CommandError`, temp dirs (`KEEP_TEMP`), `tail`,
  starting and stopping servers (`_spawn`, `_terminate`, `_kill`; leftovers are terminated at
  exit), `REPO_ROOT`.
- `web`: `http_request`, `Response`, `with_query`.
- `metrics`: `metric_value`, `metric_types` (Prometheus text, as /metrics answers).
- `images`: media types, `ACCEPT_ALL_MANIFESTS`, `sha256_digest`, `Image`, `OciLayout`,
  `make_image`, `make_large_image`.
- `tls`: `CertificateAuthority`, `ServerCert`.
- `scripted`: `ScriptedHTTPServer`, `RecordedRequest`, `Reply`, `SilentServer`,
  `CuttableProxy` (a TCP link a test can cut and restore).
- `auth`: `basic_auth`, `parse_basic_auth`, `parse_www_authenticate`, `write_htpasswd`,
  `TokenServer`, `Grant`, `TokenRequest`.
- `registry`: `Registry`, `AccessLogEntry`.
- `skopeo`: `Skopeo`, `default_skopeo`, `mirror_registries_conf`, `push`.
- `containerd`: `Containerd`, `CtrImage`, `write_hosts_toml`, `CTR_NAMESPACE`.
- `regpin`: `Regpin`, `Upstream`, `AdminToken`, `Webhook`, `PolicyRule`, `PinChecks`,
  `regpin_binary`, `regpin_command`, `sanitized_binary`.
- `etcd`: `EtcdCluster` (Debian's etcd-server, 1 or 3 members), `etcd_binary`.
- `cases`: `LogsOnFailure`, the unittest base class.

Every name is re-exported here, so tests write `import harness as h` and `h.Registry(...)`.
Module-level settings (`KEEP_TEMP`, `CTR_NAMESPACE`, ...) are read where they are defined:
change them there (`harness.process.KEEP_TEMP`), not through this package.

Only the standard library is used.
"""

from .process import (
    KEEP_TEMP,
    REPO_ROOT,
    CommandError,
    T,
    _kill,
    _spawn,
    _terminate,
    free_port,
    make_temp_dir,
    remove_temp_dir,
    run,
    tail,
    wait_until,
)
from .web import Response, http_request, with_query
from .metrics import metric_types, metric_value
from .images import (
    ACCEPT_ALL_MANIFESTS,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST,
    Image,
    OciLayout,
    make_image,
    make_large_image,
    sha256_digest,
)
from .tls import CertificateAuthority, ServerCert
from .scripted import CuttableProxy, RecordedRequest, Reply, ScriptedHTTPServer, SilentServer
from .auth import (
    Grant,
    TokenRequest,
    TokenServer,
    basic_auth,
    parse_basic_auth,
    parse_www_authenticate,
    write_htpasswd,
)
from .registry import ACCESS_LINE_RE, AccessLogEntry, Registry
from .skopeo import Skopeo, default_skopeo, mirror_registries_conf, push
from .containerd import CTR_NAMESPACE, Containerd, CtrImage, write_hosts_toml
from .regpin import (
    AdminToken,
    PinChecks,
    PolicyRule,
    Regpin,
    Upstream,
    Webhook,
    regpin_binary,
    regpin_command,
    sanitized_binary,
)
from .etcd import EtcdCluster, etcd_binary
from .cases import LogsOnFailure

__all__ = [
    # process
    "KEEP_TEMP", "REPO_ROOT", "CommandError", "T", "free_port", "make_temp_dir", "remove_temp_dir",
    "run", "tail", "wait_until",
    # web
    "Response", "http_request", "with_query",
    # metrics
    "metric_types", "metric_value",
    # images
    "ACCEPT_ALL_MANIFESTS", "MEDIA_DOCKER_LIST", "MEDIA_DOCKER_MANIFEST", "MEDIA_OCI_CONFIG",
    "MEDIA_OCI_INDEX", "MEDIA_OCI_LAYER_GZIP", "MEDIA_OCI_MANIFEST", "Image", "OciLayout",
    "make_image", "make_large_image", "sha256_digest",
    # tls
    "CertificateAuthority", "ServerCert",
    # scripted
    "CuttableProxy", "RecordedRequest", "Reply", "ScriptedHTTPServer", "SilentServer",
    # auth
    "Grant", "TokenRequest", "TokenServer", "basic_auth", "parse_basic_auth",
    "parse_www_authenticate", "write_htpasswd",
    # registry
    "ACCESS_LINE_RE", "AccessLogEntry", "Registry",
    # skopeo
    "Skopeo", "default_skopeo", "mirror_registries_conf", "push",
    # containerd
    "CTR_NAMESPACE", "Containerd", "CtrImage", "write_hosts_toml",
    # regpin
    "AdminToken", "PinChecks", "PolicyRule", "Regpin", "Upstream", "Webhook", "regpin_binary", "sanitized_binary",
    "regpin_command",
    # etcd
    "EtcdCluster", "etcd_binary",
    # cases
    "LogsOnFailure",
]
