"""Evaluation: FG-CLIP's benchmark suite with exact metrics and reports (see README.md here).

Public entry points (imported lazily, so reading a benchmark does not pull in matplotlib)::

    from fgclip_core.eval import evaluate, load_suite_file, BenchmarkSpec, EvalSettings
    outcome = evaluate(load_suite_file("benchmarks.yaml").benchmarks, "ckpt/", "out/", baseline_dir="base/")
    outcome.report.html  # out/report.html
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "evaluate": "fgclip_core.eval.runner",
    "EvalOutcome": "fgclip_core.eval.runner",
    "run_benchmark": "fgclip_core.eval.runner",
    "BenchmarkSpec": "fgclip_core.eval.config",
    "EvalSettings": "fgclip_core.eval.config",
    "SuiteFile": "fgclip_core.eval.config",
    "load_suite_file": "fgclip_core.eval.config",
    "SuiteResult": "fgclip_core.eval.result",
    "BenchmarkFormatError": "fgclip_core.eval.datasets.errors",
    "write_sample_suite": "fgclip_core.eval.sample_benchmarks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fgclip_core.eval' has no attribute {name!r}")
