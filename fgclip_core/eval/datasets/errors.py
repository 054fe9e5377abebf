"""The one error type for a missing or malformed benchmark file."""

from __future__ import annotations


class BenchmarkFormatError(ValueError):
    """A benchmark file is missing or malformed; the message names the file and the line or item."""

    def __init__(self, source: str, where: str | int | None, message: str) -> None:
        if isinstance(where, int):
            loc = f"{source}:{where}"
        elif where:
            loc = f"{source} ({where})"
        else:
            loc = source
        super().__init__(f"{loc}: {message}")
        self.source = source
        self.where = where
