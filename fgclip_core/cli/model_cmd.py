"""`fgclip model` subcommands (owned by the model issue)."""

from __future__ import annotations

import click


@click.group(name="model")
def model() -> None:
    """Model commands."""
