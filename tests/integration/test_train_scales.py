"""Issue 12 section 1: logit scales learn from an OpenAI CLIP start (4.6052 > ln 100) at ZeRO 0 and 2; the
optional cap clamps the parameter *and* DeepSpeed's fp32 master copy after the step; the region-scale reset
happens when training starts, not on resume."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from fgclip_core.train.checkpoint import tag_for
from fgclip_core.train.ds_checkpoint import load_deepspeed_file
from tests.integration.train_run import export_weights, metrics, run_train

pytestmark = pytest.mark.integration

SCALES = ("logit_scale", "logit_scale_finegraind", "logit_scale_hardneg")
OPENAI = 4.6052                    # what OpenAI CLIP checkpoints store; float32(4.6052) > float32(ln 100)
BASE = ("--set", "tracking.enabled=false", "--set", "tracking.system_metrics=false", "--seed", "3")


def _init_with_scales(src, dst, values: dict[str, float]):
    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    tensors = load_file(str(f))
    for name, v in values.items():
        tensors[name] = torch.tensor(v, dtype=tensors[name].dtype)
    save_file(tensors, str(f), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def openai_start(tiny_checkpoint_dir, tmp_path_factory):
    return _init_with_scales(tiny_checkpoint_dir, tmp_path_factory.mktemp("init") / "openai",
                             dict.fromkeys(SCALES, OPENAI))


@pytest.fixture(scope="module")
def uncapped(openai_start, tmp_path_factory):
    """Two steps from 4.6052 without a cap, per ZeRO stage."""
    runs = {}
    for zero in (0, 2):
        out = tmp_path_factory.mktemp(f"uncapped{zero}") / "run"
        run_train(out, "--init", str(openai_start), "--max-steps", "2", *BASE, "--set", f"deepspeed.zero_stage={zero}")
        runs[zero] = out
    return runs


def _master_scales(out, zero: int) -> dict[str, float]:
    """The values AdamW updates, read from the last checkpoint: ZeRO 0 fp32 = the module's parameters,
    ZeRO 2 = the flat fp32 partitions of the optimizer state (a scale lives in one rank's partition)."""
    tag_dir = out / "checkpoints" / tag_for(2)
    if zero == 0:
        module = load_deepspeed_file(str(tag_dir / "mp_rank_00_model_states.pt"), "cpu")["module"]
        return {n: float(module[f"scales.{n}"]) for n in SCALES}
    found = {}
    for rank_file in sorted(tag_dir.glob("zero_pp_rank_*_mp_rank_00_optim_states.pt")):  # one per rank
        osd = load_deepspeed_file(str(rank_file), "cpu")["optimizer_state_dict"]
        for flat, mapping in zip(osd["single_partition_of_fp32_groups"], osd["param_slice_mappings"], strict=True):
            for name, frag in mapping.items():
                short = name.removeprefix("scales.")
                if short in SCALES:
                    found[short] = float(flat[frag.start].detach())
    assert set(found) == set(SCALES)
    return found


@pytest.mark.parametrize("zero", [0, 2])
def test_scales_learn_from_an_openai_clip_start(uncapped, zero) -> None:
    start = torch.tensor(OPENAI)
    assert start > torch.tensor(math.log(100.0))
    w = export_weights(uncapped[zero])
    for name in SCALES:
        assert not torch.equal(w[name], start), f"{name} did not move at ZeRO {zero}"
    first = metrics(uncapped[zero])[0]
    for name in SCALES:           # the first forward used exp(4.6052), above 100: no clamp in the loss
        assert first[name] == pytest.approx(math.exp(OPENAI), rel=1e-6) and first[name] > 100.0


# ZeRO 2 on 2 ranks is the hard case (the scale sits in one rank's flat partition); 1 rank at ZeRO 2 adds nothing
@pytest.mark.parametrize(("zero", "nproc"), [(0, 1), (2, 2)])
def test_cap_clamps_parameter_and_master_copy_after_the_step(openai_start, tmp_path, zero, nproc) -> None:
    """A cap well below the start (3.0 < 4.6052): after step 1 the module's parameter *and* the value AdamW
    updates (at ZeRO 2 a flat fp32 partition) must both be at the cap, whichever way the gradient points;
    clamping only the module's copy would let step 2 copy the unclamped master back."""
    cap = 3.0
    out = tmp_path / "capped"
    run_train(out, "--init", str(openai_start), "--max-steps", "2", "--save-every", "1", *BASE,
              "--set", f"deepspeed.zero_stage={zero}", "--set", f"optim.logit_scale_max={cap}", nproc=nproc)
    w = export_weights(out)
    master = _master_scales(out, zero)
    first, second = metrics(out)
    for name in SCALES:
        assert first[name] == pytest.approx(math.exp(OPENAI), rel=1e-6)       # the cap never touches the loss
        assert second[name] <= math.exp(cap) * (1 + 1e-6), f"{name}: step 2 did not start from the clamped value"
        assert float(w[name]) <= cap, f"{name} above the cap at ZeRO {zero}"
        assert master[name] <= cap, f"{name}: the optimizer's master copy is above the cap at ZeRO {zero}"
        assert float(w[name]) == master[name]


def test_region_scales_reset_when_training_starts_not_on_resume(tiny_checkpoint_dir, tmp_path) -> None:
    init = _init_with_scales(tiny_checkpoint_dir, tmp_path / "init",
                             {"logit_scale": OPENAI, "logit_scale_finegraind": 2.0, "logit_scale_hardneg": 3.0})
    reset = ("--set", "model.reset_region_scales_at_start=true")
    on = tmp_path / "reset"
    run_train(on, "--init", str(init), "--max-steps", "1", *BASE, *reset)
    first = metrics(on)[0]
    for name in SCALES:
        assert first[name] == pytest.approx(math.exp(OPENAI), rel=1e-6), name

    off = tmp_path / "no-reset"
    run_train(off, "--init", str(init), "--max-steps", "1", "--save-every", "1", "--set", "export=false", *BASE)
    assert metrics(off)[0]["logit_scale_finegraind"] == pytest.approx(math.exp(2.0), rel=1e-6)
    run_train(off, "--init", str(init), "--max-steps", "2", "--resume", "latest", *BASE, *reset)
    assert json.loads((off / "summary.json").read_text())["resumed_from"] == tag_for(1)
    step2 = metrics(off)[-1]
    assert step2["step"] == 2
    assert step2["logit_scale_finegraind"] == pytest.approx(math.exp(2.0), rel=0.01)   # restored, not reset
    assert step2["logit_scale_hardneg"] == pytest.approx(math.exp(3.0), rel=0.01)
