"""Synthetic images in an OCI image layout: media types, digests, `OciLayout`, `make_image`,
`make_large_image` and the `Image` they return. Pure Python, no tools."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import random
import tarfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

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


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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

    def add_manifest(self, tag: str, manifest: dict) -> dict:
        """Stores a hand-made manifest or index (its `mediaType` names its type) under `tag`;
        its descriptor. For artifacts: cosign signatures, OCI 1.1 manifests with a `subject`,
        referrers fallback indexes."""
        desc = self.add_blob(_json_bytes(manifest), manifest["mediaType"])
        self._name_ref(desc, tag)
        return desc

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
