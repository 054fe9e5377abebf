"""Box classification on COCO-format instances: RoI features of each box vs class-name classifiers."""

from __future__ import annotations

from collections import OrderedDict

import torch

from fgclip_core.eval.config import EvalSettings
from fgclip_core.eval.datasets.types import BoxClassificationData
from fgclip_core.eval.encoder import CachedEncoder
from fgclip_core.eval.metrics import classification_ranks, recall_curve, topk_accuracy
from fgclip_core.eval.result import SuiteResult
from fgclip_core.eval.suites._classifier import build_classifier, top_classes

SUITE = "box-cls"


def run(data: BoxClassificationData, encoder: CachedEncoder, settings: EvalSettings,
        protocol: dict) -> SuiteResult:
    by_image: OrderedDict[str, list[int]] = OrderedDict()
    for idx, item in enumerate(data.items):
        by_image.setdefault(item.image, []).append(idx)
    feats_per_image = encoder.regions([(img, [data.items[i].bbox_xywh for i in idxs])
                                       for img, idxs in by_image.items()])
    kept, rows, missing = [], [], []
    for (img, idxs), feats in zip(by_image.items(), feats_per_image, strict=True):
        if feats is None:
            missing.append(img)
            continue
        kept.extend(idxs)
        rows.append(feats)
    if not kept:
        raise RuntimeError(f"{data.source}: none of the {len(by_image)} images could be read")
    feats = torch.cat(rows)
    classifier = build_classifier(encoder, data.classnames, settings.box_templates)
    labels = torch.tensor([data.items[i].label for i in kept])
    ranks = classification_ranks(feats, classifier, labels, chunk_size=settings.chunk_size,
                           tie_tol=settings.tie_tol)
    details = []
    for r, i in enumerate(kept):
        it = data.items[i]
        details.append({"annotation_id": it.annotation_id, "image": it.image, "bbox_xywh": list(it.bbox_xywh),
                        "label": data.classnames[it.label], "rank": int(ranks[r]), "correct": bool(ranks[r] == 0)})
    gallery = []
    for r in range(min(settings.gallery_queries * 2, len(kept))):
        gallery.append({"kind": "box-classify", **details[r],
                        "results": top_classes(feats[r] @ classifier.T, data.classnames, settings.gallery_top)})
    encoder.save()
    return SuiteResult(suite=SUITE, benchmark=data.name, n=len(kept), metrics=topk_accuracy(ranks, settings.topk),
                       counts={"boxes": len(kept), "classes": len(data.classnames), "missing_images": len(missing),
                               "skipped_boxes": len(data.items) - len(kept)},
                       missing_images=missing, details=details,
                       curves={"topk": recall_curve(ranks, min(settings.curve_max_k, len(data.classnames)))},
                       gallery=gallery, model=encoder.fingerprint[:16])
