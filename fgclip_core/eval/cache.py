"""On-disk embedding cache: one embedding per (model, kind, content) is ever computed.

Layout: ``ROOT/<model fingerprint>/<namespace>.pt`` holding ``{"keys": [...], "emb": Tensor[N, D]}``.
The model fingerprint hashes every file of the checkpoint folder (weights, config, tokenizer,
preprocessor), so a changed checkpoint never reads stale vectors. Keys are content hashes made by
the caller (image bytes, text + mode, image bytes + box). Files are replaced atomically on save.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from fgclip_core.storage import filesystem


def content_key(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def fingerprint_dir(url: str) -> str:
    """sha256 over the relative names and contents of every file under a checkpoint folder."""
    fs, root = filesystem(url)
    if not fs.isdir(root):
        raise FileNotFoundError(f"{url}: model folder not found")
    h = hashlib.sha256()
    root_s = root.rstrip("/")
    for path in sorted(fs.find(root)):
        rel = path[len(root_s):].lstrip("/")
        h.update(rel.encode() + b"\0")
        with fs.open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


class EmbeddingCache:
    """In-memory dict per namespace, loaded lazily from and saved to ``root/<fingerprint>``."""

    def __init__(self, root: str | Path | None, fingerprint: str) -> None:
        self.dir = Path(root) / fingerprint[:32] if root is not None else None
        self._data: dict[str, dict[str, torch.Tensor]] = {}
        self._dirty: set[str] = set()
        self.hits = 0
        self.misses = 0

    def _ns(self, namespace: str) -> dict[str, torch.Tensor]:
        if namespace not in self._data:
            table: dict[str, torch.Tensor] = {}
            path = self.dir / f"{namespace}.pt" if self.dir else None
            if path is not None and path.exists():
                blob = torch.load(path, map_location="cpu", weights_only=True)
                table = dict(zip(blob["keys"], blob["emb"], strict=True))
            self._data[namespace] = table
        return self._data[namespace]

    def get(self, namespace: str, key: str) -> torch.Tensor | None:
        v = self._ns(namespace).get(key)
        if v is None:
            self.misses += 1
        else:
            self.hits += 1
        return v

    def peek(self, namespace: str, key: str) -> torch.Tensor:
        """The stored vector for a key known to be present (no hit/miss accounting)."""
        return self._ns(namespace)[key]

    def put(self, namespace: str, key: str, value: torch.Tensor) -> None:
        self._ns(namespace)[key] = value.detach().to("cpu", torch.float32).clone()
        self._dirty.add(namespace)

    def save(self) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for namespace in sorted(self._dirty):
            table = self._data[namespace]
            if not table:
                continue
            keys = list(table)
            path = self.dir / f"{namespace}.pt"
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"keys": keys, "emb": torch.stack([table[k] for k in keys])}, tmp)
            tmp.replace(path)
        self._dirty.clear()
