"""WebDataset shards: deterministic tar writing, the manifest, and reading both back.

A shard ``shard-NNNNNN-<sha256[:16]>.tar`` holds ``{key}.jpg`` + ``{key}.json`` (the record) per sample, and
``{key}.tok.npy`` (its texts' token ids, ``data.pretok``) when built with a tokenizer. Tar
headers are fixed (mtime 0, uid/gid 0, no user names, mode 0444), so the same inputs give the same
bytes. Every shard is written under a temporary name and moved, when complete, to a name that
carries the start of its own sha256 (``atomic.AtomicWriter``): a rebuild with other content writes
other names and never overwrites a shard that the current manifest lists (identical content gets
the identical name and bytes). ``manifest.json`` is written last and is the commit point, locally
and on S3 alike: readers take only the shards it lists, with their sample count, byte size and
sha256. The manifest carries ``manifest_sha256``, the hash of its own canonical JSON without that
field. Manifests of earlier builds that name shards ``shard-NNNNNN.tar`` stay readable.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable
from typing import IO, Any

from pydantic import BaseModel, Field, field_validator, model_validator

from fgclip_core import storage
from fgclip_core.data.atomic import TMP_PREFIX, AtomicWriter, atomic_open, resolve

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "fgclip-webdataset"
MANIFEST_VERSION = 1
QUARANTINE_NAME = "quarantine.jsonl"
NAME_HASH_CHARS = 16
# ``shard-NNNNNN-<16 hex>.tar``; the plain ``shard-NNNNNN.tar`` of earlier builds is still read (and cleaned up).
SHARD_PATTERN = re.compile(rf"^shard-(\d{{6}})(?:-([0-9a-f]{{{NAME_HASH_CHARS}}}))?\.tar\Z")


def shard_name(index: int, sha256: str | None = None) -> str:
    """The final name of shard ``index`` with content hash ``sha256``; without it, the plain name
    (also the stem of the temporary file the shard is written to)."""
    if sha256 is None:
        return f"shard-{index:06d}.tar"
    return f"shard-{index:06d}-{sha256[:NAME_HASH_CHARS]}.tar"


class ShardInfo(BaseModel):
    name: str
    count: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        # a bare file name of our pattern: a manifest can never point a reader outside its folder
        if not SHARD_PATTERN.match(v):
            raise ValueError(f"shard name {v!r} is not shard-NNNNNN[-<hash>].tar")
        return v

    @model_validator(mode="after")
    def _name_matches_hash(self) -> ShardInfo:
        named = SHARD_PATTERN.match(self.name)
        if named and named.group(2) and not self.sha256.startswith(named.group(2)):
            raise ValueError(f"shard {self.name} is named for another sha256 than its entry's {self.sha256[:16]}")
        return self


class Manifest(BaseModel):
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION
    samples_per_shard: int
    num_shards: int
    total_samples: int
    total_bytes: int
    shards: list[ShardInfo]
    summary: dict[str, Any] = Field(default_factory=dict)
    # Pre-tokenised shards (``data.pretok.manifest_entry``): member name, fingerprint, lengths; absent otherwise.
    tokens: dict[str, Any] | None = None
    manifest_sha256: str = ""

    @model_validator(mode="after")
    def _unique_names(self) -> Manifest:
        names = [s.name for s in self.shards]
        if len(set(names)) != len(names):
            raise ValueError("a shard is listed twice")
        return self

    def dump(self) -> dict[str, Any]:
        """The JSON body; ``tokens`` only when set, so manifests without it keep their hash."""
        body = self.model_dump()
        if body.get("tokens") is None:
            body.pop("tokens", None)
        return body

    def body_hash(self) -> str:
        body = self.dump()
        body.pop("manifest_sha256", None)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class ManifestError(ValueError):
    """A shard folder has no usable manifest; the message names the URL and the reason."""


class _HashingWriter:
    """Forwards writes to ``fh`` while counting bytes and computing sha256."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.fh.write(data)
        return len(data)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def encode_sample_json(record_dict: dict[str, Any]) -> bytes:
    return json.dumps(record_dict, sort_keys=True, ensure_ascii=False, allow_nan=False).encode("utf-8")


