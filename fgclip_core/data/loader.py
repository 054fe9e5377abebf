"""The training input pipeline: manifest-listed shards -> ``TrainBatch``es. This module holds the
loader (epochs, workers, resume state, collate); one logical worker's stream is ``data.worker_stream``
and the shard tar reader ``data.tar_read``.

Splitting: logical worker ``w`` of rank ``r`` (of ``R`` ranks and ``W`` workers) owns the shards
``i`` with ``i % (R*W) == r*W + w``; fewer shards than ``R*W`` is an error (a worker would starve).
``mode="shuffle"`` walks the owned shards once per epoch in a seeded order; ``mode="resample"``
draws owned shards with replacement, endlessly. Tar members are read by a plain-ustar fast reader
(``tarfile`` takes over on anything else). Samples pass a seeded shuffle buffer, are decoded
(``images.decode_image``), resized and collated into batches inside the worker, where the whole
batch's pixels are packed as resized uint8 with the ``PixelNorm`` that the trainer applies on its
device (``data.pixels``, bit-identical to ``ImageProcessor.preprocess_one``, which is used per image
for any other processor). Token ids come from the shards when they were
built with ``--tokenizer`` and the manifest's fingerprint is this loader's (``data.pretok``);
otherwise texts are tokenised once per batch (``FGCLIPTokenizer.encode``, behind the exact word
cache of ``data.tokens`` when the tokenizer is CLIP's), and a fingerprint mismatch is logged once
at WARNING.

Determinism: every random choice comes from RNGs seeded by (seed, epoch, rank, logical worker)
and, per sample, its stream position. The torch DataLoader returns worker batches round-robin;
the loader records which logical worker made each batch and how far that worker's stream went,
so ``state_dict()`` / ``load_state_dict()`` resume exactly: the resumed stream equals the tail of
the uninterrupted one (workers replay their stream up to the saved position without decoding,
and physical worker 0 takes the logical worker that was next in the round-robin). Streams are cut
into blocks of ``resume_block_shards`` shards with their own seeds and shuffle buffer, so a resume
re-reads at most one block per worker.

Bad samples met at read time (unreadable tar, missing part, bad JSON, undecodable image) are
logged (up to ``log_bad_samples`` per worker), counted in ``counters`` and skipped.

Every shard is checked against its manifest entry as it is read (``data.shard_check``): size up
front, sha256 of the bytes as they stream. A shard that is missing, of another size or of another
hash is a ``CorruptShardError`` naming it (``on_corrupt_shard="fail"``, the default; a hash
mismatch is only known at the shard's end, so some of its samples may already be in batches handed
out: training stops there), or with ``"skip"`` is read whole into memory and checked before any of
its samples is used, logged once per worker, counted in ``counters["corrupt_shards"]`` and left out.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fgclip_core import storage
from fgclip_core.data.batch import TrainBatch
from fgclip_core.data.config import LoaderConfig, ShardCheckConfig
from fgclip_core.data.pixels import PixelBatcher, PixelBatcherUnavailable, PixelNorm, new_batch_tensors
from fgclip_core.data.pretok import (
    TOKENS_FORMAT,
    TOKENS_VERSION,
    SampleTokens,
    TokensUnavailable,
    fingerprint,
)
from fgclip_core.data.shard_check import CorruptShardError
from fgclip_core.data.shards import Manifest, merge_manifests, read_manifest
from fgclip_core.data.tokens import FastEncoder, FastEncoderUnavailable
from fgclip_core.data.worker_stream import (
    StarvationError,
    StreamCounters,
    StreamSample,
    WorkerStream,
    owned_shards,
)

__all__ = ["FineHARDLoader", "LoaderStateError", "StarvationError", "build_loader", "owned_shards"]

log = logging.getLogger(__name__)

STATE_VERSION = 1


class Tokenizer(Protocol):
    @property
    def pad_token_id(self) -> int: ...

    def encode(self, texts: Sequence[str], mode: Literal["long", "short"] = "long") -> torch.Tensor: ...


class Processor(Protocol):
    @property
    def size(self) -> int: ...

    def preprocess_one(self, image: Any) -> torch.Tensor: ...


class LoaderStateError(ValueError):
    """A saved loader state does not fit this loader (other seed, world size, workers or source)."""


class _Dataset(IterableDataset):
    def __init__(self, loader: FineHARDLoader, offset: int, positions: list[tuple[int, int]], epoch: int) -> None:
        super().__init__()
        self.loader, self.offset, self.positions, self.epoch = loader, offset, positions, epoch

    def __iter__(self) -> Iterator[tuple[TrainBatch | None, dict[str, Any]]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        worker = (physical + self.offset) % self.loader.num_logical
        return iter(WorkerStream(self.loader, worker, self.positions[worker], self.epoch))


class FineHARDLoader:
    """Iterate ``TrainBatch``es from a shard folder/URL with a manifest. One ``iter()`` = one epoch
    (endless in resample mode); after an epoch ends, ``epoch`` advances by itself."""

    def __init__(self, source: str | Sequence[str], tokenizer: Tokenizer, image_processor: Processor,
                 config: LoaderConfig | None = None, *, rank: int = 0, world_size: int = 1, epoch: int = 0,
                 manifest: Manifest | None = None, shard_check: ShardCheckConfig | None = None) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        sources = [source] if isinstance(source, str) else list(source)
        if not sources:
            raise ValueError("no shard set to read")
        self.source = ", ".join(sources)
        self.cfg = config or LoaderConfig()
        self.on_corrupt_shard = (shard_check or ShardCheckConfig()).on_corrupt_shard
        self.tokenizer = self._text_encoder(tokenizer, self.cfg.fast_tokenizer)
        self.processor = image_processor
        self.pixel_batcher = self._pixel_batcher(image_processor)
        self.rank, self.world_size = rank, world_size
        if len(sources) == 1:
            self.manifest = manifest or read_manifest(sources[0])
            self.urls = [storage.join(sources[0], s.name) for s in self.manifest.shards]
        else:  # several shard sets (e.g. one per image batch) read as one, in the order given
            if manifest is not None:
                raise ValueError("manifest= works with one shard set only")
            manifests = [read_manifest(u) for u in sources]
            self.manifest = merge_manifests(manifests, sources)
            self.urls = [storage.join(u, s.name) for u, m in zip(sources, manifests, strict=True) for s in m.shards]
        self.tokens = self._stored_tokens(tokenizer)
        self.num_logical = max(1, self.cfg.num_workers)
        for w in range(self.num_logical):  # fail now, not inside a worker
            owned_shards(len(self.urls), rank, world_size, w, self.num_logical)
        self._reset_epoch(epoch)
        self._counters: dict[int, dict[str, Any]] = {}   # per worker, the stream running now
        self._counters_past: dict[str, Any] = StreamCounters().to_dict()   # streams that ended

    @staticmethod
    def _text_encoder(tokenizer: Tokenizer, choice: str) -> Tokenizer:
        if choice == "off":
            return tokenizer
        try:
            return FastEncoder.for_tokenizer(tokenizer)
        except FastEncoderUnavailable as e:
            if choice == "on":
                raise
            log.info("loader: tokenising with %s directly (%s)", type(tokenizer).__name__, e)
            return tokenizer

    def _stored_tokens(self, tokenizer: Tokenizer) -> dict[str, Any] | None:
        """The manifest's ``tokens`` entry when its ids are exactly what this loader would make."""
        stored = self.manifest.tokens
        if not stored:
            log.info("%s: shards carry no token ids (built without --tokenizer); tokenising on the fly", self.source)
            return None
        cfg = self.cfg
        try:
            if stored.get("format") != TOKENS_FORMAT or stored.get("version") != TOKENS_VERSION:
                raise TokensUnavailable(f"format {stored.get('format')!r} v{stored.get('version')} is not "
                                        f"{TOKENS_FORMAT!r} v{TOKENS_VERSION}")
            mine = fingerprint(tokenizer, cfg.short_caption_prefix, cfg.long_length, cfg.short_length)
            if stored.get("fingerprint") != mine:
                raise TokensUnavailable(
                    f"made with another tokenizer, prefix or lengths (shards: prefix {stored.get('short_caption_prefix')!r}, "
                    f"lengths {stored.get('long_length')}/{stored.get('short_length')}, fingerprint "
                    f"{str(stored.get('fingerprint'))[:12]}; this loader: prefix {cfg.short_caption_prefix!r}, lengths "
                    f"{cfg.long_length}/{cfg.short_length}, fingerprint {mine[:12]})")
        except TokensUnavailable as e:
            log.warning("%s: NOT using the shards' stored token ids, tokenising on the fly: %s", self.source, e)
            return None
        return stored

    @staticmethod
    def _pixel_batcher(processor: Processor) -> PixelBatcher | None:
        try:
            return PixelBatcher.for_processor(processor)
        except PixelBatcherUnavailable as e:
            log.info("loader: normalising images one by one with %s (%s)", type(processor).__name__, e)
            return None

    # ---- state ---------------------------------------------------------------------------------
    def _reset_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._positions: list[tuple[int, int]] = [(0, 0)] * self.num_logical
        self._last_worker: int | None = None
        self._batches_in_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._reset_epoch(epoch)

    def _identity(self) -> dict[str, Any]:
        """What a saved state must agree on to resume exactly."""
        return {"version": STATE_VERSION, "seed": self.cfg.seed, "mode": self.cfg.mode,
                "batch_size": self.cfg.batch_size, "shuffle_buffer": self.cfg.shuffle_buffer,
                "resume_block_shards": self.cfg.resume_block_shards, "world_size": self.world_size,
                "rank": self.rank, "num_workers": self.num_logical,
                "manifest_sha256": self.manifest.manifest_sha256}

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position of this rank's stream (after the batches handed out so far)."""
        return {**self._identity(), "epoch": self.epoch, "positions": [list(p) for p in self._positions],
                "last_worker": self._last_worker, "batches_in_epoch": self._batches_in_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = self._identity()
        diff = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
        if diff:
            raise LoaderStateError("loader state does not match this loader (saved, now): " +
                                   ", ".join(f"{k}={a!r}/{b!r}" for k, (a, b) in diff.items()))
        self.epoch = int(state["epoch"])
        self._positions = [(int(b), int(p)) for b, p in state["positions"]]
        self._last_worker = state["last_worker"]
        self._batches_in_epoch = int(state["batches_in_epoch"])

    @staticmethod
    def _sum(parts: list[dict[str, Any]]) -> dict[str, Any]:
        total: dict[str, Any] = {"samples_ok": 0, "bad_samples": 0, "shard_errors": 0, "corrupt_shards": 0,
                                 "bad_by_reason": Counter(), "corrupt_by_reason": Counter()}
        for c in parts:
            for k in ("samples_ok", "bad_samples", "shard_errors", "corrupt_shards"):
                total[k] += c.get(k, 0)
            for k in ("bad_by_reason", "corrupt_by_reason"):
                total[k].update(c.get(k, {}))
        for k in ("bad_by_reason", "corrupt_by_reason"):
            total[k] = dict(total[k])
        return total

    @property
    def counters(self) -> dict[str, Any]:
        """Read-time counts since this loader was made, summed over workers and epochs (as of the
        last batch or end marker each worker delivered)."""
        return self._sum([self._counters_past, *self._counters.values()])

    # ---- epoch length (shuffle mode) -------------------------------------------------------------
    def batches_per_epoch(self) -> int | None:
        """Shuffle mode: batches every rank yields per epoch (the smallest rank's count when
        ``equalize_ranks``, so that no rank waits on another in a collective). None in resample mode."""
        if self.cfg.mode != "shuffle":
            return None
        counts = [s.count for s in self.manifest.shards]

        def rank_batches(r: int) -> int:
            n = 0
            for w in range(self.num_logical):
                samples = sum(counts[i] for i in owned_shards(len(counts), r, self.world_size, w, self.num_logical))
                n += samples // self.cfg.batch_size if self.cfg.drop_last else -(-samples // self.cfg.batch_size)
            return n

        ranks = range(self.world_size) if self.cfg.equalize_ranks else [self.rank]
        return min(rank_batches(r) for r in ranks)

    # ---- iteration -----------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[TrainBatch | None, dict[str, Any]]]:
        offset = 0 if self._last_worker is None else (self._last_worker + 1) % self.num_logical
        ds = _Dataset(self, offset, list(self._positions), self.epoch)
        if self.cfg.num_workers == 0:
            return iter(ds)
        # Forking after the Rust tokenizer ran in this process: keep it single-threaded in the workers.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        dl = DataLoader(ds, batch_size=None, num_workers=self.cfg.num_workers, pin_memory=self.cfg.pin_memory,
                        prefetch_factor=self.cfg.prefetch_factor, persistent_workers=False)
        return iter(dl)

    def __iter__(self) -> Iterator[TrainBatch]:
        cap = self.batches_per_epoch()
        if cap == 0:
            log.warning("%s: rank %d gets no full batch of %d per epoch (see batches_per_epoch)", self.source,
                        self.rank, self.cfg.batch_size)
            self._reset_epoch(self.epoch + 1)
            return
        if cap is not None and self._batches_in_epoch >= cap:  # resumed exactly at an epoch's end
            self._reset_epoch(self.epoch + 1)
        self._counters_past = self.counters   # new worker streams count from zero
        self._counters = {}
        for batch, meta in self._batches():
            if "error" in meta:
                raise CorruptShardError(meta["error"])
            w = int(meta["worker"])
            self._positions[w] = (int(meta["position"][0]), int(meta["position"][1]))
            self._last_worker = w
            self._counters[w] = meta["counters"]
            if batch is None:  # a worker's end marker
                continue
            self._batches_in_epoch += 1
            yield batch
            if cap is not None and self._batches_in_epoch >= cap:
                break
        self._reset_epoch(self.epoch + 1)

    # ---- collation -----------------------------------------------------------------------------
    def _encode(self, texts: list[str], mode: Literal["long", "short"], length: int) -> torch.Tensor:
        ids = self.tokenizer.encode(texts, mode=mode)
        if ids.ndim != 2 or ids.shape[1] != length or ids.shape[0] != len(texts):
            raise ValueError(f"tokenizer.encode(mode={mode!r}) gave shape {tuple(ids.shape)}, expected "
                             f"[{len(texts)}, {length}] (LoaderConfig.{mode}_length)")
        return ids

    def collate(self, samples: list[StreamSample], pixels: torch.Tensor | None = None) -> TrainBatch:
        """A ``TrainBatch`` of ``samples``; ``pixels``: their uint8 rows, packed by ``PixelBatcher.put`` as they
        were decoded (with the batcher), else each sample carries its float32 pixels."""
        cfg = self.cfg
        B, K, N, S = len(samples), cfg.max_boxes, cfg.num_negatives, cfg.short_length
        pad = int(self.tokenizer.pad_token_id)
        stored = [s.tokens for s in samples]
        flat = _Rows.concat(stored)
        # One storage per dtype (shared memory in a worker): fewer file descriptors to hand over per batch.
        ids = new_batch_tensors(torch.int64, [(B, cfg.long_length), (B, S), (B, K, S), (B, K, 1 + N, S)])
        long_ids = _Rows(self, ids[0], "long", pad, stored, flat)
        short_ids = _Rows(self, ids[1], "short", pad, stored, flat)
        box_ids = _Rows(self, ids[2], "short", pad, stored, flat)
        hard_ids = _Rows(self, ids[3], "short", pad, stored, flat)
        (box_xyxy,) = new_batch_tensors(torch.float32, [(B * K, 4)])
        box_xyxy.zero_()
        box_mask, hard_mask = new_batch_tensors(torch.bool, [(B * K,), (B * K * (1 + N),)])
        box_mask.zero_()
        hard_mask.zero_()
        boxes: list[list[float]] = []
        box_slots: list[int] = []    # flat b * K + k
        hard_slots: list[int] = []   # flat (b * K + k) * (1 + N) + j
        for b, s in enumerate(samples):
            t = s.tokens
            long_ids.put(b, b, 0, s.record.caption)
            short_ids.put(b, b, 1, cfg.short_caption_prefix + s.record.short_caption)
            for k, region in enumerate(s.record.bbox_info[:K]):
                slot = b * K + k
                boxes.append(region.bbox[:4])
                box_slots.append(slot)
                r0 = t.region_rows[k] if t is not None else 0
                box_ids.put(slot, b, r0 + s.region_pick[k], s.region_texts[k])
                if region.flag_short_neg == 1:
                    negs = region.short_expr_negs[:N]
                    first = slot * (1 + N)
                    slots = range(first, first + 1 + len(negs))
                    hard_slots.extend(slots)
                    if t is not None:   # stored rows: short_expr at r0, negative j at r0 + 1 + j
                        hard_ids.put_stored(slots, b, [r0, *range(r0 + 2, r0 + 2 + len(negs))])
                    else:
                        hard_ids.put_texts(slots, [region.short_expr, *negs])
        if box_slots:
            idx = torch.tensor(box_slots)
            box_xyxy[idx] = torch.tensor(boxes, dtype=torch.float32)
            box_mask[idx] = True
        if hard_slots:
            hard_mask[torch.tensor(hard_slots)] = True
        box_xyxy, box_mask, hard_mask = box_xyxy.view(B, K, 4), box_mask.view(B, K), hard_mask.view(B, K, 1 + N)
        if self.pixel_batcher is not None:
            if pixels is None or pixels.shape[0] != B:
                raise ValueError(f"collate: {B} samples need their {B} packed pixel rows, got "
                                 f"{None if pixels is None else tuple(pixels.shape)}")
            norm: PixelNorm | None = self.pixel_batcher.norm
        else:
            per_image = [s.pixels for s in samples if s.pixels is not None]
            if len(per_image) != B:
                raise ValueError(f"collate: {B - len(per_image)} of {B} samples carry no pixels")
            pixels, norm = torch.stack(per_image), None
        return TrainBatch(
            pixel_values=pixels, pixel_norm=norm,
            long_input_ids=long_ids.done(), short_input_ids=short_ids.done(), box_xyxy=box_xyxy,
            box_mask=box_mask, box_input_ids=box_ids.done(), hardneg_input_ids=hard_ids.done(),
            hardneg_mask=hard_mask, keys=[s.key for s in samples])


