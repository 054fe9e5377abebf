"""``python -m tests.integration.dagster_train_run HOME DATA TRACKING_URI STEPS``: materialise ``trained_model``
once against the Dagster instance in HOME (as a run worker would, in its own process) and print
``{"success", "run_id", "export_dir"}`` as the last line. The concurrency test starts two of these at once."""

import json
import sys

from dagster import AssetKey, DagsterInstance, materialize

from assets.training import base_checkpoint, trained_model
from orchestration.definitions import make_resources
from orchestration.model_resources import TrainingResource
from tests.dagster_standins import fake_shards_asset


def main(home: str, data: str, uri: str, steps: int) -> int:
    resources = make_resources(training=TrainingResource(max_steps=steps, nproc=1, save_every=0),
                               tracking_uri=uri, data_url=data)
    with DagsterInstance.from_config(home) as instance:
        # the stand-in only declares the key here: its stored references (real shards) are read
        r = materialize([fake_shards_asset(), base_checkpoint, trained_model], selection=[AssetKey("trained_model")],
                        instance=instance, resources=resources, raise_on_error=False)
    export = ""
    if r.success:
        (mat,) = r.asset_materializations_for_node("trained_model")
        export = mat.metadata["export_dir"].value
    print(json.dumps({"success": r.success, "run_id": r.run_id, "export_dir": export,
                      "failures": [e.message for e in r.all_events if e.is_failure]}))
    return 0 if r.success else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
