"""skopeo: `Skopeo` (a private policy.json and registries.conf), the process-wide
`default_skopeo()`, `mirror_registries_conf` and `push` (an OCI layout to a registry)."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Optional, Sequence

from .images import OciLayout
from .process import make_temp_dir, remove_temp_dir, run
from .registry import Registry


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
