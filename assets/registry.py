"""MLflow registry: the trained model as a new version aliased `challenger`, promoted to `champion`
when its gate metric beats the champion's."""

import json

from dagster import AssetExecutionContext, Config, MaterializeResult, asset
from pydantic import Field

from assets.evaluation import evaluation
from assets.training import trained_model
from orchestration.resources import EVAL, TRAIN_RUN, MLflowResource, WorkspaceResource


class RegistryConfig(Config):
    model_name: str = Field(default="fgclip", description="registered model name")
    gate_metric: str = Field(default="fgovd-sample/accuracy", description="metric compared with the champion's")
    higher_is_better: bool = True
    min_delta: float = Field(default=0.0, ge=0.0, description="the challenger must win by more than this")


@asset(group_name="registry", deps=[trained_model, evaluation], kinds={"mlflow"},
       description="A registered model version (alias challenger) with the evaluation metrics as tags, "
                   "and the promotion decision against the current champion.")
def registered_model(context: AssetExecutionContext, config: RegistryConfig, workspace: WorkspaceResource,
                     mlflow: MLflowResource) -> MaterializeResult:
    from fgclip_core.registry import CHALLENGER, CHAMPION, promote, register_checkpoint

    summary = json.loads(workspace.local_path(EVAL, "metrics.json").read_text())
    metrics = {k: float(v) for k, v in summary["metrics"].items()}
    uri = mlflow.uri()
    # the run lives in an experiment this pipeline made, so its artifacts land in the workspace store
    run_id = mlflow.new_run("fgclip-registry", run_name=f"register-{context.run_id[:8]}",
                            tags={"dagster.run_id": context.run_id})
    rv = register_checkpoint(workspace.local_path(TRAIN_RUN, "export"), config.model_name, metrics=metrics,
                             tags={"dagster.run_id": context.run_id}, tracking_uri=uri, run_id=run_id)
    decision = promote(config.model_name, rv.version, config.gate_metric, higher_is_better=config.higher_is_better,
                       min_delta=config.min_delta, tracking_uri=uri)
    context.log.info("%s v%s @%s; promoted to @%s: %s (%s)", rv.name, rv.version, CHALLENGER, CHAMPION,
                     decision.promoted, decision.reason)
    metadata = {
        "model_name": rv.name,
        "version": rv.version,
        "model_uri": rv.model_uri,
        "alias": CHALLENGER,
        "promoted": decision.promoted,
        "promotion_reason": decision.reason,
        "gate_metric": config.gate_metric,
        "challenger_value": decision.challenger_value,
        "champion_version": decision.champion_version or "",
        "tracking_uri": uri,
        "mlflow_run_id": rv.run_id,
    }
    if decision.champion_value is not None:
        metadata["champion_value"] = decision.champion_value
    return MaterializeResult(metadata=metadata)
