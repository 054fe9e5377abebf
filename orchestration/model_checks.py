"""Blocking check of the model side: the evaluation's metrics exist, include the required ones, are finite."""

import math

from dagster import AssetCheckExecutionContext, AssetCheckResult, Config, asset_check
from pydantic import Field

from assets.evaluation import evaluation
from orchestration.refs import EvalRef


class MetricsGateConfig(Config):
    required: list[str] = Field(default_factory=lambda: ["fgovd-sample/accuracy"],
                                description="metrics that must be present (the registry's primary metric)")


@asset_check(asset=evaluation, blocking=True,
             description="The evaluation holds metrics, the required ones included, and all are finite.")
def evaluation_metrics_finite(context: AssetCheckExecutionContext, config: MetricsGateConfig,
                              evaluation: EvalRef) -> AssetCheckResult:
    metrics = evaluation.metrics
    bad = sorted(k for k, v in metrics.items() if not isinstance(v, int | float) or not math.isfinite(v))
    missing = sorted(set(config.required) - set(metrics))
    return AssetCheckResult(passed=bool(metrics) and not bad and not missing,
                            metadata={"metrics": len(metrics), "non_finite": bad, "missing": missing,
                                      "benchmarks_sha256": evaluation.benchmarks_sha256 or ""})


MODEL_CHECKS = [evaluation_metrics_finite]
