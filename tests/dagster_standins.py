"""Stand-ins for the data side's assets in the model-side Dagster tests: a partitioned ``training_shards``
(same key, partitions ``image_batches``, ``ShardSetRef`` through ``ref_io_manager``), so those tests do not
depend on the per-batch lineage assets.

``real_shards_asset(sample_set)``: shards built with ``fgclip_core`` from the bundled sample, split into
batches (``SPLIT``: batch name -> record indices), each under its own run folder (on an ``s3://`` data URL:
built in a scratch folder and published there, as the model-side assets do).
``fake_shards_asset()``: references only (no files), for automation/schedule tests that never train.
"""

import json
from pathlib import Path

from dagster import AssetExecutionContext, Output, asset

from orchestration.partitions import image_batches
from orchestration.refs import ShardSetRef
from orchestration.versions import OutputStoreResource

SPLIT = {"batch-a": range(0, 7), "batch-b": range(7, 13)}


def real_shards_asset(sample_set):
    @asset(name="training_shards", partitions_def=image_batches, io_manager_key="ref_io_manager")
    def training_shards(context: AssetExecutionContext, output_store: OutputStoreResource) -> Output[ShardSetRef]:
        from fgclip_core.data.config import DataConfig, ShardConfig
        from fgclip_core.data.pipeline import build_shards

        batch = context.partition_key
        with output_store.version(f"training_shards/{batch}", context.run_id) as out:
            rows = [sample_set.records[i].to_dict() for i in SPLIT[batch]]
            ann = Path(out.local, "records.jsonl")
            ann.write_text("".join(json.dumps(r) + "\n" for r in rows))
            shards = out.local / "shards"
            res = build_shards(str(ann), str(sample_set.images_root), str(shards),
                               DataConfig(shards=ShardConfig(samples_per_shard=2)))
            output_store.publish(out, "shards")
            m = res.manifest
            ref = ShardSetRef(uri=out.url_of(shards), sha256=m.manifest_sha256, partition=batch,
                              manifest_uri=out.url_of(shards / "manifest.json"), samples=m.total_samples,
                              shards=m.num_shards, counts={"samples": m.total_samples})
        return Output(ref, metadata={"samples": m.total_samples, "manifest_sha256": m.manifest_sha256})

    return training_shards


def fake_shards_asset():
    @asset(name="training_shards", partitions_def=image_batches, io_manager_key="ref_io_manager")
    def training_shards(context: AssetExecutionContext) -> ShardSetRef:
        key = context.partition_key
        return ShardSetRef(uri=f"/nowhere/{key}", sha256=f"sha-{key}", partition=key,
                           manifest_uri=f"/nowhere/{key}/manifest.json", samples=4, shards=1)

    return training_shards
