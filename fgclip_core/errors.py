"""The project's user-error base class and the one-line form of error messages.

``UserError``: an error the user caused (a bad file, flag or record, an unreachable server) whose
message alone says what to fix. The ``fgclip`` command prints such an error as one line,
``error: <message>``, and exits non-zero; ``--debug`` (or ``FGCLIP_DEBUG=1``) adds the traceback.
Domain errors (``ConfigError``, ``CheckpointError``, ...) derive from it; the CLI also treats a few
foreign types as user errors (``fgclip_core.cli.errors.USER_ERROR_TYPES``).
"""

from __future__ import annotations

from fgclip_core.redact import redact_text

# Lines of pydantic's error text that carry no information for a user.
_NOISE = ("For further information visit",)


class UserError(Exception):
    """Base of every error a user can cause; its message names the file/record and the reason."""


def one_line(message: str) -> str:
    """``message`` on one line (lines joined with ``; ``), credentials in URLs masked."""
    parts = [p.strip() for p in str(message).splitlines()]
    text = "; ".join(p for p in parts if p and not p.startswith(_NOISE))
    return redact_text(text)
