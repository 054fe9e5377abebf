"""Short-caption retrieval (COCO 5k, Flickr30k 1k): texts in 77-token short mode."""

from __future__ import annotations

from fgclip_core.eval.config import EvalSettings
from fgclip_core.eval.datasets.types import RetrievalData
from fgclip_core.eval.encoder import CachedEncoder, TextMode
from fgclip_core.eval.result import SuiteResult
from fgclip_core.eval.suites._retrieval import run_retrieval

SUITE = "short-retrieval"
TEXT_MODE: TextMode = "short"


def run(data: RetrievalData, encoder: CachedEncoder, settings: EvalSettings, protocol: dict) -> SuiteResult:
    return run_retrieval(SUITE, data, encoder, settings, TEXT_MODE)
