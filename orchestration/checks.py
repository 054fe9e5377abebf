"""Blocking asset checks: gates a run must pass before the assets downstream of them execute."""

import json

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, Config, asset_check
from pydantic import Field

from assets.data import training_shards, validated_records
from orchestration.resources import SHARDS, VALIDATED, WorkspaceResource


class QuarantineGateConfig(Config):
    max_quarantine_ratio: float = Field(default=0.2, ge=0.0, le=1.0,
                                        description="fail when more than this share of the records is quarantined")


@asset_check(asset=validated_records, blocking=True,
             description="The share of quarantined records stays at or below max_quarantine_ratio.")
def quarantine_ratio_below_threshold(context: AssetCheckExecutionContext, config: QuarantineGateConfig,
                                     workspace: WorkspaceResource) -> AssetCheckResult:
    from fgclip_core.data.pipeline import SUMMARY_NAME
    from fgclip_core.storage import filesystem

    fs, path = filesystem(workspace.url(VALIDATED, SUMMARY_NAME))
    with fs.open(path, "rt") as f:
        s = json.load(f)
    ratio = s["quarantined"] / s["total"] if s["total"] else 1.0
    return AssetCheckResult(
        passed=bool(s["total"]) and ratio <= config.max_quarantine_ratio, severity=AssetCheckSeverity.ERROR,
        metadata={"quarantine_ratio": ratio, "max_quarantine_ratio": config.max_quarantine_ratio,
                  "total": s["total"], "quarantined": s["quarantined"]})


@asset_check(asset=training_shards, blocking=True,
             description="manifest.json is intact and every listed shard has the recorded size and sha256.")
def shards_manifest_verifies(context: AssetCheckExecutionContext, workspace: WorkspaceResource) -> AssetCheckResult:
    from fgclip_core.data.shards import ManifestError, read_manifest, verify_shards

    url = workspace.url(SHARDS)
    try:
        manifest = read_manifest(url)
    except ManifestError as e:
        return AssetCheckResult(passed=False, metadata={"problem": str(e)})
    problems = verify_shards(url, manifest)
    return AssetCheckResult(passed=not problems and manifest.total_samples > 0,
                            metadata={"shards": manifest.num_shards, "samples": manifest.total_samples,
                                      "problems": problems[:20], "problem_count": len(problems)})


ALL_CHECKS = [quarantine_ratio_below_threshold, shards_manifest_verifies]
