"""`fgclip` command line: one thin click group per domain, each in its own module."""

from __future__ import annotations

import logging

import click

from fgclip_core.cli import annotate_cmd, data_cmd, eval_cmd, model_cmd, registry_cmd, train_cmd
from fgclip_core.cli.errors import ReportingGroup, set_debug


@click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error (also FGCLIP_DEBUG=1).")
def cli(verbose: int, debug: bool) -> None:
    """FG-CLIP: fine-grained CLIP models, data, training and evaluation.

    An error you can fix prints one line, `error: ...`, and exits 1 (2 for a usage error)."""
    set_debug(debug)
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


cli.add_command(model_cmd.model)
cli.add_command(data_cmd.data)
cli.add_command(annotate_cmd.annotate)
cli.add_command(train_cmd.train)
cli.add_command(eval_cmd.eval_)
cli.add_command(registry_cmd.registry)


def main() -> None:
    cli(prog_name="fgclip")
