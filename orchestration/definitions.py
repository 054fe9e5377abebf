"""The Dagster code location: ``dagster dev -m orchestration.definitions`` (or ``-w workspace.yaml``)."""

from dagster import Definitions, PipesSubprocessClient, define_asset_job

from assets.annotation import annotated_records
from assets.data import training_shards, validated_records
from assets.evaluation import eval_benchmarks, evaluation
from assets.ingest import raw_images
from assets.registry import registered_model
from assets.training import base_checkpoint, trained_model
from orchestration.checks import ALL_CHECKS
from orchestration.resources import MLflowResource, TrainingResource, WorkspaceResource

ALL_ASSETS = [raw_images, annotated_records, validated_records, training_shards, base_checkpoint, trained_model,
              eval_benchmarks, evaluation, registered_model]

fgclip_pipeline_job = define_asset_job(
    "fgclip_pipeline", selection="*",
    description="raw images -> annotate -> validate -> shards -> train -> evaluate -> register/promote")


def make_resources(workspace: WorkspaceResource | None = None, training: TrainingResource | None = None,
                   tracking_uri: str | None = None) -> dict[str, object]:
    ws = workspace or WorkspaceResource()
    return {
        "workspace": ws,
        "mlflow": MLflowResource(workspace=ws, tracking_uri=tracking_uri),
        "training": training or TrainingResource(),
        "pipes_subprocess_client": PipesSubprocessClient(),
    }


defs = Definitions(assets=ALL_ASSETS, asset_checks=ALL_CHECKS, resources=make_resources(),
                   jobs=[fgclip_pipeline_job])
