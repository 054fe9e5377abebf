"""`fgclip data` subcommands: validate annotations, build shards (thin: the work is in fgclip_core.data)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from fgclip_core.config import ConfigError, load_config
from fgclip_core.data.config import DataConfig
from fgclip_core.data.pipeline import (
    DestinationError,
    NothingUsableError,
    build_shards,
    validate_annotations,
)
from fgclip_core.data.validate import Kept, ValidationSummary

_console = Console(stderr=False)


def _load_cfg(config: str | None, overrides: list[str]) -> DataConfig:
    """File, then --set overrides, then the dedicated flags (which win)."""
    try:
        return load_config(DataConfig, config, overrides)
    except ConfigError as e:
        raise click.ClickException(str(e)) from e


def _progress(desc: str) -> tuple[tqdm, Any]:
    bar = tqdm(desc=desc, unit="rec", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)

    def on_outcome(outcome: Any) -> None:
        bar.update(1)
        if not isinstance(outcome, Kept):
            bar.set_postfix_str(f"quarantined: {outcome.reason}", refresh=False)

    return bar, on_outcome


def _summary_table(title: str, summary: ValidationSummary, extra: dict[str, str] | None = None) -> Table:
    table = Table(title=title)
    table.add_column("item")
    table.add_column("value", justify="right")
    table.add_row("records in", str(summary.total))
    table.add_row("kept", str(summary.kept))
    table.add_row("quarantined", str(summary.quarantined))
    for reason, n in sorted(summary.by_reason.items()):
        table.add_row(f"  {reason}", str(n))
    for k, v in (extra or {}).items():
        table.add_row(k, v)
    return table


_common = [
    click.option("--annotations", required=True, help="Annotation file (.json official / .jsonl) or folder of them."),
    click.option("--images", "images", default=None, help="Root that f_path is relative to (folder or URL)."),
    click.option("--config", "config", default=None, type=click.Path(dir_okay=False),
                 help="DataConfig YAML/JSON file."),
    click.option("--set", "overrides", multiple=True, help="Config override key=value (e.g. validation.min_side=16)."),
    click.option("--strip-prefix", "strip_prefixes", multiple=True,
                 help="f_path prefix to strip (repeatable; default: the official one)."),
    click.option("--workers", type=int, default=None,
                 help="Processes reading and decoding images (default from config: 1); output order is kept."),
]


def _with_common(f: Any) -> Any:
    for opt in reversed(_common):
        f = opt(f)
    return f


def _overrides(overrides: tuple[str, ...], strip_prefixes: tuple[str, ...], workers: int | None) -> list[str]:
    out = list(overrides)
    if strip_prefixes:
        out.append("read.strip_prefixes=" + json.dumps(list(strip_prefixes)))
    if workers is not None:
        out.append(f"validation.workers={workers}")
    return out


@click.group(name="data")
def data() -> None:
    """FineHARD data: validate annotations, build WebDataset shards."""


@data.command("validate")
@_with_common
@click.option("--out", "out", required=True, help="Folder for kept.jsonl, quarantine.jsonl, summary.json.")
def validate_cmd(annotations: str, images: str | None, config: str | None, overrides: tuple[str, ...],
                 strip_prefixes: tuple[str, ...], workers: int | None, out: str) -> None:
    """Check every record and image; write kept / quarantined records and a summary."""
    cfg = _load_cfg(config, _overrides(overrides, strip_prefixes, workers))
    bar, on_outcome = _progress("validate")
    try:
        summary = validate_annotations(annotations, images, out, cfg, on_outcome=on_outcome)
    except (DestinationError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    finally:
        bar.close()
    _console.print(_summary_table(f"fgclip data validate -> {out}", summary))
    if summary.kept == 0:
        raise click.ClickException(f"no usable record out of {summary.total}; reasons in {out}/quarantine.jsonl")


@data.command("build-shards")
@_with_common
@click.option("--out", "out", required=True, help="Folder or URL (s3://bucket/prefix) for the shards.")
@click.option("--samples-per-shard", type=int, default=None, help="Samples per shard (default from config).")
@click.option("--tokenizer", "tokenizer_dir", default=None,
              help="Checkpoint/tokenizer folder, or 'clip' for OpenAI CLIP's tokenizer (all shipped archs): also "
                   "store every sample's token ids ({key}.tok.npy, with loader.short_caption_prefix) and the "
                   "tokenizer's fingerprint in the manifest; a loader with the same tokenizer then skips tokenising.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace the build already at --out (refused without this flag): the new shards are written "
                   "beside it under fresh names and take over when the new manifest is written, last; a build "
                   "killed before that leaves the old one exactly as it was.")
def build_shards_cmd(annotations: str, images: str | None, config: str | None, overrides: tuple[str, ...],
                     strip_prefixes: tuple[str, ...], workers: int | None, out: str,
                     samples_per_shard: int | None, tokenizer_dir: str | None, overwrite: bool) -> None:
    """Validate and pack records into shard-NNNNNN.tar + manifest.json + quarantine.jsonl."""
    ov = _overrides(overrides, strip_prefixes, workers)
    if samples_per_shard is not None:
        ov.append(f"shards.samples_per_shard={samples_per_shard}")
    cfg = _load_cfg(config, ov)
    tokenizer = None
    if tokenizer_dir is not None:
        from fgclip_core.model.processing import TokenizerError, clip_tokenizer, load_tokenizer

        try:
            builtin = tokenizer_dir == "clip" and not Path(tokenizer_dir).exists()
            tokenizer = clip_tokenizer() if builtin else load_tokenizer(tokenizer_dir)
        except TokenizerError as e:
            raise click.ClickException(str(e)) from e
    bar, on_outcome = _progress("build-shards")
    try:
        result = build_shards(annotations, images, out, cfg, on_outcome=on_outcome, tokenizer=tokenizer,
                              overwrite=overwrite)
    except (DestinationError, FileNotFoundError, NothingUsableError) as e:
        raise click.ClickException(str(e)) from e
    finally:
        bar.close()
    m = result.manifest
    _console.print(_summary_table(f"fgclip data build-shards -> {out}", result.summary,
                                  {"shards": str(m.num_shards), "samples": str(m.total_samples),
                                   "bytes": f"{m.total_bytes:,}",
                                   "token ids": "stored" if m.tokens else "no (tokenised by the loader)"}))


@data.command("verify")
@click.option("--shards", "shards", required=True, help="Shard folder or URL holding manifest.json.")
def verify_cmd(shards: str) -> None:
    """Check the manifest's own hash and every listed shard's size and sha256."""
    from fgclip_core.data.shards import ManifestError, read_manifest, verify_shards

    try:
        m = read_manifest(shards)
    except ManifestError as e:
        raise click.ClickException(str(e)) from e
    problems = verify_shards(shards, m)
    for p in problems:
        click.echo(p, err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} of {m.num_shards} shard(s) do not match the manifest")
    click.echo(f"{shards}: {m.num_shards} shard(s), {m.total_samples} samples, {m.total_bytes:,} bytes: all match")
