"""Blocking asset checks: gates a run must pass before the assets downstream of them execute."""

import warnings

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    Config,
    PreviewWarning,
    asset_check,
)
from pydantic import Field

from assets.data import training_shards, validated_records
from orchestration.partitions import image_batches
from orchestration.refs import RecordsRef, ShardSetRef


def _per_batch_check(**kwargs):
    """``asset_check`` partitioned like its asset, so that it reads that batch's reference (partitioned
    checks are a preview feature in Dagster 1.13: its warning is silenced here, once)."""

    def decorate(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PreviewWarning)
            return asset_check(partitions_def=image_batches, **kwargs)(fn)

    return decorate


class QuarantineGateConfig(Config):
    max_quarantine_ratio: float = Field(default=0.2, ge=0.0, le=1.0,
                                        description="fail when more than this share of the batch is quarantined")


def quarantine_gate(ref: RecordsRef, max_ratio: float) -> AssetCheckResult:
    """The batch's images that did not reach the kept records (any stage: decode, captions, boxes,
    negatives, validation) over the batch's images; an empty batch fails."""
    total = ref.counts.get("batch_images", ref.counts.get("in", 0))
    quarantined = ref.counts.get("batch_quarantined", ref.counts.get("quarantined", 0))
    ratio = quarantined / total if total else 1.0
    return AssetCheckResult(
        passed=bool(total) and ratio <= max_ratio, severity=AssetCheckSeverity.ERROR,
        description=None if total else "the batch holds no images",
        metadata={"quarantine_ratio": ratio, "max_quarantine_ratio": max_ratio, "total": total,
                  "quarantined": quarantined, "kept": ref.counts.get("out", 0)})


@_per_batch_check(asset=validated_records, blocking=True,
             description="The share of the batch that was quarantined stays at or below max_quarantine_ratio.")
def quarantine_ratio_below_threshold(context: AssetCheckExecutionContext, config: QuarantineGateConfig,
                                     validated_records: RecordsRef) -> AssetCheckResult:
    return quarantine_gate(validated_records, config.max_quarantine_ratio)


def manifest_gate(ref: ShardSetRef) -> AssetCheckResult:
    """The manifest re-read and every shard re-hashed; the manifest is the one the reference names."""
    from fgclip_core.data.shards import ManifestError, read_manifest, verify_shards

    try:
        manifest = read_manifest(ref.uri)
    except ManifestError as e:
        return AssetCheckResult(passed=False, metadata={"problem": str(e)})
    problems = verify_shards(ref.uri, manifest)
    if manifest.manifest_sha256 != ref.sha256:
        problems.append(f"manifest sha256 {manifest.manifest_sha256} is not the materialised {ref.sha256}")
    return AssetCheckResult(passed=not problems and manifest.total_samples > 0,
                            metadata={"shards": manifest.num_shards, "samples": manifest.total_samples,
                                      "manifest_sha256": manifest.manifest_sha256,
                                      "problems": problems[:20], "problem_count": len(problems)})


@_per_batch_check(asset=training_shards, blocking=True,
             description="manifest.json is intact, is the one materialised, and every listed shard has the "
                         "recorded size and sha256.")
def shards_manifest_verifies(context: AssetCheckExecutionContext, training_shards: ShardSetRef) -> AssetCheckResult:
    return manifest_gate(training_shards)


DATA_CHECKS = [quarantine_ratio_below_threshold, shards_manifest_verifies]


from orchestration.model_checks import MODEL_CHECKS  # noqa: E402

ALL_CHECKS = [*DATA_CHECKS, *MODEL_CHECKS]
