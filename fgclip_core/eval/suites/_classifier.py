"""Zero-shot classifier weights: class names x templates, each prompt normalised, averaged, renormalised."""

from __future__ import annotations

import torch

from fgclip_core.eval.encoder import CachedEncoder, TextMode
from fgclip_core.eval.prompts import prompts_for_class, templates_for

TEXT_MODE: TextMode = "short"


def build_classifier(encoder: CachedEncoder, classnames: list[str], template_set: str) -> torch.Tensor:
    """``[C, D]`` unit rows, one per class."""
    templates = templates_for(template_set)
    prompts = [p for name in classnames for p in prompts_for_class(name, templates)]
    emb = encoder.texts(prompts, TEXT_MODE).view(len(classnames), len(templates), -1)
    return torch.nn.functional.normalize(emb.mean(dim=1), dim=-1)


def top_classes(scores: torch.Tensor, classnames: list[str], k: int) -> list[dict]:
    vals, idx = scores.topk(min(k, scores.numel()))
    return [{"class": classnames[int(i)], "score": float(v)} for v, i in zip(vals, idx, strict=True)]
