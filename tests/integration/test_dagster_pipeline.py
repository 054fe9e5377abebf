"""Data-side gates of the Dagster pipeline in-process. (The model side - training on every image batch,
evaluation, gated registration, concurrent trainings - is tests/integration/test_dagster_model.py.)"""

import pytest
from dagster import materialize

from orchestration.definitions import make_resources
from orchestration.resources import WorkspaceResource

pytestmark = pytest.mark.integration


def _meta(result, name: str) -> dict:
    (mat,) = result.asset_materializations_for_node(name)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def test_a_failing_quarantine_gate_stops_the_shards(tmp_path):
    """4 of 13 records have a box outside the image: ratio 0.31 > 0.2, so the blocking check fails
    and the shards downstream of it are not built."""
    import json

    from assets.data import training_shards, validated_records
    from fgclip_core.sample import materialize_sample
    from orchestration.checks import quarantine_ratio_below_threshold
    from orchestration.resources import ANNOTATED, RAW

    workspace = WorkspaceResource(base_dir=str(tmp_path / "ws"))
    sample = materialize_sample(workspace.local_path(RAW))
    rows = [r.to_dict() for r in sample.records]
    for row in rows[:4]:
        row["bbox_info"][0]["bbox"] = [0.5, 0.5, 2.0, 2.0]
    chunk = workspace.local_path(ANNOTATED, "records", "chunk-00000.jsonl")
    chunk.parent.mkdir(parents=True)
    chunk.write_text("".join(json.dumps(r) + "\n" for r in rows))

    result = materialize([validated_records, training_shards, quarantine_ratio_below_threshold],
                         resources=make_resources(workspace), raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["quarantine_ratio"].value == pytest.approx(4 / 13)
    assert _meta(result, "validated_records")["kept"] == 9
    assert not result.asset_materializations_for_node("training_shards")
    assert not workspace.local_path("shards", "manifest.json").exists()
