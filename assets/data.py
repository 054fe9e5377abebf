"""Validated records (kept / quarantined with a reason each) and the WebDataset training shards of one batch."""

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from orchestration.data_resources import DataStoreResource
from orchestration.partitions import image_batches
from orchestration.refs import RecordsRef, ShardSetRef
from orchestration.stage_metadata import counts_metadata, location, preview_markdown, read_jsonl_rows


def _sha256(url: str) -> str:
    import hashlib

    from fgclip_core import storage

    fs, path = storage.filesystem(url)
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@asset(group_name="data", kinds={"python"}, partitions_def=image_batches, io_manager_key="ref_io_manager",
       description="Every annotated record checked (boxes, negatives, image decode): kept.jsonl + "
                   "quarantine.jsonl with a reason per record. Gate: the batch's quarantine ratio.")
def validated_records(context: AssetExecutionContext, hard_negatives: RecordsRef,
                      data: DataStoreResource) -> MaterializeResult:
    from fgclip_core import storage
    from fgclip_core.data.io import read_jsonl
    from fgclip_core.data.pipeline import KEPT_NAME, QUARANTINE_NAME, validate_annotations

    batch = context.partition_key
    with data.writing("validated_records", batch, context.run_id) as out:
        summary = validate_annotations(storage.join(hard_negatives.uri, "records"), hard_negatives.images_uri, out)
    batch_images = hard_negatives.counts.get("batch_images", summary.total)
    counts = {"in": summary.total, "out": summary.kept, "quarantined": summary.quarantined,
              "batch_images": batch_images, "batch_quarantined": max(0, batch_images - summary.kept)}
    kept_url = storage.join(out, KEPT_NAME)
    ref = RecordsRef(uri=out, sha256=_sha256(kept_url), partition=batch, images_uri=hard_negatives.images_uri,
                     counts=counts)
    removed = data.prune("validated_records", batch, out)
    ratio = counts["batch_quarantined"] / batch_images if batch_images else 1.0
    context.log.info("validated %s: %d records, %d kept, %d quarantined; batch quarantine ratio %.3f",
                     batch, summary.total, summary.kept, summary.quarantined, ratio)
    records = [r for r, _ in zip(read_jsonl(kept_url), range(20), strict=False)]
    preview = preview_markdown(records, hard_negatives.images_uri,
                               read_jsonl_rows(storage.join(out, QUARANTINE_NAME)), f"validated, batch {batch}")
    return MaterializeResult(value=ref, metadata={
        **counts_metadata(ref, dict(summary.by_reason)), "batch_quarantine_ratio": ratio,
        "old_versions_removed": len(removed), "preview": preview,
    })


class ShardsConfig(Config):
    samples_per_shard: int = Field(default=4, ge=1)
    store_token_ids: bool = Field(default=True, description="Store every sample's CLIP token ids in the shards "
                                  "(the loader then skips tokenising; any other tokenizer still tokenises)")


@asset(group_name="data", kinds={"python"}, partitions_def=image_batches, io_manager_key="ref_io_manager",
       description="The batch's kept records packed into WebDataset shards with a hashed manifest (written "
                   "last); its sha256 is what training and the MLflow tags name.")
def training_shards(context: AssetExecutionContext, config: ShardsConfig, validated_records: RecordsRef,
                    data: DataStoreResource) -> MaterializeResult:
    from fgclip_core import storage
    from fgclip_core.data.config import DataConfig, ShardConfig
    from fgclip_core.data.pipeline import KEPT_NAME, NothingUsableError, build_shards
    from fgclip_core.model.processing import clip_tokenizer

    batch = context.partition_key
    cfg = DataConfig(shards=ShardConfig(samples_per_shard=config.samples_per_shard))
    tokenizer = clip_tokenizer() if config.store_token_ids else None
    try:
        with data.writing("training_shards", batch, context.run_id) as out:
            result = build_shards(storage.join(validated_records.uri, KEPT_NAME), validated_records.images_uri,
                                  out, cfg, tokenizer=tokenizer)
    except NothingUsableError as e:
        raise Failure(description=f"batch {batch}: {e}", allow_retries=False) from None
    m = result.manifest
    ref = ShardSetRef(uri=out, sha256=m.manifest_sha256, manifest_uri=storage.join(out, "manifest.json"),
                      samples=m.total_samples, shards=m.num_shards, partition=batch,
                      counts={"in": result.summary.total, "out": m.total_samples, "quarantined": result.summary.quarantined,
                              "samples": m.total_samples, "shards": m.num_shards, "bytes": m.total_bytes})
    removed = data.prune("training_shards", batch, out)
    context.log.info("%s: %d samples in %d shard(s), manifest %s -> %s", batch, m.total_samples, m.num_shards,
                     m.manifest_sha256[:12], out)
    return MaterializeResult(value=ref, metadata={
        **ref.counts, "quarantined_by_reason": MetadataValue.json(dict(sorted(result.summary.by_reason.items()))),
        "size": f"{m.total_bytes / 1e6:.2f} MB", "token_ids_stored": m.tokens is not None,
        "manifest_sha256": m.manifest_sha256, "manifest": location(ref.manifest_uri), "uri": location(out),
        "old_versions_removed": len(removed),
        "quarantine": preview_markdown([], validated_records.images_uri,
                                       read_jsonl_rows(storage.join(out, "quarantine.jsonl")),
                                       f"shards, batch {batch}") if result.summary.quarantined else "none",
    })
