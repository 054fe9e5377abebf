"""One logical data-loader worker's deterministic stream: which shards it owns, in which order it
reads them (seeded blocks of ``resume_block_shards`` shards), the shuffle buffer, parsing and decoding
each sample (bad ones counted and skipped), and batches handed to the loader's collate with the
position reached, so that ``FineHARDLoader`` can resume exactly (see ``data.loader``)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import torch

from fgclip_core import storage
from fgclip_core.data.batch import TrainBatch
from fgclip_core.data.config import ReadConfig, ValidationConfig
from fgclip_core.data.errors import RecordError
from fgclip_core.data.images import decode_image
from fgclip_core.data.io import record_from_raw
from fgclip_core.data.pretok import SampleTokens, TokensUnavailable, read_tokens
from fgclip_core.data.records import FineHARDRecord
from fgclip_core.data.shard_check import CorruptShardError, ShardCheck, ShardCorrupt
from fgclip_core.data.tar_read import iter_tar_samples

if TYPE_CHECKING:
    from fgclip_core.data.loader import FineHARDLoader

# The loader's logger: these are its messages, and users filter or silence them by that name.
log = logging.getLogger("fgclip_core.data.loader")

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class StarvationError(ValueError):
    """Fewer shards than ranks x workers: some worker would get no data."""


def derive_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def owned_shards(num_shards: int, rank: int, world_size: int, worker: int, num_workers: int) -> list[int]:
    slots = world_size * num_workers
    if num_shards < slots:
        raise StarvationError(
            f"{num_shards} shard(s) for {world_size} rank(s) x {num_workers} worker(s): at least {slots} "
            f"shards are needed so that no worker starves; rebuild with a smaller --samples-per-shard "
            f"or use fewer workers")
    return list(range(rank * num_workers + worker, num_shards, slots))


@dataclass
class StreamSample:
    key: str
    pixels: torch.Tensor | None   # [3, S, S] float32 from the processor; None: packed into the batch's uint8 rows
    record: FineHARDRecord
    region_texts: list[str]
    region_pick: list[int]              # per region: 0 = short_expr's ids, 1 = long_expr's
    tokens: SampleTokens | None = None  # stored ids (pre-tokenised shards), else tokenised in collate
    image_bytes: bytes = b""            # the encoded image until _decode has used it


@dataclass
class StreamCounters:
    samples_ok: int = 0
    bad_samples: int = 0
    shard_errors: int = 0
    corrupt_shards: int = 0   # skipped (on_corrupt_shard="skip"): each time the stream came to one
    bad_by_reason: Counter[str] = field(default_factory=Counter)
    corrupt_by_reason: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"samples_ok": self.samples_ok, "bad_samples": self.bad_samples,
                "shard_errors": self.shard_errors, "corrupt_shards": self.corrupt_shards,
                "bad_by_reason": dict(self.bad_by_reason), "corrupt_by_reason": dict(self.corrupt_by_reason)}


class _BadSample(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class WorkerStream:
    """One logical worker's deterministic stream of batches (runs in a DataLoader worker or inline).

    The stream is cut into blocks of ``resume_block_shards`` shards; each block has its own seeds and
    its own shuffle buffer (drained at the block's end), so a resume at ``(block, position)`` re-reads
    at most one block's shards instead of the whole epoch.
    """

    def __init__(self, loader: FineHARDLoader, worker: int, start: tuple[int, int], epoch: int) -> None:
        self.loader = loader
        self.cfg = loader.cfg
        self.worker = worker
        self.start_block, self.start_pos = start
        self.epoch = epoch
        self.shards = owned_shards(len(loader.urls), loader.rank, loader.world_size, worker, loader.num_logical)
        self.counters = StreamCounters()
        self.logged = 0
        self.warned_tokens = False
        self.failed_in_a_row = 0
        self.corrupt: set[int] = set()   # shards found corrupt (skip mode): not read again by this stream
        self.fs: Any = None   # made in the worker process that reads (s3fs clients are not fork-safe)
        self.validation = ValidationConfig()
        self.read_cfg = ReadConfig(strip_prefixes=[])
        self.pixels: torch.Tensor | None = None   # uint8 rows of the batch being filled (PixelBatcher.put)
        self.at = (self.start_block, self.start_pos)   # (block, position) the stream has reached

    def _seed(self, *extra: Any) -> int:
        return derive_seed(self.cfg.seed, self.epoch, self.loader.rank, self.worker, *extra)

    def _blocks(self) -> Iterator[tuple[int, list[int]]]:
        k = self.cfg.resume_block_shards
        if self.cfg.mode == "shuffle":
            order = list(self.shards)
            random.Random(self._seed("shards")).shuffle(order)
            for b in range(self.start_block, -(-len(order) // k)):
                yield b, order[b * k:(b + 1) * k]
        else:
            b = self.start_block
            while True:
                rng = random.Random(self._seed("shards", b))
                yield b, [rng.choice(self.shards) for _ in range(k)]
                b += 1

    def _raw(self, shards: list[int]) -> Iterator[dict[str, Any]]:
        skip = self.loader.on_corrupt_shard == "skip"
        for i in shards:
            url = self.loader.urls[i]
            got = 0
            if self.fs is None:
                self.fs = storage.filesystem(url)[0]
            try:
                if i in self.corrupt:
                    raise ShardCorrupt(url, "known_corrupt", "found corrupt earlier in this stream")
                check = ShardCheck(url, self.loader.manifest.shards[i], buffered=skip)
                for sample in iter_tar_samples(url, self.fs, check):
                    got += 1
                    yield sample
            except ShardCorrupt as e:
                self._corrupt(i, e)
            except OSError as e:
                self._corrupt(i, ShardCorrupt(url, "unreadable", f"{type(e).__name__}: {e}"))
            except (tarfile.TarError, EOFError, ValueError) as e:   # its bytes are the manifest's, its tar is not
                self.counters.shard_errors += 1
                log.warning("worker %d: shard %s unreadable from here on, skipping its rest: %s", self.worker, url, e)
            self.failed_in_a_row = 0 if got else self.failed_in_a_row + 1
            if self.failed_in_a_row >= 3 * len(self.shards) and self.cfg.mode == "resample":
                raise RuntimeError(f"worker {self.worker}: none of its {len(self.shards)} shards yields a sample "
                                   f"(e.g. {url}); the data is unreadable")

    def _corrupt(self, i: int, e: ShardCorrupt) -> None:
        if self.loader.on_corrupt_shard == "fail":
            raise CorruptShardError(f"corrupt shard {e} (data.on_corrupt_shard=fail: rebuild the shards, or "
                                    f"set data.on_corrupt_shard=skip to train without it)") from e
        self.counters.corrupt_shards += 1
        if i not in self.corrupt:
            self.corrupt.add(i)
            self.counters.corrupt_by_reason[e.reason] += 1
            log.warning("worker %d: skipping corrupt shard %s (data.on_corrupt_shard=skip; counted in "
                        "corrupt_shards)", self.worker, e)

    def _shuffled(self, block: int, shards: list[int]) -> Iterator[dict[str, Any]]:
        size = self.cfg.shuffle_buffer
        if size <= 1:
            yield from self._raw(shards)
            return
        rng = random.Random(self._seed("buffer", block))
        buf: list[dict[str, Any]] = []
        for s in self._raw(shards):
            buf.append(s)
            if len(buf) >= size:
                j = rng.randrange(len(buf))
                buf[j], buf[-1] = buf[-1], buf[j]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf

    def _bad(self, raw: dict[str, Any], reason: str, detail: str) -> None:
        self.counters.bad_samples += 1
        self.counters.bad_by_reason[reason] += 1
        if self.logged < self.cfg.log_bad_samples:
            self.logged += 1
            log.warning("worker %d: skipping sample %s from %s: %s: %s", self.worker, raw.get("__key__"),
                        raw.get("__url__"), reason, detail)

    def _region_texts(self, record: FineHARDRecord, rng: random.Random) -> tuple[list[str], list[int]]:
        texts, picks = [], []
        for region in record.bbox_info[: self.cfg.max_boxes]:
            has_long = bool(region.long_expr.strip())
            if self.cfg.region_text == "short":
                use_long = False
            elif self.cfg.region_text == "long":
                use_long = has_long
            else:
                use_long = rng.choice((False, True)) and has_long   # one draw either way, as always
            texts.append(region.long_expr if use_long else region.short_expr)
            picks.append(int(use_long))
        return texts, picks

    def _tokens(self, raw: dict[str, Any], record: FineHARDRecord) -> SampleTokens | None:
        info = self.loader.tokens
        if info is None:
            return None
        data = raw.get(info["member"])
        try:
            if data is None:
                raise TokensUnavailable(f"no {info['member']} member")
            return read_tokens(data, raw["json"], record, self.cfg.long_length, self.cfg.short_length)
        except TokensUnavailable as e:
            if not self.warned_tokens:
                self.warned_tokens = True
                log.warning("worker %d: stored token ids of %s from %s not usable (%s); tokenising such samples on "
                            "the fly (logged once per worker)", self.worker, raw.get("__key__"), raw.get("__url__"), e)
            return None

    def _parse(self, raw: dict[str, Any], block: int, position: int) -> StreamSample:
        """Stage 1 of a sample: record, region texts and token ids (no pixels yet)."""
        image = next((raw[e] for e in IMAGE_EXTS if e in raw), None)
        if image is None or "json" not in raw:
            raise _BadSample("sample_incomplete", f"has parts {sorted(k for k in raw if not k.startswith('__'))}")
        try:
            record = record_from_raw(json.loads(raw["json"]), self.read_cfg)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _BadSample("record_malformed", f"json: {e}") from e
        except RecordError as e:
            raise _BadSample(e.reason.value, e.detail) from e
        rng = random.Random(self._seed("sample", block, position))
        texts, picks = self._region_texts(record, rng)
        return StreamSample(raw["__key__"], None, record, texts, picks, self._tokens(raw, record), image)

    def _decode(self, sample: StreamSample, slot: int) -> StreamSample:
        """Stage 2: decode the image; with the loader's ``PixelBatcher`` resize it straight into row ``slot``
        of the batch being filled (``self.pixels``) and drop it, else keep the processor's float32 pixels."""
        size = self.loader.processor.size
        try:
            decoded = decode_image(sample.image_bytes, max_pixels=self.validation.max_pixels, min_side=1,
                                   draft_size=size if self.cfg.decode_draft else None)
        except RecordError as e:
            raise _BadSample(e.reason.value, e.detail) from e
        sample.image_bytes = b""
        batcher = self.loader.pixel_batcher
        if batcher is None:
            sample.pixels = self.loader.processor.preprocess_one(decoded.image)
            return sample
        if self.pixels is None:
            self.pixels = batcher.new_batch(self.cfg.batch_size)
        batcher.put(self.pixels, slot, decoded.image)
        return sample

    def _guarded(self, raw: dict[str, Any], stage: Callable[..., StreamSample], *args: Any) -> StreamSample | None:
        """``stage(*args)``, or None with the sample counted and logged as bad: one sample never ends a run."""
        try:
            return stage(*args)
        except _BadSample as e:
            self._bad(raw, e.reason, e.detail)
        except Exception as e:
            self._bad(raw, "unexpected_error", f"{type(e).__name__}: {e}")
        return None

    def _positioned(self) -> Iterator[tuple[dict[str, Any], int, int]]:
        """(raw sample, block, position in block) after the resume point; ``self.at`` follows the stream."""
        for block, shards in self._blocks():
            skip = self.start_pos if block == self.start_block else 0
            position = 0
            self.at = (block, 0)
            for raw in self._shuffled(block, shards):
                position += 1
                self.at = (block, position)
                if position <= skip:   # replay up to the resume point without decoding
                    continue
                yield raw, block, position - 1

    def __iter__(self) -> Iterator[tuple[TrainBatch | None, dict[str, Any]]]:
        """``_stream_batches``; a ``CorruptShardError`` becomes a last marker carrying its message, which the
        loader raises in the main process (one clear line, not a worker's traceback)."""
        try:
            yield from self._stream_batches()
        except CorruptShardError as e:
            yield None, {**self._meta(*self.at), "error": str(e)}

    def _stream_batches(self) -> Iterator[tuple[TrainBatch | None, dict[str, Any]]]:
        """Batches of the first ``batch_size`` good samples in stream order. Work is done in stages over the
        samples a batch still needs (parse them all, then decode them all): each stage's code and data stay
        in the CPU caches instead of being evicted by every image decode (~0.1 ms/sample on the dev box).
        Exactly the missing number of samples is read each round, so positions match a sample-by-sample walk."""
        B = self.cfg.batch_size
        stream = self._positioned()
        done = False
        while not done:
            batch: list[StreamSample] = []
            while len(batch) < B and not done:
                items = list(islice(stream, B - len(batch)))
                done = len(items) < B - len(batch)
                parsed: list[tuple[dict[str, Any], StreamSample]] = []
                for item in items:
                    sample = self._guarded(item[0], self._parse, *item)
                    if sample is not None:
                        parsed.append((item[0], sample))
                for raw, sample in parsed:
                    if self._guarded(raw, self._decode, sample, len(batch)) is not None:
                        batch.append(sample)
                        self.counters.samples_ok += 1
            if len(batch) == B or (batch and not self.cfg.drop_last):
                yield self._collate(batch), self._meta(*self.at)
        # End marker: final position and counters (bad samples after the last batch included).
        yield None, self._meta(*self.at)

    def _collate(self, batch: list[StreamSample]) -> TrainBatch:
        pixels, self.pixels = self.pixels, None
        return self.loader.collate(batch, None if pixels is None else pixels[:len(batch)])

    def _meta(self, block: int, position: int) -> dict[str, Any]:
        return {"worker": self.worker, "position": [block, position], "counters": self.counters.to_dict()}
