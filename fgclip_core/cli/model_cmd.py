"""`fgclip model` subcommands: write a random checkpoint, convert a transformers CLIP checkpoint."""

from __future__ import annotations

import click


@click.group(name="model")
def model() -> None:
    """Create and convert FG-CLIP checkpoints."""


@model.command(name="init")
@click.option("--arch", required=True, help="Architecture name (fgclip_core/model/configs/<name>.json).")
@click.option("--output", required=True, help="Checkpoint directory (or s3:// URL) to write.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random initialisation.")
def init(arch: str, output: str, seed: int) -> None:
    """Write a randomly initialised FG-CLIP checkpoint with tokenizer and image processor."""
    from fgclip_core.config import ConfigError
    from fgclip_core.model.build import init_checkpoint
    from fgclip_core.model.processing import TokenizerError

    try:
        out = init_checkpoint(arch, output, seed=seed)
    except (ConfigError, TokenizerError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {arch} checkpoint (seed {seed}) to {out}")


@model.command(name="convert")
@click.option("--from", "source", required=True,
              help="transformers CLIP (or FG-CLIP) checkpoint directory or s3:// URL.")
@click.option("--output", required=True, help="FG-CLIP directory (or s3:// URL) to write.")
def convert(source: str, output: str) -> None:
    """Turn a transformers CLIP checkpoint into an FG-CLIP one (248 positions, copied heads)."""
    from fgclip_core.model.build import convert_checkpoint
    from fgclip_core.model.checkpoint import CheckpointError
    from fgclip_core.model.processing import TokenizerError

    try:
        notes = convert_checkpoint(source, output)
    except (CheckpointError, TokenizerError) as e:
        raise click.ClickException(str(e)) from e
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote FG-CLIP checkpoint to {output}")
