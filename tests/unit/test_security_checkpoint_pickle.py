"""Issue 14 section 2: no checkpoint file the trainer reads can run code (malicious pickles are refused unread).

The payload is live: ``torch.load(weights_only=False)`` on it writes the marker file (checked first), so
every refusal below is a real refusal, not a payload that would have done nothing anyway.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fgclip_core.model.checkpoint import CheckpointError
from fgclip_core.train import checkpoint as ckpt
from fgclip_core.train.ds_checkpoint import (
    ALLOWED_GLOBALS,
    allowed_globals,
    check_ds_config,
    load_deepspeed_file,
)


class Payload:
    """Unpickling this runs ``exec`` and writes ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def plant(path, marker, extra: dict | None = None) -> None:
    """A checkpoint-looking dict (tensors + the payload) saved with torch.save, as an attacker would."""
    torch.save({"module": {"w": torch.ones(2)}, "global_steps": 1, **(extra or {}), "evil": Payload(str(marker))},
               path)


def test_the_payload_really_runs_code_under_full_unpickling(tmp_path) -> None:
    marker = tmp_path / "PWNED"
    plant(tmp_path / "x.pt", marker)
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert marker.read_text() == "pwned"


def test_deepspeed_file_with_a_payload_is_refused_naming_file_and_global(tmp_path) -> None:
    marker = tmp_path / "PWNED"
    f = tmp_path / "mp_rank_00_model_states.pt"
    plant(f, marker)
    with pytest.raises(CheckpointError) as e:
        load_deepspeed_file(str(f), map_location="cpu")
    msg = str(e.value)
    assert str(f) in msg and "refused: it asks for exec," in msg and "\n" not in msg
    assert not marker.exists()


def test_deepspeed_file_with_a_foreign_class_is_refused(tmp_path) -> None:
    f = tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    torch.save({"optimizer_state_dict": {"x": random.Random(1)}}, f)
    with pytest.raises(CheckpointError, match=r"random\.Random"):
        load_deepspeed_file(str(f))


def test_deepspeed_allow_list_loads_what_deepspeed_writes(tmp_path) -> None:
    """Every allow-listed class round-trips (they are what ZeRO optimizer states hold), with tensors."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    assert len(allowed_globals()) == len(ALLOWED_GLOBALS)
    f = tmp_path / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    torch.save({"optimizer_state_dict": {"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum.gradients,
                                         "param_slice_mappings": [{"w": fragment_address(numel=4, start=0)}],
                                         "fp32": [torch.arange(4.0)]}}, f)
    sd = load_deepspeed_file(str(f), map_location="cpu")["optimizer_state_dict"]
    assert isinstance(sd["loss_scaler"], LossScaler) and sd["loss_scaler"].cur_scale == 1.0
    assert sd["zero_stage"] is ZeroStageEnum.gradients
    assert sd["param_slice_mappings"][0]["w"] == fragment_address(numel=4, start=0)
    assert torch.equal(sd["fp32"][0], torch.arange(4.0))


def test_truncated_deepspeed_file_is_one_clear_error(tmp_path) -> None:
    f = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.ones(64)}}, f)
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable DeepSpeed checkpoint file") as e:
        load_deepspeed_file(str(f))
    assert str(f) in str(e.value)


def test_trainer_state_replaced_by_a_pickle_is_refused_unread(tmp_path) -> None:
    marker = tmp_path / "PWNED"
    plant(ckpt.rank_state_path(tmp_path, 0), marker)
    with pytest.raises(CheckpointError, match="not a trainer state file") as e:
        ckpt.load_rank_state(tmp_path, 0)
    assert str(ckpt.rank_state_path(tmp_path, 0)) in str(e.value)
    assert not marker.exists()


def test_legacy_pickled_trainer_state_is_refused_unread(tmp_path) -> None:
    marker = tmp_path / "PWNED"
    plant(ckpt.legacy_rank_state_path(tmp_path, 0), marker)
    with pytest.raises(CheckpointError, match="old pickle format is never loaded") as e:
        ckpt.load_rank_state(tmp_path, 0)
    assert "trainer_state_rank0.pt" in str(e.value)
    assert not marker.exists()


def test_trainer_state_is_safetensors_with_json_state_and_exact_rng(tmp_path) -> None:
    from safetensors import safe_open

    random.seed(11)
    np.random.seed(11)
    torch.manual_seed(11)
    np.random.standard_normal()           # numpy keeps a cached gaussian: must round-trip too
    random.gauss(0, 1)                     # as does python's gauss_next
    ckpt.save_rank_state(tmp_path, 0, {"step": 3, "position": 9, "data": {"epoch": 1, "positions": [[0, 4]]}})
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    path = ckpt.rank_state_path(tmp_path, 0)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == ckpt.STATE_FORMAT
    state = ckpt.load_rank_state(tmp_path, 0, required=("step", "position", "data"))
    assert state["data"] == {"epoch": 1, "positions": [[0, 4]]} and state["position"] == 9
    ckpt.set_rng_state(state["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    assert got[:4] == expected[:4] and torch.equal(got[4], expected[4])


def test_trainer_state_with_bad_fields_is_one_clear_error(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    ckpt.save_rank_state(tmp_path, 0, {"step": 1})
    path = ckpt.rank_state_path(tmp_path, 0)
    with pytest.raises(CheckpointError, match="keys missing: position"):
        ckpt.load_rank_state(tmp_path, 0, required=("step", "position"))
    tensors = load_file(str(path))
    tensors["rng.python"] = tensors["rng.python"][:10]
    save_file(tensors, str(path), metadata={"format": ckpt.STATE_FORMAT, "state": "{}", "rng": "{}"})
    with pytest.raises(CheckpointError, match="malformed trainer state"):
        ckpt.load_rank_state(tmp_path, 0)
    save_file(tensors, str(path), metadata={"format": "something-else"})
    with pytest.raises(CheckpointError, match="format"):
        ckpt.load_rank_state(tmp_path, 0)


@pytest.mark.parametrize("section", [{"checkpoint": {"load_universal": True}},
                                     {"checkpoint": {"writer": {"type": "FAST"}}},
                                     {"datastates_ckpt": {}}])
def test_deepspeed_settings_that_bypass_the_safe_loader_are_refused(section) -> None:
    from fgclip_core.config import ConfigError

    with pytest.raises(ConfigError, match="not supported"):
        check_ds_config({"zero_optimization": {"stage": 2}, **section}, "ds.json")
    check_ds_config({"checkpoint": {"tag_validation": "WARN"}, "datastates_ckpt": False}, "ds.json")
