"""Evaluation: the sample benchmark suite, the trained model against its starting checkpoint."""

import math
import shutil

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.ingest import raw_images
from assets.training import base_checkpoint, base_checkpoint_url, trained_model
from orchestration.resources import (
    BENCHMARKS,
    EVAL,
    RAW,
    TRAIN_RUN,
    MLflowResource,
    TrainingResource,
    WorkspaceResource,
)


@asset(group_name="evaluation", deps=[raw_images], kinds={"python"},
       description="One small benchmark per suite (FG-OVD, long/short retrieval, zero-shot, box "
                   "classification) built from the sample photos, and the YAML listing them.")
def eval_benchmarks(context: AssetExecutionContext, workspace: WorkspaceResource) -> MaterializeResult:
    from fgclip_core.eval.sample_benchmarks import write_sample_suite
    from fgclip_core.sample import materialize_sample

    sample = materialize_sample(workspace.local_path(RAW))  # idempotent: the files are already there
    suite = write_sample_suite(sample, workspace.local_path(BENCHMARKS))
    return MaterializeResult(metadata={"suite": MetadataValue.path(str(suite)), "images": len(sample.records)})


class EvaluationConfig(Config):
    templates: str = Field(default="simple", description="zero-shot prompt set: clip80, simple, none")
    box_templates: str = Field(default="simple", description="box-classification prompt set")
    batch_size: int = Field(default=32, ge=1)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def metrics_markdown(results) -> str:
    """One row per benchmark metric: model, baseline, difference (percent points)."""
    lines = ["| benchmark | metric | model | baseline | delta |", "|---|---|---:|---:|---:|"]
    for res, base in results:
        for k, v in res.metrics.items():
            b = base.metrics.get(k) if base is not None else None
            delta = "-" if b is None else f"{100 * (v - b):+.2f}"
            lines.append(f"| {res.benchmark} | {k} | {_fmt(v)} | {_fmt(b)} | {delta} |")
    return "\n".join(lines)


@asset(group_name="evaluation", deps=[trained_model, base_checkpoint, eval_benchmarks], kinds={"pytorch"},
       description="Metrics of the trained model and of its starting checkpoint on every benchmark, an "
                   "HTML report, and an MLflow run with both.")
def evaluation(context: AssetExecutionContext, config: EvaluationConfig, workspace: WorkspaceResource,
               training: TrainingResource, mlflow: MLflowResource) -> MaterializeResult:
    from fgclip_core.eval import EvalSettings, evaluate, load_suite_file

    out = workspace.local_path(EVAL)
    if out.exists():
        shutil.rmtree(out)
    suite = load_suite_file(workspace.local_path(BENCHMARKS, "benchmarks.yaml"))
    settings = EvalSettings(templates=config.templates, box_templates=config.box_templates,
                            batch_size=config.batch_size, progress=False)
    outcome = evaluate(suite.benchmarks, str(workspace.local_path(TRAIN_RUN, "export")), out, settings=settings,
                       baseline_dir=base_checkpoint_url(workspace, training), tracking_uri=mlflow.uri())
    flat = {f"{r.benchmark}/{k}": v for r, _ in outcome.results for k, v in r.metrics.items()}
    context.log.info("evaluated %d benchmarks: %s", len(outcome.results), outcome.metrics_path)
    return MaterializeResult(metadata={
        "metrics": MetadataValue.md(metrics_markdown(outcome.results)),
        "benchmarks": len(outcome.results),
        "non_finite_metrics": sum(not math.isfinite(v) for v in flat.values()),
        "report": MetadataValue.path(str(outcome.report.html)),
        "metrics_file": MetadataValue.path(str(outcome.metrics_path)),
        "mlflow_run_id": outcome.mlflow_run_id or "",
    })
