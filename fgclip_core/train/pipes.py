"""Dagster Pipes reporting from rank 0, only when a Dagster Pipes client launched the run.

``dagster-pipes`` is the small dependency-free client library (not Dagster itself). When the
``DAGSTER_PIPES_CONTEXT`` variable is absent everything here is a no-op; a Pipes failure is a
warning, never a training failure.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

CONTEXT_ENV = "DAGSTER_PIPES_CONTEXT"


class PipesReporter:
    def __init__(self, ctx: Any = None):
        self.ctx = ctx

    @classmethod
    def open(cls, rank: int) -> PipesReporter:
        if rank != 0 or CONTEXT_ENV not in os.environ:
            return cls(None)
        try:
            from dagster_pipes import open_dagster_pipes

            return cls(open_dagster_pipes())
        except Exception as e:
            log.warning("Dagster Pipes could not be opened (%s); training continues without it", e)
            return cls(None)

    def log(self, message: str) -> None:
        if self.ctx is not None:
            self._guard(lambda: self.ctx.log.info(message))

    def report_materialization(self, metadata: dict[str, Any]) -> None:
        if self.ctx is None:
            return
        clean = {k: (v if isinstance(v, int | float | str | bool) else json.dumps(v, default=str))
                 for k, v in metadata.items() if v is not None}
        self._guard(lambda: self.ctx.report_asset_materialization(metadata=clean))

    def close(self) -> None:
        if self.ctx is not None:
            self._guard(self.ctx.close)
            self.ctx = None

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception as e:
            log.warning("Dagster Pipes report failed (%s); continuing without it", e)
            self.ctx = None
