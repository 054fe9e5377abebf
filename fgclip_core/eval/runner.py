"""Run benchmarks for a model (and optionally a baseline), write results, the report, and log.

Output layout (``OUT``):
* one benchmark: ``OUT/metrics.json``, ``OUT/details.jsonl``, ``OUT/result.json``, baseline under
  ``OUT/baseline/``;
* several (``fgclip eval all``): the same per benchmark under ``OUT/<name>/`` and a summary
  ``OUT/metrics.json`` = ``{"suite": "all", "n": total, "metrics": {"<name>/<metric>": value}}``;
* always ``OUT/report.html`` and ``OUT/report.png``; the embedding cache under ``OUT/cache``
  unless ``settings.cache_dir`` says otherwise.

MLflow logging comes last and is never fatal: every file above is written first; an unreachable or
failing tracking server is reported in one warning line (``EvalOutcome.tracking_failure``), within
seconds (one probe, then bounded retries; ``fgclip_core.mlflow_http``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgclip_core.eval.cache import EmbeddingCache
from fgclip_core.eval.config import BenchmarkSpec, EvalSettings
from fgclip_core.eval.datasets import read_benchmark
from fgclip_core.eval.datasets.types import ClassificationData
from fgclip_core.eval.encoder import CachedEncoder, Encoder, FGCLIPEncoder
from fgclip_core.eval.paper import load_paper_numbers, paper_section
from fgclip_core.eval.protocol import protocol_record, protocol_tags
from fgclip_core.eval.report import ReportPaths, write_report
from fgclip_core.eval.result import SuiteResult
from fgclip_core.eval.suites import box_cls, fgovd, long_retrieval, short_retrieval, zeroshot
from fgclip_core.eval.tracking import DEFAULT_EXPERIMENT, log_to_mlflow, mlflow_name
from fgclip_core.mlflow_http import bounded_http, keep_credentials_off_stdout, probe
from fgclip_core.redact import redact_text, redact_uri

log = logging.getLogger(__name__)

SUITE_RUNNERS: dict[str, Callable[[Any, CachedEncoder, EvalSettings, dict], SuiteResult]] = {
    "fgovd": fgovd.run,
    "long-retrieval": long_retrieval.run,
    "short-retrieval": short_retrieval.run,
    "zeroshot": zeroshot.run,
    "box-cls": box_cls.run,
}

EncoderFactory = Callable[[str, EvalSettings], Encoder]


def default_encoder_factory(model_dir: str, settings: EvalSettings) -> Encoder:
    return FGCLIPEncoder(model_dir, device=settings.device)


@dataclass
class EvalOutcome:
    results: list[tuple[SuiteResult, SuiteResult | None]]
    metrics_path: Path
    report: ReportPaths
    mlflow_run_id: str | None
    tracking_failure: str | None = None
    paper: dict | None = None  # the known release's published figures vs ours (fgclip_core.eval.paper)


def _log_tracking(flat: dict[str, float], artifacts: list[tuple[Path, str]], tracking_uri: str | None,
                  tags: dict[str, str], run_name: str = "fgclip-eval",
                  experiment: str = DEFAULT_EXPERIMENT) -> tuple[str | None, str | None]:
    """``(run id, None)`` or ``(None, one-line reason)``; never raises for a tracking failure."""
    where = redact_uri(tracking_uri) if tracking_uri else "the active MLflow run"
    keep_credentials_off_stdout(tracking_uri)
    why = probe(tracking_uri) if tracking_uri else None
    if why:
        reason = f"MLflow at {where} is not reachable ({why}); metrics are in the output folder only"
    else:
        try:
            with bounded_http():
                return log_to_mlflow(flat, artifacts, tracking_uri=tracking_uri, tags=tags, run_name=run_name,
                                     experiment=experiment), None
        except Exception as e:  # tracking must not lose an evaluation whose files are written
            reason = f"MLflow logging to {where} failed ({type(e).__name__}: {e}); metrics are in the output folder only"
    reason = " ".join(redact_text(reason).split())
    reason = reason if len(reason) <= 600 else reason[:597] + "..."
    log.warning("%s", reason)
    return None, reason


def _cached(model_dir: str, settings: EvalSettings, out: Path, factory: EncoderFactory) -> CachedEncoder:
    enc = factory(model_dir, settings)
    root = Path(settings.cache_dir) if settings.cache_dir else out / "cache"
    return CachedEncoder(enc, EmbeddingCache(root, enc.fingerprint), settings.batch_size, settings.progress)


def run_benchmark(spec: BenchmarkSpec, encoder: CachedEncoder, settings: EvalSettings,
                  data: Any = None) -> SuiteResult:
    """Read (unless ``data`` was read already) and evaluate one benchmark."""
    data = read_benchmark(spec) if data is None else data
    values = spec.protocol_values()
    result = SUITE_RUNNERS[spec.suite](data, encoder, settings, values)
    used = {**values, **settings.model_dump(include={"tie_tol", "recall_ks", "topk", "templates", "box_templates"})}
    result.protocol = protocol_record(spec.protocol, used, spec.suite)
    if isinstance(data, ClassificationData):
        result.protocol["settings"]["classnames_source"] = data.classnames_source
    if result.missing_images:
        log.warning("%s: %d missing or unreadable image(s), e.g. %s", result.benchmark,
                    len(result.missing_images), result.missing_images[0])
    return result


def evaluate(specs: list[BenchmarkSpec], model_dir: str, output: str | Path, settings: EvalSettings | None = None,
             baseline_dir: str | None = None, tracking_uri: str | None = None,
             encoder_factory: EncoderFactory = default_encoder_factory, experiment: str | None = None,
             run_name: str = "fgclip-eval", tags: dict[str, str] | None = None) -> EvalOutcome:
    """``experiment``/``run_name``/``tags``: where and how the MLflow run is recorded (lineage tags
    such as the orchestrator's run id go in ``tags``); default experiment: MLflow's ``Default``."""
    settings = settings or EvalSettings()
    out = Path(output)
    # Read every benchmark first: a malformed file fails before any model is loaded.
    datas = [read_benchmark(spec) for spec in specs]
    numbers = load_paper_numbers(settings.paper_numbers)
    if settings.paper_release is not None:
        numbers.named(settings.paper_release)  # an unknown name fails before any model is loaded
    out.mkdir(parents=True, exist_ok=True)
    model = _cached(model_dir, settings, out, encoder_factory)
    base = _cached(baseline_dir, settings, out, encoder_factory) if baseline_dir else None
    single = len(specs) == 1
    pairs: list[tuple[SuiteResult, SuiteResult | None]] = []
    artifacts: list[tuple[Path, str]] = []
    for spec, data in zip(specs, datas, strict=True):
        bench_dir = out if single else out / spec.display_name()
        res = run_benchmark(spec, model, settings, data)
        res.write(bench_dir)
        artifacts.append((bench_dir / "metrics.json", "eval" if single else f"eval/{spec.display_name()}"))
        base_res = None
        if base is not None:
            base_res = run_benchmark(spec, base, settings, data)
            base_res.write(bench_dir / "baseline")
        pairs.append((res, base_res))

    paper = paper_section([r for r, _ in pairs], model.fingerprint, numbers, settings.paper_release)
    if single:
        metrics_path = out / "metrics.json"
        if paper is not None:
            data = json.loads(metrics_path.read_text())
            metrics_path.write_text(json.dumps({**data, "paper": paper}, indent=2) + "\n")
    else:
        summary = {"suite": "all", "n": sum(r.n for r, _ in pairs),
                   "metrics": {f"{r.benchmark}/{k}": v for r, _ in pairs for k, v in r.metrics.items()},
                   "benchmarks": {r.benchmark: {"suite": r.suite, "n": r.n, "dir": r.benchmark} for r, _ in pairs},
                   "protocols": {r.benchmark: r.protocol for r, _ in pairs}}
        if base is not None:
            summary["baseline_metrics"] = {f"{b.benchmark}/{k}": v for _, b in pairs if b
                                           for k, v in b.metrics.items()}
        if paper is not None:
            summary["paper"] = paper
        metrics_path = out / "metrics.json"
        metrics_path.write_text(json.dumps(summary, indent=2) + "\n")
    report = write_report(pairs, out, model=model_dir, baseline=baseline_dir)
    artifacts += [(report.html, "eval"), (report.png, "eval")]

    flat = {mlflow_name("eval", r.benchmark, k): v for r, _ in pairs for k, v in r.metrics.items()}
    flat.update({mlflow_name("eval_baseline", b.benchmark, k): v for _, b in pairs if b for k, v in b.metrics.items()})
    all_tags = {"eval.model": redact_text(str(model_dir)), "eval.baseline": redact_text(baseline_dir or ""),
                **protocol_tags({"protocols": {r.benchmark: r.protocol for r, _ in pairs}}), **(tags or {})}
    run_id, failure = _log_tracking(flat, artifacts, tracking_uri, tags=all_tags, run_name=run_name,
                                    experiment=experiment or DEFAULT_EXPERIMENT)
    return EvalOutcome(results=pairs, metrics_path=metrics_path, report=report, mlflow_run_id=run_id,
                       tracking_failure=failure, paper=paper)
