"""Long-caption retrieval (ShareGPT4V-1k, DCI, Urban-1K): texts in 248-token long mode."""

from __future__ import annotations

from fgclip_core.eval.config import EvalSettings
from fgclip_core.eval.datasets.types import RetrievalData
from fgclip_core.eval.encoder import CachedEncoder, TextMode
from fgclip_core.eval.result import SuiteResult
from fgclip_core.eval.suites._retrieval import run_retrieval

SUITE = "long-retrieval"
TEXT_MODE: TextMode = "long"


def run(data: RetrievalData, encoder: CachedEncoder, settings: EvalSettings, protocol: dict) -> SuiteResult:
    return run_retrieval(SUITE, data, encoder, settings, TEXT_MODE)
