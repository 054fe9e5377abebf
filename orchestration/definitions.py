"""The Dagster code location: ``dagster dev -m orchestration.definitions``, ``dg dev`` (``[tool.dg]``).

Kept as lists per side so each half stays easy to change: the data side (per image batch: assets,
gates, ``annotate_batch``, the raw-source sensor) and the model side (unpartitioned: training,
evaluation, registry).
"""

from dagster import AssetSelection, Definitions, PipesSubprocessClient, define_asset_job

from assets.evaluation import eval_benchmarks, evaluation
from assets.registry import registered_model
from assets.training import base_checkpoint, trained_model
from orchestration.checks import DATA_CHECKS, MODEL_CHECKS
from orchestration.data_resources import AnnotationResource, DataStoreResource, RawSourceResource
from orchestration.refs import RefIOManager
from orchestration.resources import MLflowResource, TrainingResource, WorkspaceResource
from orchestration.sensors import DATA_ASSETS, annotate_batch_job, raw_batches_sensor

# -- data side (per image batch) ----------------------------------------------------------------
DATA_JOBS = [annotate_batch_job]
DATA_SENSORS = [raw_batches_sensor]


def data_resources(raw: RawSourceResource | None = None, data: DataStoreResource | None = None,
                   annotation: AnnotationResource | None = None) -> dict[str, object]:
    store = data or DataStoreResource()
    return {
        "raw_source": raw or RawSourceResource(),
        "data": store,
        "annotation": annotation or AnnotationResource(),
        "ref_io_manager": RefIOManager(base_url=store.resolved_url()),
    }


# -- model side (unpartitioned) -------------------------------------------------------------------
MODEL_ASSETS = [base_checkpoint, trained_model, eval_benchmarks, evaluation, registered_model]
MODEL_JOBS = [define_asset_job(
    "fgclip_pipeline", selection=AssetSelection.assets(*MODEL_ASSETS),
    description="train -> evaluate -> register/promote on the shards of the materialised batches")]
MODEL_SENSORS: list = []
MODEL_SCHEDULES: list = []

ALL_ASSETS = [*DATA_ASSETS, *MODEL_ASSETS]
ALL_CHECKS = [*DATA_CHECKS, *MODEL_CHECKS]


def make_resources(workspace: WorkspaceResource | None = None, training: TrainingResource | None = None,
                   tracking_uri: str | None = None, **data_kwargs) -> dict[str, object]:
    ws = workspace or WorkspaceResource()
    return {
        **data_resources(**data_kwargs),
        "workspace": ws,
        "mlflow": MLflowResource(workspace=ws, tracking_uri=tracking_uri),
        "training": training or TrainingResource(),
        "pipes_subprocess_client": PipesSubprocessClient(),
    }


defs = Definitions(assets=ALL_ASSETS, asset_checks=ALL_CHECKS, resources=make_resources(),
                   jobs=[*DATA_JOBS, *MODEL_JOBS], sensors=[*DATA_SENSORS, *MODEL_SENSORS],
                   schedules=MODEL_SCHEDULES)

__all__ = ["ALL_ASSETS", "ALL_CHECKS", "DATA_ASSETS", "MODEL_ASSETS", "defs", "make_resources"]
