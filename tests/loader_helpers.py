"""Helpers shared by the loader tests (unit and integration)."""

from itertools import islice


def take(loader, n):
    """The first ``n`` batches of ``loader`` (stops the iteration there)."""
    return list(islice(iter(loader), n))
