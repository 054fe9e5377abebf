"""Issue 14, section 3 on an object store: an image root ``s3://bucket/prefix`` never reads a key
outside its prefix (``..``, absolute keys, another bucket, a full URL), checks the object's size
before reading it, and keeps every good record (real S3-compatible server on loopback)."""

from __future__ import annotations

import json

import boto3
import pytest

from fgclip_core import storage
from fgclip_core.data.config import DataConfig, ValidationConfig
from fgclip_core.data.errors import Reason, RecordError
from fgclip_core.data.paths import ImageRoot
from fgclip_core.data.pipeline import validate_annotations
from tests.fixtures.data import image_bytes, make_record, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
GOOD = 13


@pytest.fixture(scope="module")
def s3_tree(moto_s3):
    client = boto3.client("s3", endpoint_url=moto_s3.endpoint)
    other = "fgclip-other"
    client.create_bucket(Bucket=other)
    root = moto_s3.new_prefix("images")
    prefix = root.split("/", 3)[3]
    for i in range(GOOD):
        client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/img{i:03d}.jpg", Body=image_bytes(seed=i))
    secret = image_bytes(seed=99)   # valid images outside the root: must never be read through it
    client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}-secret/secret.jpg", Body=secret)
    client.put_object(Bucket=moto_s3.bucket, Key="secret.jpg", Body=secret)
    client.put_object(Bucket=other, Key="secret.jpg", Body=secret)
    client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/big.jpg", Body=image_bytes(seed=3) + b"\0" * 50_000)
    client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/folder/inside.jpg", Body=image_bytes(seed=4))
    return root, prefix, other


def test_s3_root_refuses_keys_outside_its_prefix(s3_tree, moto_s3, tmp_path):
    root, prefix, other = s3_tree
    leaf = prefix.rsplit("/", 1)[-1]
    bad = {
        "dotdot": (f"../{leaf}-secret/secret.jpg", "image_outside_root"),
        "dotdot_bucket_top": ("../" * (prefix.count("/") + 1) + "secret.jpg", "image_outside_root"),
        "absolute": (f"/{moto_s3.bucket}/secret.jpg", "image_outside_root"),
        "other_bucket": (f"s3://{other}/secret.jpg", "image_outside_root"),
        "folder": ("folder", "image_not_regular_file"),
        "big": ("big.jpg", "image_too_large"),
        "missing": ("gone.jpg", "image_missing"),
    }
    recs = [make_record(f"img{i:03d}", f"img{i:03d}.jpg") for i in range(GOOD)]
    recs += [make_record(rid, f_path) for rid, (f_path, _) in bad.items()]
    ann = write_jsonl(tmp_path / "ann.jsonl", recs)
    limit = max(len(image_bytes(seed=i)) for i in range(GOOD)) + 100   # the good images fit; big.jpg does not
    cfg = DataConfig(validation=ValidationConfig(max_image_bytes=limit))
    out = tmp_path / "v"
    summary = validate_annotations(str(ann), root, str(out), cfg)
    q = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert {e["id"]: e["reason"] for e in q} == {rid: reason for rid, (_, reason) in bad.items()}
    assert summary.kept == GOOD


def test_s3_size_is_checked_before_the_read(s3_tree, monkeypatch):
    root, _, _ = s3_tree
    r = ImageRoot(root, 100)
    opened = []
    fs = storage.filesystem(root)[0]
    monkeypatch.setattr(fs, "open", lambda *a, **k: opened.append(a) or pytest.fail("opened an object over the limit"))
    r._fs = fs
    with pytest.raises(RecordError) as e:
        r.read("img000.jpg")
    assert e.value.reason == Reason.IMAGE_TOO_LARGE and not opened
