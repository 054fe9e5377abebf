"""The two data runs: validate annotations, and build shards. The CLI and Dagster call these.

Both stream the input once, record by record; nothing is lost: every input record is counted as
kept or quarantined (``ValidationSummary``), and the quarantine file says why for each.
"""

from __future__ import annotations

import json
import logging
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fgclip_core import storage
from fgclip_core.data.atomic import atomic_open, remove_stale_temps, resolve
from fgclip_core.data.config import DataConfig
from fgclip_core.data.io import dumps_record, iter_raw
from fgclip_core.data.pretok import TOKENS_EXT, TokenWriter, manifest_entry
from fgclip_core.data.shards import (
    Manifest,
    ShardInfo,
    ShardWriter,
    encode_sample_json,
    remove_unlisted_shards,
    write_manifest,
)
from fgclip_core.data.tokens import FastEncoder, FastEncoderUnavailable
from fgclip_core.data.validate import Kept, QuarantineEntry, ValidationSummary, Validator, iter_outcomes

log = logging.getLogger(__name__)

Outcome = Kept | QuarantineEntry
KEPT_NAME = "kept.jsonl"
QUARANTINE_NAME = "quarantine.jsonl"
SUMMARY_NAME = "summary.json"


class DestinationError(OSError):
    """The output location cannot be written; the message names it."""


class NothingUsableError(RuntimeError):
    """Every input record was quarantined (or there were none)."""


@dataclass
class BuildResult:
    summary: ValidationSummary
    manifest: Manifest
    removed_shards: list[str]


def ensure_writable(url: str, fs: Any = None) -> None:
    """Fail early, before hours of work, when ``url`` cannot take files."""
    probe = storage.join(url, "_tmp.write-probe")
    try:
        fs, path = resolve(url, fs)
        if not storage.is_remote(url):
            fs.makedirs(path, exist_ok=True)
        with atomic_open(probe, "w", fs=fs) as fh:
            fh.write("ok")
        fs.rm(resolve(probe, fs)[1])
    except Exception as e:  # any failure here means the same thing to the caller
        raise DestinationError(f"{url}: destination cannot be written: {type(e).__name__}: {e}") from e


def _quarantine_line(q: QuarantineEntry) -> str:
    """One JSON line whatever the raw record holds: a lone surrogate is written escaped (ASCII), a
    value that cannot be encoded at all (nesting too deep) as the start of its ``repr``."""
    d = q.to_dict()
    try:
        line = json.dumps(d, sort_keys=True, ensure_ascii=False, default=repr)
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(d, sort_keys=True, ensure_ascii=True, default=repr)
    except (ValueError, RecursionError):
        d["raw"] = reprlib.repr(d["raw"])
        line = json.dumps(d, sort_keys=True, ensure_ascii=True, default=repr)
    return line + "\n"


def validate_annotations(annotations: str, images_root: str | None, out_dir: str,
                         cfg: DataConfig | None = None,
                         on_outcome: Callable[[Outcome], None] | None = None) -> ValidationSummary:
    """Write ``out_dir/kept.jsonl``, ``quarantine.jsonl`` and ``summary.json``."""
    cfg = cfg or DataConfig()
    fs = storage.filesystem(out_dir)[0]
    ensure_writable(out_dir, fs)
    validator = Validator(images_root, cfg.read, cfg.validation)
    summary = ValidationSummary()
    with atomic_open(storage.join(out_dir, KEPT_NAME), "w", fs=fs) as kept_fh, \
            atomic_open(storage.join(out_dir, QUARANTINE_NAME), "w", fs=fs) as q_fh:
        for outcome in iter_outcomes(iter_raw(annotations, cfg.read), validator, cfg.validation.workers):
            summary.add(outcome)
            if isinstance(outcome, Kept):
                kept_fh.write(dumps_record(outcome.record) + "\n")
            else:
                q_fh.write(_quarantine_line(outcome))
            if on_outcome:
                on_outcome(outcome)
    _write_summary(out_dir, summary.to_dict(), fs)
    return summary


