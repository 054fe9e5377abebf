"""`fgclip data` subcommands (owned by the data issue)."""

from __future__ import annotations

import click


@click.group(name="data")
def data() -> None:
    """Data commands."""
