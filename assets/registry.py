"""MLflow registry: the trained model as a new version of ``fgclip`` (alias ``challenger``), promoted to
``champion`` only when every gate passes (``fgclip_core.promotion``; the logic lives in fgclip_core, this
asset wires refs and config). Model and metrics come from this run's input references, never from a
fixed folder, and must belong together (the evaluation names the model hash it evaluated). The model is
registered from its reference's URL (a local folder, or ``s3://`` fetched into the checkpoint cache), which
the version's tag ``fgclip.model_uri`` names."""

import json

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.evaluation import RegistryResource
from assets.model_metadata import code_version, manifests_json, mlflow_links
from fgclip_core.redact import redact_uri
from orchestration.automation import follows
from orchestration.model_resources import MLflowResource
from orchestration.refs import EvalRef, ModelRef


class RegistryConfig(Config):
    """Promotion gates (``fgclip_core.promotion.Gates``)."""

    primary_metric: str = Field(default="fgovd-sample/accuracy", description="must beat the champion's")
    min_delta: float = Field(default=0.0, ge=0.0, description="the primary metric must win by more than this")
    minimums: dict[str, float] = Field(default_factory=lambda: {"fgovd-sample/accuracy": 0.05},
                                       description="absolute minimum per metric (the first champion needs these)")
    max_regression: dict[str, float] = Field(
        default_factory=lambda: {"coco-sample/i2t_R@1": 0.1, "sharegpt4v-sample/i2t_R@1": 0.1},
        description="per metric: how far below the champion's value the challenger may fall")
    lower_is_better: list[str] = Field(default_factory=list, description="metrics where smaller is better")

    def gates(self):
        from fgclip_core.promotion import Gates

        return Gates(primary_metric=self.primary_metric, min_delta=self.min_delta, minimums=self.minimums,
                     max_regression=self.max_regression, lower_is_better=self.lower_is_better)


def lineage_tags(context: AssetExecutionContext, model: ModelRef, ev: EvalRef) -> dict[str, str]:
    return {"dagster.run_id": context.run_id, "fgclip.training_dagster_run_id": model.dagster_run_id or "",
            "fgclip.partitions": json.dumps(sorted(model.trained_on)),
            "fgclip.shard_manifests": manifests_json(model.trained_on),
            "fgclip.base_checkpoint_sha256": model.base_checkpoint_sha256 or "",
            "fgclip.model_sha256": model.sha256, "fgclip.model_uri": model.uri,
            "fgclip.benchmarks_sha256": ev.benchmarks_sha256 or "",
            "fgclip.training_run_id": model.mlflow_run_id or "", "fgclip.eval_run_id": ev.mlflow_run_id or "",
            "fgclip.code_version": code_version()}


@asset(group_name="registry", kinds={"mlflow"}, automation_condition=follows("evaluation"),
       description="A registered model version (alias challenger) with the evaluation metrics and the lineage as "
                   "tags, and the gated promotion decision against the current champion (table of every gate).")
def registered_model(context: AssetExecutionContext, config: RegistryConfig, trained_model: ModelRef,
                     evaluation: EvalRef, mlflow: MLflowResource, registry: RegistryResource) -> MaterializeResult:
    from fgclip_core.registry import (
        CHALLENGER,
        CHAMPION,
        champion_version,
        promote_gated,
        record_benchmark_metrics,
        register_checkpoint,
    )

    if evaluation.model_sha256 != trained_model.sha256:
        raise ValueError(f"registered_model: the evaluation measured model {str(evaluation.model_sha256)[:12]}, "
                         f"not the trained model {trained_model.sha256[:12]}: materialise evaluation again")
    if not evaluation.benchmarks_sha256:
        raise ValueError("registered_model: the evaluation names no benchmark set hash")
    gates = config.gates()
    uri = mlflow.uri()
    name = registry.model_name
    tags = lineage_tags(context, trained_model, evaluation)
    # the run lives in an experiment this pipeline made, so its artifacts land in the store's artifact root
    run_id = mlflow.new_run("fgclip-registry", run_name=f"register-{context.run_id[:8]}", tags=tags)
    rv = register_checkpoint(trained_model.uri, name, metrics=evaluation.metrics, tags=tags, tracking_uri=uri,
                             run_id=run_id)
    record_benchmark_metrics(name, rv.version, evaluation.benchmarks_sha256, evaluation.metrics, tracking_uri=uri)
    # the champion's metrics from the evaluation, if it is still the champion (else promote_gated looks them up)
    champ_now = champion_version(name, uri)
    champ_metrics = evaluation.champion_metrics if evaluation.champion_version == champ_now else None
    decision = promote_gated(name, rv.version, evaluation.metrics, gates,
                             benchmarks_sha256=evaluation.benchmarks_sha256, champion_metrics=champ_metrics,
                             tracking_uri=uri)
    champion = champion_version(name, uri)
    context.log.info("%s v%s @%s: %s", name, rv.version, CHALLENGER, decision.decision)
    exp_id = mlflow.experiment_id("fgclip-registry")
    metadata = {
        "model_name": name,
        "version": rv.version,
        "model_uri": rv.model_uri,
        "alias": CHALLENGER,
        "promoted": decision.promoted,
        "decision": decision.decision,
        "gates": MetadataValue.md(decision.table or decision.decision),
        "primary_metric": gates.primary_metric,
        "challenger_value": evaluation.metrics.get(gates.primary_metric, float("nan")),
        "champion_version": decision.champion_version or "",
        f"{CHAMPION}_now": champion or "",
        "partitions": MetadataValue.json(sorted(trained_model.trained_on)),
        "shard_manifests": tags["fgclip.shard_manifests"],
        "base_checkpoint_sha256": tags["fgclip.base_checkpoint_sha256"],
        "benchmarks_sha256": evaluation.benchmarks_sha256,
        "code_version": tags["fgclip.code_version"],
        "mlflow_run_id": rv.run_id,
        "tracking_uri": redact_uri(uri),
        **mlflow_links(uri, experiment_id=exp_id, run_id=rv.run_id, model=(name, rv.version)),
    }
    if champ_metrics and gates.primary_metric in champ_metrics:
        metadata["champion_value"] = champ_metrics[gates.primary_metric]
    return MaterializeResult(metadata=metadata)
