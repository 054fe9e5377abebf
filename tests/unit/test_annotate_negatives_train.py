"""A stage-2 training step runs on the hard negatives of every difficulty level.

One record's regions get their negatives from :class:`RuleNegatives` at each level (``trivial`` draws
from the record's other objects), are tokenised with the CLIP tokenizer into the batch layout the
loader makes (``hardneg_input_ids [B, K, 1 + N, 77]``, positive first; a box takes part only with all
N negatives, as ``flag_short_neg`` says), and one fused stage-2 step runs forward and backward on the
tiny model: the hard-negative term is live and finite and reaches the hard-negative logit scale.
"""

from __future__ import annotations

import pytest
import torch

from fgclip_core.annotate.negatives import LEVELS, RuleNegatives
from fgclip_core.losses import LossConfig
from fgclip_core.model import FGCLIPModel, load_arch
from fgclip_core.model.processing import clip_tokenizer
from fgclip_core.train.step import FGCLIPTrainModule
from fgclip_core.train.synthetic import SyntheticBatches, TextSpec

torch.set_num_threads(1)
N = 10
RECORD = ["a small light grey plastic pipe with a round metal cap", "a tall red wooden chair",
          "a black and white striped cat on a blue sofa", "two yellow rubber ducks", "a clear glass vase",
          "the old man in a green jacket", "a brown leather bag", "a white ceramic plate", "a wicker basket",
          "a printed cotton t-shirt", "the open window", "a large orange kite", "a silver metal spoon"]


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


@pytest.mark.parametrize("level", LEVELS)
def test_stage2_step_runs_on_each_levels_negatives(level, tokenizer):
    torch.manual_seed(0)
    model = FGCLIPModel(load_arch("tiny"))
    t = model.config.text_config
    k_boxes = 4
    batch = SyntheticBatches("synthetic://?samples=2", 2, 0, 1, 0, model.config.vision_config.image_size,
                             TextSpec(t.vocab_size, t.bos_token_id, t.eos_token_id, t.pad_token_id), k_boxes, N).batch(0)
    gen = RuleNegatives(n=N, difficulty=level)
    batch.box_mask[:] = True
    batch.hardneg_mask[:] = False
    used = 0
    for b in range(batch.batch_size):
        for k in range(k_boxes):
            expr = RECORD[(b * k_boxes + k) % len(RECORD)]
            res = gen.result(expr, [o for o in RECORD if o != expr])
            batch.box_xyxy[b, k] = torch.tensor([0.05 * k, 0.1, 0.5 + 0.1 * k, 0.9])
            ids = tokenizer.encode([expr, *res.negatives], "short")
            batch.box_input_ids[b, k] = ids[0]
            batch.hardneg_input_ids[b, k, : len(ids)] = ids
            if len(res.negatives) == N:  # flag_short_neg = 1
                assert res.levels == [level] * N
                batch.hardneg_mask[b, k, : N + 1] = True
                used += 1
    assert used >= 4, f"{level}: only {used} boxes with {N} negatives"
    module = FGCLIPTrainModule(model, 2, LossConfig(), tokenizer.eos_token_id)
    out = module(batch)
    assert torch.isfinite(out["loss"]) and out["loss_hardneg"].item() > 0
    out["loss"].backward()
    grad = dict(module.named_parameters())["scales.logit_scale_hardneg"].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
