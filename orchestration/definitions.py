"""The Dagster code location: ``dagster dev -m orchestration.definitions`` (or ``-w workspace.yaml``).

Kept as lists so the data side (per-batch lineage stages, sensor) and the model side (training,
evaluation, registry, retraining) each add their own parts.
"""

from dagster import Definitions, PipesSubprocessClient

from assets.annotation import annotated_records
from assets.data import training_shards, validated_records
from assets.evaluation import RegistryResource, eval_benchmarks, evaluation
from assets.ingest import raw_images
from assets.registry import registered_model
from assets.training import base_checkpoint, trained_model
from orchestration import settings
from orchestration.checks import ALL_CHECKS
from orchestration.model_checks import MODEL_CHECKS
from orchestration.model_jobs import MODEL_JOBS, MODEL_SCHEDULES, fgclip_pipeline_job
from orchestration.model_resources import MLflowResource, TrainingResource
from orchestration.refs import RefIOManager
from orchestration.resources import WorkspaceResource
from orchestration.versions import OutputStoreResource

DATA_ASSETS = [raw_images, annotated_records, validated_records, training_shards]
MODEL_ASSETS = [base_checkpoint, trained_model, eval_benchmarks, evaluation, registered_model]
ALL_ASSETS = [*DATA_ASSETS, *MODEL_ASSETS]
DATA_CHECKS = ALL_CHECKS
CHECKS = [*DATA_CHECKS, *MODEL_CHECKS]
JOBS = [fgclip_pipeline_job, *MODEL_JOBS]
SCHEDULES = [*MODEL_SCHEDULES]
SENSORS: list = []


def model_resources(training: TrainingResource | None = None, tracking_uri: str | None = None,
                    data_url: str | None = None, model_name: str = "fgclip") -> dict[str, object]:
    """The model side's resources; ``data_url`` (default ``settings.data_url()``) holds the versioned
    outputs and the references (``ref_io_manager``, shared with the data side)."""
    data = data_url or settings.data_url()
    return {
        "ref_io_manager": RefIOManager(base_url=data),
        "output_store": OutputStoreResource(root=data),
        "mlflow": MLflowResource(tracking_uri=tracking_uri),
        "registry": RegistryResource(model_name=model_name),
        "training": training or TrainingResource(),
        "pipes_subprocess_client": PipesSubprocessClient(),
    }


def make_resources(workspace: WorkspaceResource | None = None, training: TrainingResource | None = None,
                   tracking_uri: str | None = None, data_url: str | None = None,
                   model_name: str = "fgclip") -> dict[str, object]:
    return {"workspace": workspace or WorkspaceResource(),
            **model_resources(training, tracking_uri, data_url, model_name)}


defs = Definitions(assets=ALL_ASSETS, asset_checks=CHECKS, resources=make_resources(), jobs=JOBS,
                   schedules=SCHEDULES, sensors=SENSORS)
