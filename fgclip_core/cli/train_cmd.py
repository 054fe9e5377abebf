"""`fgclip train` (owned by the training issue)."""

from __future__ import annotations

import click


@click.command(name="train")
def train() -> None:
    """Train an FG-CLIP model with DeepSpeed."""
    raise click.ClickException("training is not implemented yet")