class ShardWriter:
    """Writes samples into consecutive shards of ``samples_per_shard`` under ``out_url``."""

    def __init__(self, out_url: str, samples_per_shard: int,
                 on_shard: Callable[[ShardInfo], None] | None = None, fs: Any = None) -> None:
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.out_url = out_url.rstrip("/")
        self.samples_per_shard = samples_per_shard
        self.on_shard = on_shard
        self.fs = fs
        self.shards: list[ShardInfo] = []
        self._file: AtomicWriter | None = None
        self._hasher: _HashingWriter | None = None
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    def _open(self) -> None:
        self._file = AtomicWriter(storage.join(self.out_url, shard_name(len(self.shards))), "wb", fs=self.fs)
        self._hasher = _HashingWriter(self._file.fh)
        self._tar = tarfile.open(fileobj=self._hasher, mode="w|", format=tarfile.PAX_FORMAT)  # type: ignore[call-overload]  # noqa: SIM115
        self._count = 0

    def _finish(self) -> None:
        assert self._tar is not None and self._hasher is not None and self._file is not None
        self._tar.close()
        sha = self._hasher.sha.hexdigest()
        name = shard_name(len(self.shards), sha)
        self._file.commit(storage.join(self.out_url, name))
        info = ShardInfo(name=name, count=self._count, bytes=self._hasher.size, sha256=sha)
        self.shards.append(info)
        self._tar = self._hasher = self._file = None
        if self.on_shard:
            self.on_shard(info)

    def add(self, key: str, image_bytes: bytes, record_dict: dict[str, Any],
            extra: dict[str, bytes] | None = None) -> None:
        """``extra``: more members of the sample, by extension (e.g. ``{"tok.npy": ...}``)."""
        if self._tar is None:
            self._open()
        assert self._tar is not None
        _add_member(self._tar, f"{key}.jpg", image_bytes)
        _add_member(self._tar, f"{key}.json", encode_sample_json(record_dict))
        for ext, data in (extra or {}).items():
            _add_member(self._tar, f"{key}.{ext}", data)
        self._count += 1
        if self._count >= self.samples_per_shard:
            self._finish()

    def close(self) -> list[ShardInfo]:
        if self._tar is not None:
            self._finish()
        return self.shards

    def abort(self, exc: BaseException) -> None:
        """Drop the shard in progress (its temporary file is removed)."""
        if self._file is not None:
            file, self._file, self._tar = self._file, None, None
            with contextlib.suppress(BaseException):
                file.discard()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if ev is None:
            self.close()
        else:
            self.abort(ev)


def write_manifest(out_url: str, shards: list[ShardInfo], samples_per_shard: int,
                   summary: dict[str, Any] | None = None, fs: Any = None,
                   tokens: dict[str, Any] | None = None) -> Manifest:
    m = Manifest(samples_per_shard=samples_per_shard, num_shards=len(shards),
                 total_samples=sum(s.count for s in shards), total_bytes=sum(s.bytes for s in shards),
                 shards=shards, summary=summary or {}, tokens=tokens)
    m.manifest_sha256 = m.body_hash()
    with atomic_open(storage.join(out_url, MANIFEST_NAME), "w", fs=fs) as fh:
        fh.write(json.dumps(m.dump(), indent=1, sort_keys=True) + "\n")
    return m


def read_manifest(url: str, fs: Any = None) -> Manifest:
    """Load and check ``url/manifest.json`` (the hash must match its content)."""
    murl = storage.join(url, MANIFEST_NAME)
    fs, path = resolve(murl, fs)
    try:
        with fs.open(path, "r") as fh:
            data = json.load(fh)
    except FileNotFoundError as e:
        raise ManifestError(f"{murl}: no manifest; the shards there are incomplete or not ours") from e
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{murl}: cannot read manifest: {e}") from e
    try:
        m = Manifest.model_validate(data)
    except ValueError as e:
        raise ManifestError(f"{murl}: malformed manifest: {e}") from e
    if m.format != MANIFEST_FORMAT or m.version != MANIFEST_VERSION:
        raise ManifestError(f"{murl}: format {m.format!r} v{m.version} is not {MANIFEST_FORMAT!r} v{MANIFEST_VERSION}")
    if m.manifest_sha256 != m.body_hash():
        raise ManifestError(f"{murl}: manifest_sha256 does not match its content (edited or damaged)")
    return m


