"""Two ranks (gloo) with batches of 4 learn what one rank (ZeRO-0) learns from the same 8 samples
(global loss gathered with gradient), under ZeRO-2 and ZeRO-3. With the other integration tests this
covers 1 and 2 processes under ZeRO 0, 2 and 3 (1 process: 0 here, 2 in test_train_resume, 3 in
test_train_overfit_mlflow; 2 processes: 2 and 3 here, 0 in test_train_shards)."""

from __future__ import annotations

import pytest
import torch

from fgclip_core.model import FGCLIPModel, load_arch
from fgclip_core.train.allocator import find_tcmalloc
from fgclip_core.train.engine import seed_everything
from tests.integration.train_run import export_weights, run_train, summary

pytestmark = pytest.mark.integration

STEPS = 3
COMMON = ("--max-steps", str(STEPS), "--save-every", "0", "--set", "tracking.enabled=false",
          "--set", "optim.warmup_steps=1")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ref") / "run"
    run_train(out, *COMMON, "--set", "data.loader.batch_size=8", "--set", "deepspeed.zero_stage=0",
              recipe="tiny-cpu-stage1")
    assert summary(out)["samples"] == 8 * STEPS
    return export_weights(out)


@pytest.mark.parametrize("zero", [2, 3])  # 2 ranks at ZeRO-0: test_train_shards
def test_two_ranks_match_one_rank_on_the_same_samples(reference, tmp_path, zero: int) -> None:
    out = tmp_path / "run"
    run_train(out, *COMMON, "--set", "data.loader.batch_size=4", "--set", f"deepspeed.zero_stage={zero}",
              recipe="tiny-cpu-stage1", nproc=2)
    s = summary(out)
    assert s["steps"] == STEPS and s["samples"] == 8 * STEPS
    got = export_weights(out)
    assert got.keys() == reference.keys()
    for k, ref in reference.items():
        torch.testing.assert_close(got[k], ref, rtol=1e-4, atol=2e-5, msg=k)
    # and training really moved the weights (a no-op trainer must not pass)
    seed_everything(0)
    init = FGCLIPModel(load_arch("tiny")).state_dict()
    assert (got["visual_projection.weight"] - init["visual_projection.weight"]).abs().max() > 1e-3


@pytest.mark.skipif(find_tcmalloc() is None, reason="tcmalloc not installed (make cpu-allocator)")
def test_cpu_allocator_tcmalloc_trains_in_a_child_with_the_same_weights(reference, tmp_path) -> None:
    out = tmp_path / "run"
    run_train(out, *COMMON, "--set", "data.loader.batch_size=8", "--set", "deepspeed.zero_stage=0",
              "--cpu-allocator", "tcmalloc", recipe="tiny-cpu-stage1")
    s = summary(out)
    assert s["cpu_allocator"] == "tcmalloc" and s["samples"] == 8 * STEPS
    got = export_weights(out)
    for k, ref in reference.items():   # the allocator changes where tensors live, not what is computed
        torch.testing.assert_close(got[k], ref, rtol=0, atol=0, msg=k)
