"""Run by test_model_zero3.py in its own process: FGCLIPModel under DeepSpeed ZeRO-3 with every
parameter partitioned (persistence threshold 0) gives the same features as the plain model, and a
training step runs. Exits non-zero with a message on any difference."""

from __future__ import annotations

import sys

import deepspeed
import torch

from fgclip_core.model import load_arch
from fgclip_core.model.build import random_model


def main() -> int:
    torch.set_num_threads(1)
    deepspeed.init_distributed(dist_backend="gloo")
    model, ref = random_model(load_arch("tiny"), seed=0), random_model(load_arch("tiny"), seed=0)
    for name in ("logit_scale", "logit_scale_finegraind", "logit_scale_hardneg"):
        del model._parameters[name]  # as the trainer's wrapper does: DeepSpeed cannot broadcast 0-dim params
    cfg = {"train_micro_batch_size_per_gpu": 2,
           "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
           "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
    m = engine.module
    partitioned = m.text_model.embeddings.position_embedding_res.weight
    if partitioned.numel() != 0:
        print(f"expected partitioned (empty) parameters outside forward, got {tuple(partitioned.shape)}")
        return 1
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 64, 64, generator=g)
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 20, [49406] + [2368] * 22 + [49407]])
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5]], [[0.25, 0.25, 1.0, 1.0]]])
    enc = m.encode_image(pixels, with_dense=True)
    got = {"image": enc.image_embeds, "long": m.get_text_features(ids, walk_short_pos=False),
           "short": m.get_text_features(ids), "roi": m.roi_features(enc.dense_map, boxes),
           "box_info": m.get_image_box_roi_features(pixels, torch.tensor([[1, 0.0, 0.0, 2.0, 2.0]]))}
    with torch.no_grad():
        r = ref.encode_image(pixels, with_dense=True)
        want = {"image": r.image_embeds, "long": ref.get_text_features(ids, walk_short_pos=False),
                "short": ref.get_text_features(ids), "roi": ref.roi_features(r.dense_map, boxes),
                "box_info": ref.get_image_box_roi_features(pixels, torch.tensor([[1, 0.0, 0.0, 2.0, 2.0]]))}
    for k in want:
        diff = (got[k].detach() - want[k]).abs().max().item()
        if diff > 1e-6:
            print(f"{k}: ZeRO-3 features differ from the plain model by {diff}")
            return 1
    engine.backward(sum(v.sum() for v in got.values()))
    engine.step()
    with torch.no_grad():
        after = m.get_text_features(ids, walk_short_pos=False)
    if torch.equal(after, got["long"].detach()):
        print("the optimizer step did not change the model")
        return 1
    print("ZERO3_OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
