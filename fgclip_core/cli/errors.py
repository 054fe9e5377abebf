"""How the ``fgclip`` command reports errors: one line for what the user can fix, traceback on demand.

- An error the user caused (a :class:`~fgclip_core.errors.UserError`, one of :func:`user_error_types`,
  a ``click.ClickException`` raised by a command) prints ``error: <one line>`` on stderr and exits 1.
- A usage error (bad or missing flag) prints ``error: <one line> (see 'fgclip CMD --help')``, exits 2.
- ``fgclip --debug ...`` or ``FGCLIP_DEBUG=1`` prints the traceback first (the exit code is the same).
- Anything else is a bug: it propagates with its traceback.
Credentials in URLs inside a message are masked (``fgclip_core.redact``).
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, NoReturn

import click

from fgclip_core.errors import UserError, one_line

DEBUG_ENV = "FGCLIP_DEBUG"
_debug_flag = False


def set_debug(on: bool) -> None:
    """``fgclip --debug``: tracebacks for user errors in this process and in child processes."""
    global _debug_flag
    _debug_flag = on
    if on:
        os.environ[DEBUG_ENV] = "1"


def debug_enabled() -> bool:
    return _debug_flag or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types whose message is meant for the user, beyond :class:`UserError` subclasses.
    Imported lazily: only consulted once an error happened."""
    import json

    from pydantic import ValidationError

    from fgclip_core.annotate.backends.openai_compat import EndpointError
    from fgclip_core.annotate.images import ImageLoadError
    from fgclip_core.data.errors import RecordError
    from fgclip_core.data.loader import LoaderStateError, StarvationError
    from fgclip_core.data.pipeline import DestinationError, NothingUsableError
    from fgclip_core.data.shards import ManifestError
    from fgclip_core.eval.datasets.errors import BenchmarkFormatError
    from fgclip_core.sample.materialize import SampleSourceError

    return (UserError, ManifestError, RecordError, StarvationError, LoaderStateError, DestinationError,
            NothingUsableError, BenchmarkFormatError, EndpointError, ImageLoadError, SampleSourceError,
            ValidationError, json.JSONDecodeError, FileNotFoundError, PermissionError, IsADirectoryError,
            NotADirectoryError)


def is_user_error(e: BaseException) -> bool:
    return isinstance(e, user_error_types())  # UserError first in the tuple


def _exit(code: int) -> NoReturn:
    sys.exit(code)


def _say(message: str) -> None:
    """``error: <message>`` on stderr; a worker spawned by ``fgclip train --nproc N`` hands it to the parent
    instead (``FGCLIP_WORKER_ERRORS``), which reports it once rather than once per rank."""
    folder = os.environ.get("FGCLIP_WORKER_ERRORS")
    if folder and os.path.isdir(folder):
        rank = os.environ.get("RANK", "0")
        with open(os.path.join(folder, f"rank-{int(rank) if rank.isdigit() else 0}.txt"), "w") as f:
            f.write(message + "\n")
        return
    click.echo(f"error: {message}", err=True)


def report(e: BaseException) -> NoReturn:
    """Print ``e`` as the user sees it and exit; re-raise what is not a user error."""
    if isinstance(e, click.exceptions.Exit):
        _exit(e.exit_code)
    if isinstance(e, click.Abort):
        click.echo("error: aborted", err=True)
        _exit(1)
    if isinstance(e, click.UsageError):
        if debug_enabled():
            traceback.print_exception(e)
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        _say(f"{one_line(e.format_message())}{hint}")
        _exit(e.exit_code)
    if isinstance(e, click.ClickException):
        if debug_enabled():
            traceback.print_exception(e)
        _say(one_line(e.format_message()))
        _exit(e.exit_code)
    if is_user_error(e):
        if debug_enabled():
            traceback.print_exception(e)
        _say(one_line(str(e)) or type(e).__name__)
        _exit(1)
    raise e


class ReportingMixin:
    """``main`` of a click command/group that reports errors as above (what CliRunner and the
    ``fgclip`` console script both call)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        base = super().main  # type: ignore[misc]
        if not standalone_mode:
            return base(args, prog_name, complete_var, False, **extra)
        global _debug_flag
        _debug_flag = False  # per invocation: the group's --debug sets it again
        try:
            rv = base(args, prog_name, complete_var, False, **extra)
        except Exception as e:  # report() re-raises everything that is not a user error
            report(e)
        code = rv if isinstance(rv, int) else 0
        _exit(code)


class ReportingGroup(ReportingMixin, click.Group):
    pass


class ReportingCommand(ReportingMixin, click.Command):
    pass
