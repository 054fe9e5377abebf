"""The data side's automation: job ``annotate_batch`` (raw_images .. training_shards of one batch) and
the sensor that turns every new batch of the raw source into a partition and a run of that job.

The cursor maps batch -> fingerprint (file names and sizes). A tick adds a partition for each batch
that is neither a partition yet nor in the cursor, and requests one run per new batch; a batch whose
files changed since the cursor saw it is requested again (its partition is re-materialised, nothing
else). Run keys are ``<batch>:<fingerprint>``, so the same state of a batch never runs twice.
"""

from __future__ import annotations

import json

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    in_process_executor,
    sensor,
)

from assets.annotation import hard_negatives, long_captions, region_boxes
from assets.data import training_shards, validated_records
from assets.ingest import raw_images
from orchestration import settings
from orchestration.data_resources import RawSourceResource
from orchestration.partitions import image_batches

DATA_ASSETS = [raw_images, long_captions, region_boxes, hard_negatives, validated_records, training_shards]

# in one process: the stages of a batch run one after the other anyway, and a process per step costs
# seconds of imports each (batches still run in parallel, as separate runs, up to the run queue's limit)
annotate_batch_job = define_asset_job(
    "annotate_batch", selection=AssetSelection.assets(*DATA_ASSETS), partitions_def=image_batches,
    executor_def=in_process_executor,
    description="One image batch: raw images -> long captions -> region boxes -> hard negatives -> "
                "validated records -> training shards (with the quarantine and manifest gates).")


def plan_tick(current: dict[str, str], partitions: set[str], cursor: str | None
              ) -> tuple[list[str], list[str], str]:
    """(batches to add as partitions, batches to run, the new cursor) for one look at the source."""
    seen: dict[str, str] = json.loads(cursor) if cursor else {}
    new = [b for b in current if b not in partitions and b not in seen]
    changed = [b for b in current if b in seen and seen[b] != current[b]]
    return new, [*new, *changed], json.dumps({**seen, **current}, sort_keys=True)


@sensor(job=annotate_batch_job, minimum_interval_seconds=settings.sensor_interval_s(),
        default_status=DefaultSensorStatus.RUNNING,
        description="Adds an image_batches partition per new batch in the raw source and runs annotate_batch "
                    "for it (and again for a batch whose files changed).")
def raw_batches_sensor(context: SensorEvaluationContext, raw_source: RawSourceResource):
    current = raw_source.batches()
    partitions = set(context.instance.get_dynamic_partitions(image_batches.name))
    new, to_run, cursor = plan_tick(current, partitions, context.cursor)
    if not to_run and cursor == (context.cursor or "{}"):
        return SkipReason(f"{raw_source.resolved_url()}: no new or changed batch ({len(current)} known)")
    if new:
        context.log.info("new batches: %s", ", ".join(new))
    return SensorResult(
        run_requests=[RunRequest(partition_key=b, run_key=f"{b}:{current[b]}", tags={"fgclip/batch": b})
                      for b in to_run],
        dynamic_partitions_requests=[image_batches.build_add_request(new)] if new else [],
        cursor=cursor)
