"""containerd: a private containerd 1.6 daemon driven by `ctr` (`Containerd`, `CtrImage`), and
`write_hosts_toml` for its registry mirrors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Optional

from .process import TempDirProcess, _spawn, _terminate, make_temp_dir, run, tail, wait_until

# The containerd namespace every `ctr` call uses.
CTR_NAMESPACE = "regpin-test"


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


class Containerd(TempDirProcess):
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

