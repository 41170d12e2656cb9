"""`EtcdCluster`: a real etcd cluster (Debian's `etcd-server`, etcd 3.4) of 1 or 3 members on
loopback, for regpin replicas that share pins. Each member has its own data folder and log under
the cluster's temp dir; members can be killed (SIGKILL), stopped and started again (they rejoin
with their data). `kv_get` and `status` talk to the JSON gateway directly."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
from typing import Optional

from .process import _kill, _spawn, _terminate, free_port, make_temp_dir, remove_temp_dir, run, tail, wait_until
from .tls import ServerCert
from .web import http_request


def etcd_binary() -> str:
    path = os.environ.get("REGPIN_ETCD_BIN") or shutil.which("etcd") or "/usr/bin/etcd"
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"etcd not found at {path}: install etcd-server (deploy/debian-deps.sh --test)")
    return path


class EtcdCluster:
    """`size` members named m0, m1, ... on free loopback ports. `endpoints` lists every member's
    client URL (what regpin's `pin_store.endpoints` gets). Elections are quick (heartbeat 100 ms,
    election timeout 500 ms), so a killed leader is replaced in about a second."""

    def __init__(self, size: int = 3, *, tls: Optional[ServerCert] = None, client: Optional[ServerCert] = None):
        """With `tls` (a server certificate for 127.0.0.1) the members serve clients over HTTPS
        and, with `client` (a client certificate from the same CA), require it of every client
        (--client-cert-auth); the harness's own requests present it."""
        self.dir = make_temp_dir("etcd")
        self.size = size
        self.tls = tls
        self.client = client
        self.client_ports = [free_port() for _ in range(size)]
        self.peer_ports = [free_port() for _ in range(size)]
        self._procs: list[Optional[subprocess.Popen]] = [None] * size
        self.binary = etcd_binary()

    def name(self, i: int) -> str:
        return f"m{i}"

    def host(self, i: int) -> str:
        return f"127.0.0.1:{self.client_ports[i]}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def endpoints(self) -> list[str]:
        return [f"{self.scheme}://{self.host(i)}" for i in range(self.size)]

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        if not self.tls:
            return None
        ctx = self.tls.client_context()
        if self.client:
            ctx.load_cert_chain(self.client.cert_path, self.client.key_path)
        return ctx

    def log_path(self, i: int) -> str:
        return os.path.join(self.dir, f"{self.name(i)}.log")

    def command(self, i: int) -> list[str]:
        cluster = ",".join(f"{self.name(j)}=http://127.0.0.1:{self.peer_ports[j]}" for j in range(self.size))
        peer = f"http://127.0.0.1:{self.peer_ports[i]}"
        tls = []
        if self.tls:
            tls = [f"--cert-file={self.tls.cert_path}", f"--key-file={self.tls.key_path}"]
            if self.client:
                tls += [f"--trusted-ca-file={self.tls.ca_path}", "--client-cert-auth"]
        return [self.binary, f"--name={self.name(i)}", f"--data-dir={os.path.join(self.dir, self.name(i))}",
                f"--listen-client-urls={self.scheme}://{self.host(i)}",
                f"--advertise-client-urls={self.scheme}://{self.host(i)}", *tls,
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster={cluster}", "--initial-cluster-token=regpin-it",
                "--heartbeat-interval=100", "--election-timeout=500", "--logger=zap"]

    def start_member(self, i: int) -> None:
        self._procs[i] = _spawn(self.command(i), self.log_path(i))

    def start(self) -> "EtcdCluster":
        for i in range(self.size):
            self.start_member(i)
        self.wait_healthy()
        return self

    def running(self, i: int) -> bool:
        p = self._procs[i]
        return p is not None and p.poll() is None

    def kill(self, i: int) -> None:
        """SIGKILL member i."""
        if self._procs[i] is not None:
            _kill(self._procs[i])
            self._procs[i] = None

    def stop_member(self, i: int) -> None:
        if self._procs[i] is not None:
            _terminate(self._procs[i], timeout=10)
            self._procs[i] = None

    def stop(self) -> None:
        for i in range(self.size):
            self.stop_member(i)

    def close(self) -> None:
        self.stop()
        remove_temp_dir(self.dir)

    def __enter__(self) -> "EtcdCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the JSON gateway -----------------------------------------------------------------------

    def call(self, i: int, path: str, body: dict, timeout: float = 3.0) -> dict:
        headers = {"Content-Type": "application/json"}
        if getattr(self, "token", None):
            headers["Authorization"] = self.token
        resp = http_request(self.host(i), "POST", path, headers, json.dumps(body).encode(), timeout=timeout,
                            ssl_context=self.ssl_context())
        if resp.status != 200:
            raise RuntimeError(f"etcd {self.name(i)} {path}: {resp.status} {resp.body[:200]!r}")
        return json.loads(resp.body)

    def status(self, i: int) -> dict:
        return self.call(i, "/v3/maintenance/status", {})

    def leader(self) -> int:
        """The index of the member that leads now (asked of a running member)."""
        for i in range(self.size):
            if not self.running(i):
                continue
            try:
                st = self.status(i)
            except Exception:  # noqa: BLE001 - ask the next member
                continue
            leader = st.get("leader")
            for j in range(self.size):
                if self.running(j):
                    try:
                        if self.status(j)["header"]["member_id"] == leader:
                            return j
                    except Exception:  # noqa: BLE001
                        continue
        raise RuntimeError("no member knows a leader")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every running member answers a linearizable read (so a leader exists)."""
        def healthy() -> bool:
            for i in range(self.size):
                if self.running(i):
                    self.call(i, "/v3/kv/range", {"key": base64.b64encode(b"health").decode()}, timeout=2)
            return True

        try:
            wait_until(healthy, timeout=timeout, message="every etcd member answers")
        except TimeoutError as e:
            logs = "\n".join(f"--- {self.name(i)} ---\n{tail(self.log_path(i), 2000)}" for i in range(self.size))
            raise RuntimeError(f"{e}\n{logs}") from e

    def etcdctl(self, *args: str, user: Optional[str] = None) -> str:
        """Runs etcdctl (package etcd-client) against the cluster; its output."""
        cmd = ["etcdctl", f"--endpoints={','.join(self.endpoints)}"]
        if self.tls:
            cmd.append(f"--cacert={self.tls.ca_path}")
        if self.client:
            cmd += [f"--cert={self.client.cert_path}", f"--key={self.client.key_path}"]
        if user:
            cmd.append(f"--user={user}")
        return run([*cmd, *args], env={"ETCDCTL_API": "3"}).stdout

    def enable_auth(self, root_password: str, users: dict[str, tuple[str, str]]) -> None:
        """Turns etcd's authentication on: a root user, and for each user (password, key
        prefix) a role with read-write access to that prefix. The harness then authenticates
        as root."""
        self.etcdctl("user", "add", f"root:{root_password}")
        for name, (password, prefix) in users.items():
            self.etcdctl("user", "add", f"{name}:{password}")
            self.etcdctl("role", "add", f"{name}-rw")
            self.etcdctl("role", "grant-permission", f"{name}-rw", "--prefix=true", "readwrite", prefix)
            self.etcdctl("user", "grant-role", name, f"{name}-rw")
        self.etcdctl("auth", "enable")
        self.token = self.call(0, "/v3/auth/authenticate", {"name": "root", "password": root_password})["token"]

    def kv_prefix(self, prefix: str) -> dict[bytes, bytes]:
        """Every key under `prefix` and its value, read from a running member."""
        end = bytearray(prefix.encode())
        end[-1] += 1
        for i in range(self.size):
            if not self.running(i):
                continue
            doc = self.call(i, "/v3/kv/range", {"key": base64.b64encode(prefix.encode()).decode(),
                                                 "range_end": base64.b64encode(bytes(end)).decode()})
            return {base64.b64decode(kv["key"]): base64.b64decode(kv.get("value", ""))
                    for kv in doc.get("kvs", [])}
        raise RuntimeError("no etcd member is running")
