"""Validated records (kept / quarantined with reasons) and the WebDataset training shards."""

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.annotation import annotated_records
from orchestration.resources import ANNOTATED, RAW, SHARDS, VALIDATED, WorkspaceResource


def _images(workspace: WorkspaceResource) -> str:
    return workspace.url(RAW, "images")


@asset(group_name="data", deps=[annotated_records], kinds={"python"},
       description="Every annotated record checked (boxes, negatives, image decode): kept.jsonl + "
                   "quarantine.jsonl with a reason per record.")
def validated_records(context: AssetExecutionContext, workspace: WorkspaceResource) -> MaterializeResult:
    from fgclip_core.data.pipeline import validate_annotations

    out = workspace.url(VALIDATED)
    summary = validate_annotations(workspace.url(ANNOTATED, "records"), _images(workspace), out)
    ratio = summary.quarantined / summary.total if summary.total else 1.0
    context.log.info("validated %d records: %d kept, %d quarantined", summary.total, summary.kept,
                     summary.quarantined)
    return MaterializeResult(metadata={
        "total": summary.total,
        "kept": summary.kept,
        "quarantined": summary.quarantined,
        "quarantine_ratio": ratio,
        "quarantined_by_reason": dict(sorted(summary.by_reason.items())),
        "path": MetadataValue.path(out),
    })


class ShardsConfig(Config):
    samples_per_shard: int = Field(default=4, ge=1)
    store_token_ids: bool = Field(default=True, description="Store every sample's CLIP token ids in the shards "
                                  "(the loader then skips tokenising; any other tokenizer still tokenises)")


@asset(group_name="data", deps=[validated_records], kinds={"python"},
       description="The kept records packed into WebDataset shards with a hashed manifest (written last).")
def training_shards(context: AssetExecutionContext, config: ShardsConfig,
                    workspace: WorkspaceResource) -> MaterializeResult:
    from fgclip_core.data.config import DataConfig, ShardConfig
    from fgclip_core.data.pipeline import KEPT_NAME, build_shards
    from fgclip_core.model.processing import clip_tokenizer

    out = workspace.url(SHARDS)
    cfg = DataConfig(shards=ShardConfig(samples_per_shard=config.samples_per_shard))
    tokenizer = clip_tokenizer() if config.store_token_ids else None
    # each materialisation replaces the last one: beside it, switched by the manifest (written last)
    result = build_shards(workspace.url(VALIDATED, KEPT_NAME), _images(workspace), out, cfg, tokenizer=tokenizer,
                          overwrite=True)
    m = result.manifest
    context.log.info("%d samples in %d shard(s) under %s", m.total_samples, m.num_shards, out)
    return MaterializeResult(metadata={
        "shards": m.num_shards,
        "samples": m.total_samples,
        "bytes": m.total_bytes,
        "size": f"{m.total_bytes / 1e6:.2f} MB",
        "quarantined": result.summary.quarantined,
        "token_ids_stored": m.tokens is not None,
        "manifest_sha256": m.manifest_sha256,
        "path": MetadataValue.path(out),
    })