def merge_manifests(manifests: list[Manifest], sources: list[str]) -> Manifest:
    """One in-memory manifest over several shard sets (training on several batches at once).

    Shard names stay as each set lists them (the caller keeps the URLs per set); ``tokens`` is kept
    only when every set stored the same token ids, else the loader tokenises on the fly. The merged
    ``manifest_sha256`` hashes the sets' own hashes in order, so it names exactly this combination."""
    if not manifests:
        raise ManifestError("no shard sets to merge")
    tokens = manifests[0].tokens if all(m.tokens == manifests[0].tokens for m in manifests) else None
    shards = [s for m in manifests for s in m.shards]
    merged = Manifest(samples_per_shard=max(m.samples_per_shard for m in manifests), num_shards=len(shards),
                      total_samples=sum(m.total_samples for m in manifests),
                      total_bytes=sum(m.total_bytes for m in manifests), shards=shards,
                      summary={"merged_from": [{"url": u, "manifest_sha256": m.manifest_sha256}
                                               for u, m in zip(sources, manifests, strict=True)]},
                      tokens=tokens)
    merged.manifest_sha256 = hashlib.sha256(
        "\n".join(m.manifest_sha256 for m in manifests).encode()).hexdigest()
    return merged


def shard_urls(url: str, manifest: Manifest | None = None) -> list[str]:
    m = manifest or read_manifest(url)
    return [storage.join(url, s.name) for s in m.shards]


def verify_shards(url: str, manifest: Manifest | None = None, fs: Any = None) -> list[str]:
    """Re-hash every listed shard; returns a list of problems (empty when all match)."""
    fs = fs if fs is not None else storage.filesystem(url)[0]
    m = manifest or read_manifest(url, fs)
    problems = []
    for s in m.shards:
        surl = storage.join(url, s.name)
        fs, path = resolve(surl, fs)
        try:
            sha, size = hashlib.sha256(), 0
            with fs.open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    sha.update(chunk)
                    size += len(chunk)
        except OSError as e:
            problems.append(f"{surl}: cannot read: {e}")
            continue
        if size != s.bytes or sha.hexdigest() != s.sha256:
            problems.append(f"{surl}: {size} bytes sha256 {sha.hexdigest()[:12]}, manifest says "
                            f"{s.bytes} bytes sha256 {s.sha256[:12]}")
    return problems


def remove_unlisted_shards(url: str, manifest: Manifest, fs: Any = None) -> list[str]:
    """Delete the shard files (``shard-NNNNNN[-<hash>].tar``) that the manifest does not list: those
    of the build it replaced, and any left by a build killed before its manifest."""
    fs, path = resolve(url, fs)
    listed = {s.name for s in manifest.shards}
    removed = []
    for p in fs.ls(path, detail=False):
        name = p.rsplit("/", 1)[-1]
        if SHARD_PATTERN.match(name) and name not in listed:
            fs.rm(p)
            removed.append(name)
    return removed


def foreign_entries(url: str, fs: Any = None) -> tuple[bool, list[str]]:
    """``(has_manifest, other)`` for folder ``url``: whether it holds a committed build, and the names
    of entries no build of ours writes (anything but the manifest, the quarantine, shard files and
    temporary files). A missing folder is empty."""
    fs, path = resolve(url, fs)
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return False, []
    ours = {MANIFEST_NAME, QUARANTINE_NAME}
    other = sorted(n for n in names if n not in ours and not n.startswith(TMP_PREFIX) and not SHARD_PATTERN.match(n))
    return MANIFEST_NAME in names, other


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> IO[bytes]:
    fs, path = storage.filesystem(url)
    return fs.open(path, mode)


def register_webdataset_schemes(schemes: tuple[str, ...] = ("s3",)) -> None:
    """Let plain ``webdataset`` open ``s3://`` URLs through ``fgclip_core.storage`` (s3fs,
    ``AWS_ENDPOINT_URL``). Webdataset itself has no s3 scheme; call this once per process."""
    import importlib

    gopen_module = importlib.import_module("webdataset.gopen")  # `webdataset.gopen` the attribute is a function
    for scheme in schemes:
        gopen_module.gopen_schemes[scheme] = _gopen_fsspec
