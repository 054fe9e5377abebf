"""Shard checks in the loader and the manifest (issue 14, section 6): the hash covers every byte on
both tar readers, manifest shard names cannot leave the folder, and ``data.on_corrupt_shard`` is a
typed training setting whose default is ``fail``."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest
import torch

from fgclip_core.config import ConfigError
from fgclip_core.data.config import ShardCheckConfig
from fgclip_core.data.loader import FineHARDLoader
from fgclip_core.data.shard_check import ShardCheck, ShardCorrupt
from fgclip_core.data.shards import ManifestError, ShardInfo, read_manifest, write_manifest
from fgclip_core.data.tar_read import _tar_members, iter_tar_samples
from fgclip_core.train.config import resolve_config
from tests.fixtures.data import image_bytes, make_record
from tests.unit.test_data_loader import PROC, TOK, _cfg


def _tar(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sample(key: str, seed: int = 0) -> list[tuple[str, bytes]]:
    return [(f"{key}.jpg", image_bytes(seed=seed)), (f"{key}.json", json.dumps(make_record(key, "x.jpg")).encode())]


def _info(name: str, data: bytes, count: int = 1) -> ShardInfo:
    return ShardInfo(name=name, count=count, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


LONG = "k" * 120   # a name longer than ustar's 100 bytes: a pax header, which the fast reader hands to tarfile


@pytest.mark.parametrize("fmt", ["ustar", "pax"])
@pytest.mark.parametrize("buffered", [False, True])
def test_hash_covers_every_byte_on_both_readers(tmp_path, fmt, buffered):
    members = _sample("a") + (_sample(LONG, 1) if fmt == "pax" else _sample("b", 1))
    data = _tar(members, tarfile.PAX_FORMAT if fmt == "pax" else tarfile.USTAR_FORMAT)
    p = tmp_path / "shard-000000.tar"
    p.write_bytes(data)
    import fsspec

    fs = fsspec.filesystem("file")
    good = ShardCheck(str(p), _info(p.name, data), buffered=buffered)
    assert [n for n, _ in _tar_members(fs, str(p), good)] == [n for n, _ in members]

    # one byte changed in the end blocks, which no reader returns as data: the size is right, the hash is not
    bad = bytearray(data)
    bad[-1] ^= 1
    p.write_bytes(bytes(bad))
    with pytest.raises(ShardCorrupt, match="hash mismatch") as err:
        list(_tar_members(fs, str(p), ShardCheck(str(p), _info(p.name, data), buffered=buffered)))
    assert err.value.reason == "hash_mismatch" and str(p) in str(err.value)


def test_buffered_check_yields_nothing_of_a_bad_shard_and_streaming_finds_it_at_the_end(tmp_path):
    data = _tar(_sample("a") + _sample("b", 1))
    p = tmp_path / "shard-000000.tar"
    bad = bytearray(data)
    bad[-1] ^= 1
    p.write_bytes(bytes(bad))
    got = []
    with pytest.raises(ShardCorrupt):
        for s in iter_tar_samples(str(p), check=ShardCheck(str(p), _info(p.name, data), buffered=True)):
            got.append(s["__key__"])
    assert got == []
    with pytest.raises(ShardCorrupt):
        for s in iter_tar_samples(str(p), check=ShardCheck(str(p), _info(p.name, data), buffered=False)):
            got.append(s["__key__"])
    assert got == ["a"]   # documented: streaming knows only at the shard's end (all but its last sample are out)


@pytest.mark.parametrize("name", ["../shard-000000.tar", "/etc/passwd", "shard-000000.tar\n", "sub/shard-000000.tar",
                                  "shard-000000-0123456789abcdeg.tar", "x.tar"])
def test_manifest_names_cannot_leave_the_folder(tmp_path, name):
    write_manifest(str(tmp_path), [_info("shard-000000.tar", b"")], 1)
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["shards"][0]["name"] = name
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="malformed manifest"):
        read_manifest(str(tmp_path))


def test_manifest_name_must_carry_its_own_hash_and_be_listed_once(tmp_path):
    sha = "ab" * 32
    with pytest.raises(ValueError, match="named for another sha256"):
        ShardInfo(name="shard-000000-0123456789abcdef.tar", count=1, bytes=1, sha256=sha)
    ok = ShardInfo(name=f"shard-000000-{sha[:16]}.tar", count=1, bytes=1, sha256=sha)
    with pytest.raises(ValueError, match="listed twice"):
        write_manifest(str(tmp_path), [ok, ok], 1)


def test_on_corrupt_shard_is_a_typed_training_setting():
    assert resolve_config(recipe="tiny-cpu-stage2").data.on_corrupt_shard == "fail"
    assert ShardCheckConfig().on_corrupt_shard == "fail"
    cfg = resolve_config(recipe="tiny-cpu-stage2", overrides=["data.on_corrupt_shard=skip"])
    assert cfg.data.on_corrupt_shard == "skip"
    with pytest.raises(ConfigError, match="on_corrupt_shard"):
        resolve_config(recipe="tiny-cpu-stage2", overrides=["data.on_corrupt_shard=ignore"])


def test_the_training_data_source_hands_the_setting_to_the_loader(monkeypatch, tmp_path):
    import fgclip_core.data.loader as loader_mod
    from fgclip_core.train.data_source import open_batches
    from fgclip_core.train.launch import DistInfo

    seen = {}
    monkeypatch.setattr(loader_mod, "build_loader", lambda *a, **kw: seen.update(kw) or object())
    cfg = resolve_config(recipe="tiny-cpu-stage2", overrides=[f"data.url={tmp_path}", "data.on_corrupt_shard=skip"])
    open_batches(cfg, DistInfo(0, 1, 0, torch.device("cpu")), None, tmp_path)
    assert seen["shard_check"].on_corrupt_shard == "skip"


def test_resume_is_unchanged_by_the_check(tmp_path):
    """A loader resumed from a state reads on exactly like the uninterrupted one (checks on, both modes)."""
    from tests.loader_helpers import take
    from tests.unit.test_data_loader import _same

    shards = []
    for i in range(4):
        data = _tar(_sample(f"s{2 * i}", 2 * i) + _sample(f"s{2 * i + 1}", 2 * i + 1))
        name = f"shard-{i:06d}.tar"
        (tmp_path / name).write_bytes(data)
        shards.append(_info(name, data, count=2))
    write_manifest(str(tmp_path), shards, 2)
    for mode in ("fail", "skip"):
        check = ShardCheckConfig(on_corrupt_shard=mode)
        cfg = _cfg(resume_block_shards=1, shuffle_buffer=2, batch_size=1)
        full = take(FineHARDLoader(str(tmp_path), TOK, PROC, cfg, shard_check=check), 7)
        first = FineHARDLoader(str(tmp_path), TOK, PROC, cfg, shard_check=check)
        take(first, 3)
        resumed = FineHARDLoader(str(tmp_path), TOK, PROC, cfg, shard_check=check)
        resumed.load_state_dict(first.state_dict())
        assert _same(take(resumed, 4), full[3:])

