"""Checkpoint folders: completion marker, corruption detection, previous-one fallback, keep-last-K."""

from __future__ import annotations

import logging
import random

import torch

from fgclip_core.train import checkpoint as ckpt


def _fake_save(root, step: int, complete: bool = True) -> None:
    d = root / ckpt.tag_for(step)
    d.mkdir(parents=True)
    (d / "mp_rank_00_model_states.pt").write_bytes(bytes(range(256)) * (step + 1))
    ckpt.save_rank_state(d, 0, {"step": step, "position": step * 2})
    if complete:
        ckpt.write_marker(d, step)


def test_latest_valid_skips_partial_and_corrupt_checkpoints_with_a_warning(tmp_path, caplog) -> None:
    for s in (10, 20, 30):
        _fake_save(tmp_path, s)
    _fake_save(tmp_path, 40, complete=False)           # killed mid-save
    assert ckpt.verify(tmp_path / "step-00000030") is None
    f = tmp_path / "step-00000030" / "mp_rank_00_model_states.pt"
    data = bytearray(f.read_bytes())
    data[100] ^= 0xFF                                  # same size, one flipped byte
    f.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert ckpt.latest_valid(tmp_path) == "step-00000020"
    assert "step-00000040" in caplog.text and "no completion marker" in caplog.text
    assert "step-00000030" in caplog.text and "checksum" in caplog.text
    (tmp_path / "step-00000020" / "mp_rank_00_model_states.pt").write_bytes(b"short")
    assert "size" in ckpt.verify(tmp_path / "step-00000020")
    assert ckpt.latest_valid(tmp_path) == "step-00000010"


def test_prune_keeps_last_k_complete_and_never_a_newer_partial(tmp_path) -> None:
    for s in (1, 2, 3, 4):
        _fake_save(tmp_path, s)
    _fake_save(tmp_path, 5, complete=False)
    removed = ckpt.prune(tmp_path, keep_last=2)
    assert removed == ["step-00000001", "step-00000002"]
    assert ckpt.list_tags(tmp_path) == ["step-00000003", "step-00000004", "step-00000005"]


def test_rank_state_restores_rng_streams(tmp_path) -> None:
    torch.manual_seed(3)
    random.seed(3)
    ckpt.save_rank_state(tmp_path, 1, {"position": 7})
    expected = (torch.rand(3), random.random())
    torch.manual_seed(99)
    random.seed(99)
    state = ckpt.load_rank_state(tmp_path, 1)
    ckpt.set_rng_state(state["rng"])
    assert state["position"] == 7
    got = (torch.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]
