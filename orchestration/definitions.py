"""The Dagster code location: ``dagster dev -m orchestration.definitions``, ``dg dev`` (``[tool.dg]``).

Kept as lists per side so each half stays easy to change: the data side (per image batch: assets,
gates, ``annotate_batch``, the raw-source sensor) and the model side (unpartitioned: training,
evaluation, registry, retraining).
"""

from dagster import Definitions, PipesSubprocessClient

from assets.evaluation import RegistryResource, eval_benchmarks, evaluation
from assets.registry import registered_model
from assets.training import base_checkpoint, trained_model
from orchestration.checks import DATA_CHECKS
from orchestration.data_resources import AnnotationResource, DataStoreResource, RawSourceResource
from orchestration.model_checks import MODEL_CHECKS
from orchestration.model_jobs import MODEL_JOBS, MODEL_SCHEDULES, fgclip_pipeline_job
from orchestration.model_resources import MLflowResource, TrainingResource
from orchestration.refs import RefIOManager
from orchestration.sensors import DATA_ASSETS, annotate_batch_job, raw_batches_sensor
from orchestration.versions import OutputStoreResource

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
MODEL_SENSORS: list = []


def model_resources(data_url: str, training: TrainingResource | None = None, tracking_uri: str | None = None,
                    model_name: str = "fgclip") -> dict[str, object]:
    return {
        "output_store": OutputStoreResource(root=data_url),
        "mlflow": MLflowResource(tracking_uri=tracking_uri),
        "registry": RegistryResource(model_name=model_name),
        "training": training or TrainingResource(),
        "pipes_subprocess_client": PipesSubprocessClient(),
    }


ALL_ASSETS = [*DATA_ASSETS, *MODEL_ASSETS]
ALL_CHECKS = [*DATA_CHECKS, *MODEL_CHECKS]
JOBS = [*DATA_JOBS, fgclip_pipeline_job, *MODEL_JOBS]
SCHEDULES = [*MODEL_SCHEDULES]
SENSORS = [*DATA_SENSORS, *MODEL_SENSORS]


def make_resources(training: TrainingResource | None = None,
                   tracking_uri: str | None = None, data_url: str | None = None, model_name: str = "fgclip",
                   **data_kwargs) -> dict[str, object]:
    """Every resource. ``data_url``: a DataStoreResource at that URL (the default: FGCLIP_DATA_URL or .fgclip/data)."""
    if data_url is not None:
        data_kwargs.setdefault("data", DataStoreResource(base_url=data_url))
    data = data_resources(**data_kwargs)
    return {**data, **model_resources(data["ref_io_manager"].base_url, training, tracking_uri, model_name)}


defs = Definitions(assets=ALL_ASSETS, asset_checks=ALL_CHECKS, resources=make_resources(), jobs=JOBS,
                   sensors=SENSORS, schedules=SCHEDULES)

__all__ = ["ALL_ASSETS", "ALL_CHECKS", "DATA_ASSETS", "MODEL_ASSETS", "defs", "make_resources"]
