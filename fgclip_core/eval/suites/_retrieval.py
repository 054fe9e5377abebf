"""Image-text retrieval shared by the long- and short-caption suites (they differ in text mode)."""

from __future__ import annotations

import torch

from fgclip_core.eval.config import EvalSettings
from fgclip_core.eval.datasets.types import RetrievalData
from fgclip_core.eval.encoder import CachedEncoder, TextMode
from fgclip_core.eval.metrics import recall_curve, retrieval_metrics, retrieval_ranks
from fgclip_core.eval.result import SuiteResult


def _drop_missing(data: RetrievalData, found: list[bool]) -> tuple[list[str], list[int], list[int], list[str]]:
    """Keep images that loaded and the texts that belong to them (re-indexed)."""
    new_index: dict[int, int] = {}
    for i, ok in enumerate(found):
        if ok:
            new_index[i] = len(new_index)
    kept_texts = [j for j, i in enumerate(data.text_to_image) if i in new_index]
    t2i = [new_index[data.text_to_image[j]] for j in kept_texts]
    kept_images = [data.images[i] for i in new_index]
    missing = [loc for loc, ok in zip(data.images, found, strict=True) if not ok]
    return kept_images, kept_texts, t2i, missing


def run_retrieval(suite: str, data: RetrievalData, encoder: CachedEncoder, settings: EvalSettings,
                  mode: TextMode) -> SuiteResult:
    img_emb, found = encoder.images(data.images)
    images, kept_texts, t2i, missing = _drop_missing(data, found)
    if not images:
        raise RuntimeError(f"{data.source}: none of the {len(data.images)} images could be read "
                           f"(first: {data.images[0]})")
    texts = [data.texts[j] for j in kept_texts]
    txt_emb = encoder.texts(texts, mode)
    owner = torch.tensor(t2i, dtype=torch.long)
    ranks = retrieval_ranks(img_emb, txt_emb, owner, chunk_size=settings.chunk_size,
                           tie_tol=settings.tie_tol)
    metrics = retrieval_metrics(ranks, settings.recall_ks)

    details = [{"kind": "i2t", "image": images[i], "rank": int(ranks.i2t[i])} for i in range(len(images))]
    details += [{"kind": "t2i", "text_index": kept_texts[j], "text": texts[j], "image": images[t2i[j]],
                 "rank": int(ranks.t2i[j])} for j in range(len(texts))]
    curves = {"i2t": recall_curve(ranks.i2t, min(settings.curve_max_k, len(texts))),
              "t2i": recall_curve(ranks.t2i, min(settings.curve_max_k, len(images)))}

    gallery = []
    top = settings.gallery_top
    for j in range(min(settings.gallery_queries, len(texts))):
        s = (img_emb @ txt_emb[j]).tolist()
        order = sorted(range(len(images)), key=s.__getitem__, reverse=True)[:top]
        gallery.append({"kind": "t2i", "query": texts[j], "truth": images[t2i[j]],
                        "results": [{"image": images[i], "score": s[i], "positive": i == t2i[j]} for i in order]})
    for i in range(min(settings.gallery_queries, len(images))):
        s = (txt_emb @ img_emb[i]).tolist()
        order = sorted(range(len(texts)), key=s.__getitem__, reverse=True)[:top]
        gallery.append({"kind": "i2t", "query": images[i],
                        "results": [{"text": texts[j], "score": s[j], "positive": t2i[j] == i} for j in order]})
    encoder.save()
    return SuiteResult(suite=suite, benchmark=data.name, n=len(images), metrics=metrics,
                       counts={"images": len(images), "texts": len(texts), "missing_images": len(missing),
                               "dropped_texts": len(data.texts) - len(texts)},
                       missing_images=missing, details=details, curves=curves, gallery=gallery,
                       model=encoder.fingerprint[:16])
