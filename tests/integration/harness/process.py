"""Processes, commands, temporary directories and polling: the bottom of the harness.

Every other module builds on these: `free_port`, `wait_until`, `run` (and `CommandError`),
`make_temp_dir` / `remove_temp_dir` (honouring `REGPIN_TEST_KEEP=1`), `tail` for log excerpts,
and `_spawn` / `_terminate` / `_kill` for long-running servers. Servers started with `_spawn`
and not stopped by their test are terminated at interpreter exit.
"""

from __future__ import annotations

import atexit
import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

# The repository root (this file is tests/integration/harness/process.py).
REPO_ROOT = Path(__file__).resolve().parents[3]

# Set REGPIN_TEST_KEEP=1 to keep temp dirs (logs, storage) after the tests for debugging.
KEEP_TEMP = os.environ.get("REGPIN_TEST_KEEP") == "1"

T = TypeVar("T")


_ports_given: collections.deque[int] = collections.deque(maxlen=1024)
_ports_lock = threading.Lock()
_random = random.SystemRandom()


def _listen_port_range() -> tuple[int, int]:
    """Ports that neither outgoing connections nor bind(0) are given: below the kernel's
    ephemeral range (`ip_local_port_range`, 32768-60999 by default). A port picked inside that
    range can be taken by any process's next outgoing connection between the pick and the
    server's bind (CI once lost a regpin admin port to one), a port below it cannot."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (20000, low - 1) if low - 1 - 20000 >= 4096 else (0, 0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and that only an explicit bind will take: picked
    at random below the ephemeral range (see `_listen_port_range`), checked by binding it, and
    not one this process was given lately (two calls in a row must never get the same port).
    Falls back to bind(0) when the system leaves no room below its ephemeral range."""
    low, high = _listen_port_range()
    with _ports_lock:
        while True:
            port = _random.randint(low, high) if high else 0
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                port = s.getsockname()[1]
            if port not in _ports_given:
                _ports_given.append(port)
                return port


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


class LoopbackServer:
    """`host` and `url` of a server listening on 127.0.0.1:`port`, over HTTPS when `tls` is set."""

    port: int
    tls: Any = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"


class TempDirProcess:
    """A process with its own temporary folder `dir`: close() stops it and removes the folder,
    and `with` starts it and closes it."""

    dir: str

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()
        remove_temp_dir(self.dir)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
