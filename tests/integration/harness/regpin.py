"""regpin, the binary under test: `Regpin` (`regpin serve` with a config the harness writes),
the config pieces (`Upstream`, `AdminToken`, `Webhook`, `PolicyRule`, `PinChecks`),
`regpin_binary()` and `regpin_command()` for one-shot subcommands."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import tempfile
from typing import Any, Mapping, Optional, Sequence

from .process import (REPO_ROOT, CommandError, LoopbackServer, TempDirProcess, _kill, _spawn, _terminate,
                      free_port, make_temp_dir, run, tail, wait_until)
from .registry import Registry
from .tls import ServerCert
from .web import Response, http_request


def regpin_binary() -> str:
    path = os.environ.get("REGPIN_BIN") or str(REPO_ROOT / "build" / "regpin")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"regpin binary not found or not executable at {path}; build it first "
            "(cmake --build build) or set REGPIN_BIN"
        )
    return path


def sanitized_binary(path: str) -> bool:
    """Whether the regpin at `path` is built with AddressSanitizer (it links libasan)."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False).stdout
    return "libasan" in out


@dataclasses.dataclass
class Upstream:
    """One entry of regpin's `upstreams`: `registry` is the name clients use (the `ns` value
    and path prefix), `url` where regpin fetches from (a list: its `urls`, mirrors tried in
    order). Fields left None are not written, so regpin's defaults apply."""

    registry: str
    url: str | list[str]
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
        doc: dict[str, Any] = {"registry": self.registry}
        doc["urls" if isinstance(self.url, list) else "url"] = self.url
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


class Regpin(LoopbackServer, TempDirProcess):
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
        # The machine's disk must not decide a test: the default keeps 10% of it free, and a
        # nearly full CI disk would make every regpin evict and keep nothing new. A test of the
        # limits says so in `settings`.
        config["cache"] = {"min_free_percent": 0}
        config.update(settings or {})
        self.config = config
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)

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

    def send_signal(self, sig: int) -> None:
        """Sends `sig` to the running regpin and returns at once (see wait_exit)."""
        if self._proc is None:
            raise RuntimeError("regpin is not running")
        self._proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """Waits for regpin to exit on its own (after send_signal); its exit code. Raises
        subprocess.TimeoutExpired when it is still running after `timeout`."""
        if self._proc is None:
            raise RuntimeError("regpin is not running")
        code = self._proc.wait(timeout=timeout)
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

    def log(self) -> str:
        return tail(self.log_path, 20000)


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
