"""HTTP auth: Basic and WWW-Authenticate helpers, bcrypt htpasswd files (`write_htpasswd`),
and `TokenServer`, a token server for docker-registry's `auth.token` (the Docker Registry v2
token protocol) with its `Grant` policy and recorded `TokenRequest`s."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .process import run
from .scripted import RecordedRequest, Reply, ScriptedHTTPServer
from .tls import CertificateAuthority


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
