"""Zero-shot image classification (ImageNet style): top-1 / top-5 with CLIP's 80 templates averaged."""

from __future__ import annotations

import torch

from fgclip_core.eval.config import EvalSettings
from fgclip_core.eval.datasets.types import ClassificationData
from fgclip_core.eval.encoder import CachedEncoder
from fgclip_core.eval.metrics import classification_ranks, recall_curve, topk_accuracy
from fgclip_core.eval.result import SuiteResult
from fgclip_core.eval.suites._classifier import build_classifier, top_classes

SUITE = "zeroshot"


def run(data: ClassificationData, encoder: CachedEncoder, settings: EvalSettings) -> SuiteResult:
    feats, found = encoder.images(data.images)
    kept = [i for i, ok in enumerate(found) if ok]
    missing = [data.images[i] for i, ok in enumerate(found) if not ok]
    if not kept:
        raise RuntimeError(f"{data.source}: none of the {len(data.images)} images could be read")
    classifier = build_classifier(encoder, data.classnames, settings.templates)
    labels = torch.tensor([data.labels[i] for i in kept])
    ranks = classification_ranks(feats, classifier, labels, chunk_size=settings.chunk_size,
                           tie_tol=settings.tie_tol)
    details = [{"image": data.images[i], "label": data.classnames[data.labels[i]], "rank": int(ranks[r]),
                "correct": bool(ranks[r] == 0)} for r, i in enumerate(kept)]
    gallery = []
    for r in range(min(settings.gallery_queries * 2, len(kept))):
        i = kept[r]
        gallery.append({"kind": "classify", "image": data.images[i], "label": data.classnames[data.labels[i]],
                        "results": top_classes(feats[r] @ classifier.T, data.classnames, settings.gallery_top)})
    encoder.save()
    return SuiteResult(suite=SUITE, benchmark=data.name, n=len(kept), metrics=topk_accuracy(ranks, settings.topk),
                       counts={"images": len(kept), "classes": len(data.classnames), "missing_images": len(missing)},
                       missing_images=missing, details=details,
                       curves={"topk": recall_curve(ranks, min(settings.curve_max_k, len(data.classnames)))},
                       gallery=gallery, model=encoder.fingerprint[:16])
