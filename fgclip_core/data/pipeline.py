"""The two data runs: validate annotations, and build shards. The CLI and Dagster call these.

Both stream the input once, record by record; nothing is lost: every input record is counted as
kept or quarantined (``ValidationSummary``), and the quarantine file says why for each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import reprlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from fgclip_core import storage
from fgclip_core.data.atomic import AtomicWriter, atomic_open, remove_stale_temps, resolve
from fgclip_core.data.config import DataConfig
from fgclip_core.data.io import dumps_record, iter_raw
from fgclip_core.data.pretok import TOKENS_EXT, TokenWriter, manifest_entry
from fgclip_core.data.shards import (
    QUARANTINE_NAME,
    Manifest,
    ShardInfo,
    ShardWriter,
    encode_sample_json,
    foreign_entries,
    remove_unlisted_shards,
    write_manifest,
)
from fgclip_core.data.tokens import FastEncoder, FastEncoderUnavailable
from fgclip_core.data.validate import Kept, QuarantineEntry, ValidationSummary, Validator, iter_outcomes

log = logging.getLogger(__name__)

Outcome = Kept | QuarantineEntry
KEPT_NAME = "kept.jsonl"
SUMMARY_NAME = "summary.json"


class DestinationError(OSError):
    """The output location cannot be written; the message names it."""


class TargetNotEmptyError(DestinationError):
    """``build_shards`` without ``overwrite`` into a folder that holds a build or files not ours."""


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


def check_target(out_url: str, overwrite: bool, fs: Any = None) -> None:
    """Refuse, without ``overwrite``, a destination that holds a committed build (a manifest) or files
    that no build of ours writes. Leftovers of a killed build (shards no manifest lists, temporary
    files) do not count: no reader trusts them, and the next build removes them."""
    has_manifest, other = foreign_entries(out_url, fs)
    if overwrite or not (has_manifest or other):
        return
    if has_manifest:
        raise TargetNotEmptyError(
            f"{out_url}: already holds a shard build (manifest.json); pass --overwrite to replace it (the new "
            f"build is written beside it and takes over only when complete)")
    shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
    raise TargetNotEmptyError(f"{out_url}: is not empty ({shown}); use an empty folder, or pass --overwrite "
                              f"to build beside those files (they are left alone)")


@contextlib.contextmanager
def _until_commit(w: AtomicWriter) -> Iterator[IO[Any]]:
    """``w``'s file; discarded if the block fails, left uncommitted (for ``w.commit()``) if it succeeds."""
    try:
        yield w.fh
    except BaseException:
        w.discard()
        raise


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
                 on_shard: Callable[[ShardInfo], None] | None = None, tokenizer: Any = None,
                 overwrite: bool = False) -> BuildResult:
    """Validate and pack kept records into ``out_url/shard-NNNNNN-<hash>.tar``; write the manifest
    (the commit point), then the quarantine. Raises ``DestinationError`` (``TargetNotEmptyError``:
    ``out_url`` holds a build or other files and ``overwrite`` is off) or ``NothingUsableError``
    (after writing the quarantine, so the reasons can be read; the build there before is kept).

    Until the manifest is written, what a reader sees at ``out_url`` does not change: the new
    shards carry fresh (content-addressed) names beside the old ones, and the old manifest still
    lists only its own. Once it is written, the old build's shards and any killed build's
    leftovers are removed.

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
    check_target(out_url, overwrite, fs)
    stale = remove_stale_temps(out_url, fs)
    if stale:
        log.warning("%s: removed %d temporary file(s) left by an interrupted run", out_url, stale)
    validator = Validator(images_root, cfg.read, cfg.validation, want_image_bytes=True,
                          jpeg_quality=cfg.shards.jpeg_quality)
    summary = ValidationSummary()
    quarantine = AtomicWriter(storage.join(out_url, QUARANTINE_NAME), "w", fs=fs)
    with _until_commit(quarantine) as q_fh, \
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
    with _until_commit(quarantine):
        manifest = None
        if summary.kept:   # the commit point; the quarantine follows it, so a kill before leaves the old pair
            manifest = write_manifest(out_url, writer.shards, cfg.shards.samples_per_shard, summary.to_dict(),
                                      fs=fs, tokens=tokens_entry)
    quarantine.commit()
    if manifest is None:
        raise NothingUsableError(
            f"{annotations}: no usable record out of {summary.total} "
            f"(quarantined by reason: {dict(summary.by_reason) or 'none'}); see {storage.join(out_url, QUARANTINE_NAME)}")
    removed = remove_unlisted_shards(out_url, manifest, fs)
    if removed:
        log.info("%s: removed %d shard(s) of an earlier run not in the new manifest", out_url, len(removed))
    return BuildResult(summary, manifest, removed)
