"""The raw source on S3 (a loopback moto_server): batches land, are listed with fingerprints, and are
copied into a local versioned folder; the sensor's resource sees them the same way as local ones."""

import pytest

from fgclip_core.annotate.raw_batches import list_batches, snapshot_batch
from fgclip_core.sample.batches import land_sample_batch
from orchestration.data_resources import RawSourceResource

pytestmark = pytest.mark.integration


def test_batches_on_s3(moto_s3, tmp_path):
    source = moto_s3.new_prefix("incoming")
    url = land_sample_batch(source, 1)
    assert url == f"{source}/batch-0001"
    assert land_sample_batch(source, 1) == url  # already there: nothing rewritten
    first = list_batches(source)
    assert list(first) == ["batch-0001"]
    land_sample_batch(source, 2)
    both = RawSourceResource(url=source).batches()
    assert list(both) == ["batch-0001", "batch-0002"] and both["batch-0001"] == first["batch-0001"]
    snap = snapshot_batch(f"{source}/batch-0002", str(tmp_path / "copy"))
    assert (snap.images, snap.metadata_rows, snap.metadata_rejected) == (6, 6, [])
    assert len(list((tmp_path / "copy").iterdir())) == 7
