"""`fgclip annotate` subcommands (owned by the annotate issue)."""

from __future__ import annotations

import click


@click.group(name="annotate")
def annotate() -> None:
    """Annotate commands."""