def _write_summary(out_dir: str, data: dict[str, Any], fs: Any) -> None:
    with atomic_open(storage.join(out_dir, SUMMARY_NAME), "w", fs=fs) as fh:
        fh.write(json.dumps(data, indent=1, sort_keys=True) + "\n")


def build_shards(annotations: str, images_root: str | None, out_url: str, cfg: DataConfig | None = None,
                 on_outcome: Callable[[Outcome], None] | None = None,
                 on_shard: Callable[[ShardInfo], None] | None = None, tokenizer: Any = None) -> BuildResult:
    """Validate and pack kept records into ``out_url/shard-NNNNNN.tar``; write the quarantine and the
    manifest (last). Raises ``DestinationError`` or ``NothingUsableError`` (after writing the
    quarantine, so the reasons can be read).

    ``tokenizer`` (an ``FGCLIPTokenizer``): also store every sample's token ids (``data.pretok``),
    with ``cfg.loader.short_caption_prefix`` and the tokenizer's lengths, and its fingerprint in the
    manifest; a loader with the same tokenizer, prefix and lengths then skips tokenising."""
    cfg = cfg or DataConfig()
    if not cfg.validation.check_images:
        raise ValueError("building shards reads every image: validation.check_images must be true")
    token_writer, tokens_entry = None, None
    if tokenizer is not None:
        prefix = cfg.loader.short_caption_prefix
        tokens_entry = manifest_entry(tokenizer, prefix)   # raises TokensUnavailable before any work
        try:
            encoder: Any = FastEncoder.for_tokenizer(tokenizer)
        except FastEncoderUnavailable:
            encoder = tokenizer
        token_writer = TokenWriter(encoder, tokenizer.pad_token_id, prefix, tokenizer.vocab_size)
    fs = storage.filesystem(out_url)[0]
    ensure_writable(out_url, fs)
    stale = remove_stale_temps(out_url, fs)
    if stale:
        log.warning("%s: removed %d temporary file(s) left by an interrupted run", out_url, stale)
    validator = Validator(images_root, cfg.read, cfg.validation, want_image_bytes=True,
                          jpeg_quality=cfg.shards.jpeg_quality)
    summary = ValidationSummary()
    with atomic_open(storage.join(out_url, QUARANTINE_NAME), "w", fs=fs) as q_fh, \
            ShardWriter(out_url, cfg.shards.samples_per_shard, on_shard=on_shard, fs=fs) as writer:
        for outcome in iter_outcomes(iter_raw(annotations, cfg.read), validator, cfg.validation.workers):
            summary.add(outcome)
            if isinstance(outcome, Kept):
                assert outcome.image_bytes is not None   # check_images is on (checked above)
                record_dict = outcome.record.to_dict()
                extra = None
                if token_writer is not None:
                    extra = {TOKENS_EXT: token_writer.encode(outcome.record, encode_sample_json(record_dict))}
                writer.add(outcome.record.id, outcome.image_bytes, record_dict, extra)
            else:
                q_fh.write(_quarantine_line(outcome))
            if on_outcome:
                on_outcome(outcome)
    if summary.kept == 0:
        raise NothingUsableError(
            f"{annotations}: no usable record out of {summary.total} "
            f"(quarantined by reason: {dict(summary.by_reason) or 'none'}); see {storage.join(out_url, QUARANTINE_NAME)}")
    manifest = write_manifest(out_url, writer.shards, cfg.shards.samples_per_shard, summary.to_dict(), fs=fs,
                              tokens=tokens_entry)
    removed = remove_unlisted_shards(out_url, manifest, fs)
    if removed:
        log.info("%s: removed %d shard(s) of an earlier run not in the new manifest", out_url, len(removed))
    return BuildResult(summary, manifest, removed)
