"""Where the trainer's micro-batches come from: the data layer's loader, or ``synthetic://``.

A source is an endless iterable of this rank's ``TrainBatch``es with ``state_dict()`` (reflecting
the batches handed out so far) and ``load_state_dict()``, so a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from fgclip_core.data.batch import TrainBatch
from fgclip_core.train.config import TrainConfig
from fgclip_core.train.launch import DistInfo
from fgclip_core.train.synthetic import SCHEME, SyntheticBatches, TextSpec


class BatchSource(Protocol):
    def __iter__(self) -> Iterator[TrainBatch]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def open_batches(cfg: TrainConfig, dist: DistInfo, model_config: Any, assets_dir: Path) -> BatchSource:
    """``assets_dir`` holds the tokenizer and image processor the loader uses."""
    url = cfg.data.url
    if not url:
        raise ValueError("no training data: pass --data URL (a shard folder or URL written by "
                         "`fgclip data build-shards`, or synthetic:// for tests)")
    lc = cfg.data.loader
    if isinstance(url, list) and len(url) == 1:
        url = url[0]
    if isinstance(url, str) and url.startswith(SCHEME):
        t = model_config.text_config
        return SyntheticBatches(url, lc.batch_size, dist.rank, dist.world, lc.seed,
                                model_config.vision_config.image_size,
                                TextSpec(t.vocab_size, t.bos_token_id, t.eos_token_id, t.pad_token_id),
                                lc.max_boxes, lc.num_negatives, lc.long_length, lc.short_length)
    from fgclip_core.data.loader import build_loader

    return EndlessLoader(build_loader(url, str(assets_dir), lc, rank=dist.rank, world_size=dist.world,
                                      shard_check=cfg.data))


class EndlessLoader:
    """Chains the data layer's epochs (``FineHARDLoader`` ends an epoch in shuffle mode)."""

    def __init__(self, loader: Any):
        self.loader = loader

    def __iter__(self) -> Iterator[TrainBatch]:
        while True:
            empty = True
            for batch in self.loader:
                empty = False
                yield batch
            if empty:
                raise RuntimeError(f"the data at {self.loader.source} yielded no batch for this rank in a "
                                   "whole epoch (too few samples for the batch size?)")

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)

    @property
    def counters(self) -> dict[str, Any]:
        return self.loader.counters
