"""Deterministic random ``TrainBatch`` streams: ``--data synthetic://?samples=N[&nan_at=i,j]``.

For tests and benchmarks only (the data URL says so explicitly; nothing falls back to it). Sample
``s`` is generated from ``seed`` and ``s`` alone; rank ``r`` reads micro-batch ``i`` as samples
``(i * world + r) * B + j`` modulo ``samples``, so any position can be resumed exactly and
``samples = B * world`` repeats one batch forever (overfitting tests). ``nan_at`` lists per-rank
micro-batch positions whose pixels are NaN (non-finite loss handling tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlparse

import torch

from fgclip_core.data.batch import TrainBatch

SCHEME = "synthetic://"


@dataclass(frozen=True)
class SyntheticSpec:
    samples: int = 64
    nan_at: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, url: str) -> SyntheticSpec:
        if not url.startswith(SCHEME):
            raise ValueError(f"not a synthetic data URL: {url!r}")
        q = parse_qs(urlparse(url).query)
        unknown = set(q) - {"samples", "nan_at"}
        if unknown:
            raise ValueError(f"{url!r}: unknown synthetic options {sorted(unknown)} (samples, nan_at)")
        samples = int(q.get("samples", ["64"])[0])
        if samples < 1:
            raise ValueError(f"{url!r}: samples must be >= 1")
        nan = frozenset(int(x) for v in q.get("nan_at", []) for x in v.split(",") if x)
        return cls(samples=samples, nan_at=nan)


@dataclass(frozen=True)
class TextSpec:
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int


def _text(g: torch.Generator, spec: TextSpec, length: int, lo: int, hi: int) -> torch.Tensor:
    n = int(torch.randint(lo, hi + 1, (1,), generator=g))
    n = min(n, length - 2)
    ids = torch.full((length,), spec.pad_id, dtype=torch.long)
    # ordinary tokens only: ids below the special ones (CLIP's specials are the last ids)
    body = torch.randint(0, min(spec.bos_id, spec.eos_id, spec.pad_id), (n,), generator=g)
    ids[0] = spec.bos_id
    ids[1:n + 1] = body
    ids[n + 1] = spec.eos_id
    return ids


def make_sample(seed: int, index: int, image_size: int, text: TextSpec, max_boxes: int, num_negatives: int,
                long_len: int = 248, short_len: int = 77) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    k, n = max_boxes, num_negatives
    out = {
        "pixel_values": torch.randn(3, image_size, image_size, generator=g),
        "long_input_ids": _text(g, text, long_len, 20, 120),
        "short_input_ids": _text(g, text, short_len, 3, 20),
        "box_xyxy": torch.zeros(k, 4),
        "box_mask": torch.zeros(k, dtype=torch.bool),
        "box_input_ids": torch.full((k, short_len), text.pad_id, dtype=torch.long),
        "hardneg_input_ids": torch.full((k, 1 + n, short_len), text.pad_id, dtype=torch.long),
        "hardneg_mask": torch.zeros(k, 1 + n, dtype=torch.bool),
    }
    n_boxes = int(torch.randint(1, k + 1, (1,), generator=g)) if k else 0
    for b in range(n_boxes):
        xy = torch.rand(2, generator=g) * 0.6
        wh = 0.1 + torch.rand(2, generator=g) * 0.3
        out["box_xyxy"][b] = torch.cat([xy, (xy + wh).clamp(max=1.0)])
        out["box_mask"][b] = True
        out["box_input_ids"][b] = _text(g, text, short_len, 2, 8)
        if n and bool(torch.rand(1, generator=g) < 0.75):
            valid = n if bool(torch.rand(1, generator=g) < 0.6) else int(torch.randint(0, n + 1, (1,), generator=g))
            out["hardneg_input_ids"][b, 0] = out["box_input_ids"][b]
            out["hardneg_mask"][b, 0] = True
            for j in range(1, valid + 1):
                out["hardneg_input_ids"][b, j] = _text(g, text, short_len, 2, 8)
                out["hardneg_mask"][b, j] = True
    return out


class SyntheticBatches:
    """Endless per-rank micro-batch stream; its state is the next micro-batch index."""

    def __init__(self, url: str, batch_size: int, rank: int, world: int, seed: int, image_size: int,
                 text: TextSpec, max_boxes: int, num_negatives: int, long_len: int = 248, short_len: int = 77):
        self.spec = SyntheticSpec.parse(url)
        self.batch_size, self.rank, self.world, self.seed = batch_size, rank, world, seed
        self.kw: dict[str, Any] = dict(image_size=image_size, text=text, max_boxes=max_boxes, num_negatives=num_negatives,
                       long_len=long_len, short_len=short_len)
        self.position = 0

    def batch(self, position: int) -> TrainBatch:
        b = self.batch_size
        first = (position * self.world + self.rank) * b
        idx = [(first + j) % self.spec.samples for j in range(b)]
        samples = [make_sample(self.seed, i, **self.kw) for i in idx]
        fields = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
        if position in self.spec.nan_at:
            fields["pixel_values"] = torch.full_like(fields["pixel_values"], float("nan"))
        return TrainBatch(keys=[f"synthetic-{i}" for i in idx], pixel_norm=None, **fields)

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])

    def __iter__(self) -> Iterator[TrainBatch]:
        while True:
            b = self.batch(self.position)
            self.position += 1
            yield b
