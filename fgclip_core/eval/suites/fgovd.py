"""FG-OVD fine-grained understanding: does the region match its positive description best?

Per item: the image is resized to the model's square input, the box (xywh pixels) becomes
normalised xyxy and then RoI features on the patch grid; the positive and the 1-10 negative
descriptions are encoded in short (77-token) mode; the item is correct when the positive scores
above every negative. The positive and the negatives are scored by one operation, an identical
text scoring bit-equal in both roles; ties (within ``tie_tol``) follow the benchmark's ``ties``
rule (see ``fgclip_core.eval.metrics``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from fgclip_core.eval.config import EvalSettings
from fgclip_core.eval.datasets.types import FGOVDData
from fgclip_core.eval.encoder import CachedEncoder, TextMode
from fgclip_core.eval.metrics import accuracy, multiple_choice_ranks, multiple_choice_scores, recall_curve
from fgclip_core.eval.result import SuiteResult

SUITE = "fgovd"
TEXT_MODE: TextMode = "short"


def attribute_accuracy(items: list, ranks: torch.Tensor) -> dict[str, float]:
    """``accuracy/<attribute>`` for every attribute type the items carry (none when they carry none)."""
    by_attr: dict[str, list[int]] = {}
    for r, it in enumerate(items):
        if it.attribute is not None:
            by_attr.setdefault(it.attribute, []).append(r)
    return {f"accuracy/{a}": accuracy(ranks[rows]) for a, rows in sorted(by_attr.items())}


def run(data: FGOVDData, encoder: CachedEncoder, settings: EvalSettings, protocol: dict) -> SuiteResult:
    by_image: OrderedDict[str, list[int]] = OrderedDict()
    for idx, item in enumerate(data.items):
        by_image.setdefault(item.image, []).append(idx)
    requests = [(img, [data.items[i].bbox_xywh for i in idxs]) for img, idxs in by_image.items()]
    region_feats = encoder.regions(requests)

    region: dict[int, torch.Tensor] = {}
    missing = []
    for (img, idxs), feats in zip(by_image.items(), region_feats, strict=True):
        if feats is None:
            missing.append(img)
            continue
        for row, i in enumerate(idxs):
            region[i] = feats[row]
    kept = [i for i in range(len(data.items)) if i in region]
    if not kept:
        raise RuntimeError(f"{data.source}: none of the {len(by_image)} images could be read "
                           f"(first: {next(iter(by_image))})")

    items = [data.items[i] for i in kept]
    texts = list(dict.fromkeys(t for it in items for t in (it.positive, *it.negatives)))
    text_emb = encoder.texts(texts, TEXT_MODE)
    row_of = {t: r for r, t in enumerate(texts)}
    m = max(len(it.negatives) for it in items)
    regions = torch.stack([region[i] for i in kept])
    choice_idx = torch.zeros(len(items), m + 1, dtype=torch.long)  # column 0: the positive
    choice_mask = torch.zeros(len(items), m + 1, dtype=torch.bool)
    for r, it in enumerate(items):
        choice_idx[r, : len(it.negatives) + 1] = torch.tensor([row_of[t] for t in (it.positive, *it.negatives)])
        choice_mask[r, : len(it.negatives) + 1] = True
    scores = multiple_choice_scores(regions, text_emb, choice_idx, choice_mask)
    pos_scores, neg_scores, neg_mask = scores[:, 0], scores[:, 1:], choice_mask[:, 1:]
    ranks = multiple_choice_ranks(pos_scores, neg_scores, neg_mask, ties=protocol["ties"], tie_tol=settings.tie_tol)

    details = []
    for r, it in enumerate(items):
        n_neg = len(it.negatives)
        details.append({"line": it.line, "image": it.image, "bbox_xywh": list(it.bbox_xywh),
                        "positive": it.positive, "positive_score": float(pos_scores[r]),
                        "negatives": list(it.negatives), "negative_scores": neg_scores[r, :n_neg].tolist(),
                        "rank": int(ranks[r]), "correct": bool(ranks[r] == 0),
                        **({"attribute": it.attribute} if it.attribute is not None else {})})
    # Gallery: the first items, and the first mistakes, so the report shows both.
    wrong = [d for d in details if not d["correct"]]
    right = [d for d in details if d["correct"]]
    q = settings.gallery_queries
    gallery = [{"kind": "fgovd", **d} for d in (right[:q] + wrong[:q])]
    encoder.save()
    metrics = {"accuracy": accuracy(ranks)}
    metrics.update(attribute_accuracy(items, ranks))
    return SuiteResult(suite=SUITE, benchmark=data.name, n=len(items), metrics=metrics,
                       counts={"items": len(items), "images": len(by_image) - len(missing),
                               "missing_images": len(missing), "skipped_items": len(data.items) - len(items)},
                       missing_images=missing, details=details,
                       curves={"accuracy": recall_curve(ranks, min(settings.curve_max_k, m + 1))},
                       gallery=gallery, model=encoder.fingerprint[:16])
