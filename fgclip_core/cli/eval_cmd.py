"""`fgclip eval` (owned by the evaluation issue)."""

from __future__ import annotations

import click


@click.group(name="eval")
def eval_() -> None:
    """Evaluate a model on FG-CLIP's benchmark suite."""