class _Rows:
    """A padded id tensor filled row by row: from a sample's stored ids (``data.pretok``) when it has
    them, else from its text, all texts of the batch tokenised in one call."""

    def __init__(self, loader: FineHARDLoader, out: torch.Tensor, mode: Literal["long", "short"], pad: int,
                 stored: list[SampleTokens | None], flat: tuple[np.ndarray, list[int]]) -> None:
        self.loader, self.mode, self.tensor = loader, mode, out
        self.out = out.numpy()
        self.out.fill(pad)
        self.length = out.shape[-1]
        self.all_ids, self.offsets = flat
        self.stored = stored
        self.texts: list[str] = []
        self.text_rows: list[int] = []
        self.src: list[int] = []
        self.dst: list[int] = []
        self.lens: list[int] = []

    @staticmethod
    def concat(stored: list[SampleTokens | None]) -> tuple[np.ndarray, list[int]]:
        parts, offsets, at = [], [], 0
        for t in stored:
            offsets.append(at)
            if t is not None:
                parts.append(t.flat)
                at += len(t.flat)
        return (np.concatenate(parts) if parts else np.empty(0, np.int64)), offsets

    def put(self, row: int, b: int, stored_row: int, text: str) -> None:
        """Fill flat row ``row`` of the output for sample ``b``: its stored row, or ``text``."""
        t = self.stored[b]
        if t is None:
            self.texts.append(text)
            self.text_rows.append(row)
        else:
            self.src.append(self.offsets[b] + t.starts[stored_row])
            self.dst.append(row)
            self.lens.append(t.lens[stored_row])

    def put_stored(self, rows: Sequence[int], b: int, stored_rows: list[int]) -> None:
        t = self.stored[b]
        assert t is not None
        off, starts, lens = self.offsets[b], t.starts, t.lens
        self.src.extend([off + starts[r] for r in stored_rows])
        self.dst.extend(rows)
        self.lens.extend([lens[r] for r in stored_rows])

    def put_texts(self, rows: Sequence[int], texts: list[str]) -> None:
        self.texts.extend(texts)
        self.text_rows.extend(rows)

    def done(self) -> torch.Tensor:
        out2d = self.out.reshape(-1, self.length)
        if self.texts:
            out2d[self.text_rows] = self.loader._encode(self.texts, self.mode, self.length).numpy()
        if self.lens:
            lens = np.asarray(self.lens, dtype=np.int64)
            cum = np.cumsum(lens) - lens
            step = np.arange(int(lens.sum()), dtype=np.int64)
            src = np.repeat(np.asarray(self.src, dtype=np.int64) - cum, lens) + step
            dst = np.repeat(np.asarray(self.dst, dtype=np.int64) * self.length - cum, lens) + step
            self.out.reshape(-1)[dst] = self.all_ids[src]
        return self.tensor


def build_loader(source: str | Sequence[str], checkpoint_dir: str, config: LoaderConfig | None = None, *,
                 rank: int = 0, world_size: int = 1, epoch: int = 0,
                 shard_check: ShardCheckConfig | None = None) -> FineHARDLoader:
    """A loader whose tokenizer and image processor come from a checkpoint directory."""
    from fgclip_core.model.processing import ImageProcessor, load_tokenizer

    return FineHARDLoader(source, load_tokenizer(checkpoint_dir), ImageProcessor.from_pretrained(checkpoint_dir),
                          config, rank=rank, world_size=world_size, epoch=epoch, shard_check=shard_check)
