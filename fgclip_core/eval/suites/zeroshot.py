"""Zero-shot image classification (ImageNet style): top-1 / top-5 with CLIP's 80 templates averaged,
and ``mean_per_class_recall`` (the mean over classes of each class's top-1 recall, as CLIP_benchmark
reports it). ``drop_last`` (protocol setting) drops the trailing ``len % batch_size`` images, as the
official script's ``DataLoader(drop_last=True)`` does (16 of ImageNet's 50,000 at batch 32 or 64)."""

from __future__ import annotations

from dataclasses import replace

import torch

from fgclip_core.eval.config import EvalSettings
from fgclip_core.eval.datasets.types import ClassificationData
from fgclip_core.eval.encoder import CachedEncoder
from fgclip_core.eval.metrics import classification_ranks, recall_curve, topk_accuracy
from fgclip_core.eval.result import SuiteResult
from fgclip_core.eval.suites._classifier import build_classifier, top_classes

SUITE = "zeroshot"


def mean_per_class_recall(ranks: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Mean over the classes that have samples of the fraction of their samples ranked first."""
    hits = torch.bincount(labels[ranks == 0], minlength=n_classes).double()
    total = torch.bincount(labels, minlength=n_classes).double()
    present = total > 0
    return float((hits[present] / total[present]).mean())


def last_batch_dropped(data: ClassificationData, batch_size: int) -> tuple[ClassificationData, int]:
    keep = len(data.images) - len(data.images) % batch_size
    return replace(data, images=data.images[:keep], labels=data.labels[:keep]), len(data.images) - keep


def run(data: ClassificationData, encoder: CachedEncoder, settings: EvalSettings, protocol: dict) -> SuiteResult:
    dropped = 0
    if protocol["drop_last"]:
        data, dropped = last_batch_dropped(data, settings.batch_size)
        if not data.images:
            raise RuntimeError(f"{data.source}: drop_last with batch_size {settings.batch_size} leaves no image")
    feats, found = encoder.images(data.images)
    kept = [i for i, ok in enumerate(found) if ok]
    missing = [data.images[i] for i, ok in enumerate(found) if not ok]
    if not kept:
        raise RuntimeError(f"{data.source}: none of the {len(data.images)} images could be read")
    classifier = build_classifier(encoder, data.classnames, settings.templates)
    labels = torch.tensor([data.labels[i] for i in kept])
    ranks = classification_ranks(feats, classifier, labels, chunk_size=settings.chunk_size,
                           tie_tol=settings.tie_tol)
    metrics = topk_accuracy(ranks, settings.topk)
    metrics["mean_per_class_recall"] = mean_per_class_recall(ranks, labels, len(data.classnames))
    details = [{"image": data.images[i], "label": data.classnames[data.labels[i]], "rank": int(ranks[r]),
                "correct": bool(ranks[r] == 0)} for r, i in enumerate(kept)]
    gallery = []
    for r in range(min(settings.gallery_queries * 2, len(kept))):
        i = kept[r]
        gallery.append({"kind": "classify", "image": data.images[i], "label": data.classnames[data.labels[i]],
                        "results": top_classes(feats[r] @ classifier.T, data.classnames, settings.gallery_top)})
    encoder.save()
    return SuiteResult(suite=SUITE, benchmark=data.name, n=len(kept), metrics=metrics,
                       counts={"images": len(kept), "classes": len(data.classnames), "missing_images": len(missing),
                               "dropped_last_batch": dropped},
                       missing_images=missing, details=details,
                       curves={"topk": recall_curve(ranks, min(settings.curve_max_k, len(data.classnames)))},
                       gallery=gallery, model=encoder.fingerprint[:16])
