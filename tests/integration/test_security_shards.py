"""Issue 14, section 6: shards that readers can trust.

- A rebuild killed (SIGKILL) mid-way leaves the reader exactly the old build (locally and on S3).
- A folder holding a build (or foreign files) is refused without ``--overwrite``.
- The loader checks every shard against the manifest: a shard swapped for a copy of another valid
  one, a truncated shard and a deleted shard stop training with one line naming the shard and the
  reason (``data.on_corrupt_shard=fail``, the default), or are skipped, logged once and counted
  (``skip``), their samples never used.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fgclip_core import storage
from fgclip_core.cli import cli
from fgclip_core.data.config import DataConfig, LoaderConfig, ShardCheckConfig, ShardConfig
from fgclip_core.data.loader import FineHARDLoader
from fgclip_core.data.pipeline import TargetNotEmptyError, build_shards
from fgclip_core.data.shard_check import CorruptShardError
from fgclip_core.data.shards import read_manifest, shard_urls, verify_shards
from fgclip_core.data.tar_read import iter_tar_samples
from tests.fixtures.data import make_record, run_killed_build, write_images, write_jsonl
from tests.integration.train_run import run_train
from tests.unit.test_data_loader import PROC, TOK

pytestmark = pytest.mark.integration
SPP = 2


def _cfg() -> DataConfig:
    return DataConfig(shards=ShardConfig(samples_per_shard=SPP))


def _inputs(root: Path, prefix: str, n: int) -> tuple[Path, Path]:
    names = write_images(root / "images", n, prefix=prefix)
    ann = write_jsonl(root / "ann.jsonl", [make_record(x.split(".")[0], x) for x in names])
    return ann, root / "images"


def _keys_read(url: str, on_corrupt_shard: str = "fail", workers: int = 0) -> tuple[list[str], FineHARDLoader]:
    loader = FineHARDLoader(url, TOK, PROC, LoaderConfig(batch_size=1, mode="shuffle", num_workers=workers,
                                                         drop_last=False, equalize_ranks=False),
                            shard_check=ShardCheckConfig(on_corrupt_shard=on_corrupt_shard))
    return sorted(k for b in loader for k in b.keys), loader


def _killed_rebuild(ann: Path, img: Path, out: str, kill_after_members: int) -> None:
    """``fgclip data build-shards --overwrite`` in a subprocess, SIGKILLed after that many tar members."""
    run_killed_build(f"""
        from fgclip_core.cli import cli
        cli.main(["data", "build-shards", "--annotations", {str(ann)!r}, "--images", {str(img)!r},
                  "--out", {out!r}, "--samples-per-shard", "{SPP}", "--overwrite"], standalone_mode=False)
    """, kill_after_members, timeout=300)


def _names(url: str) -> list[str]:
    fs, path = storage.filesystem(url)
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))


def _check_killed_rebuild_keeps_a(tmp_path: Path, out: str) -> None:
    ann_a, img_a = _inputs(tmp_path / "a", "a", 6)
    ann_b, img_b = _inputs(tmp_path / "b", "b", 5)
    build_shards(str(ann_a), str(img_a), out, _cfg())
    before = read_manifest(out)
    keys_a = sorted(f"a{i:03d}" for i in range(6))

    _killed_rebuild(ann_b, img_b, out, kill_after_members=2 * SPP + 1)   # B's first shard done, second begun
    names = _names(out)
    listed = [s.name for s in before.shards]
    b_shards = [n for n in names if n.startswith("shard-") and n not in listed]
    assert b_shards, names   # B's complete shard is there, under a fresh name ...
    assert read_manifest(out) == before and verify_shards(out) == []   # ... but the manifest is still A's
    assert _keys_read(out)[0] == keys_a   # the reader sees exactly A: no B sample, nothing of A missing

    # the rerun completes B; then only B's shards are left
    r = CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann_b), "--images", str(img_b),
                                 "--out", out, "--samples-per-shard", str(SPP), "--overwrite"])
    assert r.exit_code == 0, r.output
    after = read_manifest(out)
    assert sorted(n for n in _names(out) if n.startswith("shard-")) == sorted(s.name for s in after.shards)
    assert not [n for n in _names(out) if n.startswith("_tmp.")]
    assert _keys_read(out)[0] == sorted(f"b{i:03d}" for i in range(5))


def test_killed_rebuild_leaves_the_old_build_local(tmp_path):
    _check_killed_rebuild_keeps_a(tmp_path, str(tmp_path / "shards"))


def test_killed_rebuild_leaves_the_old_build_on_s3(tmp_path, moto_s3):
    _check_killed_rebuild_keeps_a(tmp_path, moto_s3.new_prefix("rebuild"))


def test_non_empty_target_is_refused_without_overwrite(tmp_path):
    ann, img = _inputs(tmp_path, "img", 4)
    out = tmp_path / "shards"
    build_shards(str(ann), str(img), str(out), _cfg())
    before = read_manifest(str(out))
    other_ann, other_img = _inputs(tmp_path / "other", "o", 3)
    args = ["data", "build-shards", "--annotations", str(other_ann), "--images", str(other_img), "--out", str(out)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "already holds a shard build" in r.output and "--overwrite" in r.output, r.output
    assert str(out) in r.output and "Traceback" not in r.output
    assert read_manifest(str(out)) == before and verify_shards(str(out)) == []   # nothing touched
    with pytest.raises(TargetNotEmptyError, match="already holds a shard build"):
        build_shards(str(other_ann), str(other_img), str(out), _cfg())

    # a folder with files that are not ours: refused; with --overwrite built beside them, left alone
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    r = CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann), "--images", str(img),
                                 "--out", str(foreign)])
    assert r.exit_code != 0 and "is not empty (notes.txt)" in r.output, r.output
    r = CliRunner().invoke(cli, ["data", "build-shards", "--annotations", str(ann), "--images", str(img),
                                 "--out", str(foreign), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert (foreign / "notes.txt").read_text() == "keep me" and read_manifest(str(foreign)).total_samples == 4


# ---- the loader checks what it reads -------------------------------------------------------------------

@pytest.fixture
def built(tmp_path):
    """Ten samples in five shards of two; the small shards all have the tar's minimum size (10240 bytes),
    so a copy of one over another keeps the size and only the hash can tell."""
    ann, img = _inputs(tmp_path, "img", 10)
    out = tmp_path / "shards"
    build_shards(str(ann), str(img), str(out), _cfg())
    m = read_manifest(str(out))
    keys = {s.name: [x["__key__"] for x in iter_tar_samples(u)] for s, u in zip(m.shards, shard_urls(str(out)),
                                                                                 strict=True)}
    return out, m, keys


def _all_but(keys: dict[str, list[str]], name: str) -> list[str]:
    return sorted(k for n, ks in keys.items() if n != name for k in ks)


def _corrupt_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "skipping corrupt shard" in r.getMessage()]


def test_swapped_shard_fails_by_default_and_is_skipped_in_skip_mode(built, caplog):
    out, m, keys = built
    victim, source = m.shards[2], m.shards[0]
    assert victim.bytes == source.bytes   # the precondition that makes this the hash's case
    shutil.copyfile(out / source.name, out / victim.name)   # a valid shard, just not this one

    with pytest.raises(CorruptShardError) as err:
        _keys_read(str(out))
    msg = str(err.value)
    assert victim.name in msg and "hash mismatch" in msg and "on_corrupt_shard" in msg and "\n" not in msg

    caplog.set_level(logging.WARNING, logger="fgclip_core.data.loader")
    got, loader = _keys_read(str(out), "skip")
    assert got == _all_but(keys, victim.name)   # no duplicate of shard 0's samples, nothing else lost
    c = loader.counters
    assert c["corrupt_shards"] == 1 and c["corrupt_by_reason"] == {"hash_mismatch": 1}
    (line,) = _corrupt_warnings(caplog)
    assert victim.name in line and "hash mismatch" in line


def test_swapped_shard_fails_with_one_line_from_worker_processes(built):
    out, m, _ = built
    shutil.copyfile(out / m.shards[0].name, out / m.shards[3].name)
    with pytest.raises(CorruptShardError) as err:
        _keys_read(str(out), workers=2)
    msg = str(err.value)
    assert m.shards[3].name in msg and "hash mismatch" in msg and "Traceback" not in msg and "\n" not in msg


def test_truncated_shard(built, caplog):
    out, m, keys = built
    victim = m.shards[1]
    p = out / victim.name
    p.write_bytes(p.read_bytes()[:-1024])
    with pytest.raises(CorruptShardError, match=rf"{victim.name}: size mismatch: {victim.bytes - 1024} bytes, "
                                                rf"manifest says {victim.bytes}"):
        _keys_read(str(out))
    caplog.set_level(logging.WARNING, logger="fgclip_core.data.loader")
    got, loader = _keys_read(str(out), "skip")
    assert got == _all_but(keys, victim.name)
    assert loader.counters["corrupt_shards"] == 1 and loader.counters["corrupt_by_reason"] == {"size_mismatch": 1}
    assert len(_corrupt_warnings(caplog)) == 1


def test_deleted_shard(built, caplog):
    out, m, keys = built
    victim = m.shards[4]
    (out / victim.name).unlink()
    with pytest.raises(CorruptShardError, match=rf"{victim.name}: missing: listed in the manifest"):
        _keys_read(str(out))
    caplog.set_level(logging.WARNING, logger="fgclip_core.data.loader")
    got, loader = _keys_read(str(out), "skip")
    assert got == _all_but(keys, victim.name)
    assert loader.counters["corrupt_shards"] == 1 and loader.counters["corrupt_by_reason"] == {"missing": 1}
    assert len(_corrupt_warnings(caplog)) == 1


def test_intact_shards_read_the_same_in_both_modes(built):
    out, _, keys = built
    every = sorted(k for ks in keys.values() for k in ks)
    for mode in ("fail", "skip"):
        got, loader = _keys_read(str(out), mode)
        assert got == every and loader.counters["corrupt_shards"] == 0


def test_training_on_a_swapped_shard_stops_with_one_clear_line(sample_shards, tiny_checkpoint_dir, tmp_path):
    """End to end: ``fgclip train`` (default ``data.on_corrupt_shard=fail``) exits non-zero naming the shard."""
    data = tmp_path / "shards"
    shutil.copytree(sample_shards.dir, data)
    m = read_manifest(str(data))
    same = [s for s in m.shards if s.bytes == m.shards[0].bytes and s.name != m.shards[0].name]
    victim = same[0] if same else m.shards[1]
    shutil.copyfile(data / m.shards[0].name, data / victim.name)
    out = tmp_path / "run"
    proc = run_train(out, "--init", str(tiny_checkpoint_dir), "--max-steps", "50", "--set", "deepspeed.zero_stage=0",
                     "--set", "data.loader.batch_size=2", "--set", "data.loader.mode=shuffle", data=str(data),
                     check=False)
    lines = [line for line in proc.stderr.splitlines() if "corrupt shard" in line]
    assert proc.returncode != 0 and lines, proc.stderr[-3000:]
    assert victim.name in lines[0] and ("hash mismatch" in lines[0] or "size mismatch" in lines[0])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
