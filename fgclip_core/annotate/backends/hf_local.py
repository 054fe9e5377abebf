"""Local Hugging Face backends, loaded from a directory (no network): batched, under ``torch.no_grad``.

- :class:`HFZeroShotDetector`: OWL-ViT / OWLv2 / Grounding DINO (``AutoModelForZeroShotObjectDetection``);
  the image processor is loaded with the PIL backend, so torchvision is never needed.
- :class:`HFLocalCaptioner`: an image-text-to-text model (LLaVA-style: ``AutoModelForImageTextToText``
  + ``AutoProcessor`` with a chat template) prompted with the caption prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from fgclip_core.annotate.boxes import Detection
from fgclip_core.annotate.captions import CaptionResult, clean_text, finish
from fgclip_core.annotate.config import BoxConfig, CaptionConfig
from fgclip_core.annotate.images import LoadedImage

OWL_TYPES = ("owlvit", "owlv2")
GROUNDING_TYPES = ("grounding-dino", "mm-grounding-dino")


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def grounding_prompt(tokenizer: Any, phrases: Sequence[str], max_length: int) -> tuple[str, list[list[int]]]:
    """Grounding DINO's text ("p1 . p2 .", lower case) and, per phrase, the indices of its tokens."""
    text, ranges = "", []
    for p in phrases:
        phrase = " ".join(p.lower().split())
        ranges.append((len(text), len(text) + len(phrase)))
        text += phrase + " . "
    text = text.strip()
    offsets = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=max_length)["offset_mapping"]
    return text, [[j for j, (s, e) in enumerate(offsets) if e > s and s >= a and e <= b] for a, b in ranges]


class HFZeroShotDetector:
    """Scores per (box, phrase). DETR-style models (Grounding DINO) see a padded batch, which changes a
    random model's answers a little; ``boxes.batch_size: 1`` gives per-image results exactly."""

    def __init__(self, cfg: BoxConfig, device: str = "cpu"):
        from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor

        assert cfg.model_dir is not None
        self.cfg, self.device = cfg, device
        self.model_type = AutoConfig.from_pretrained(cfg.model_dir).model_type
        if self.model_type not in OWL_TYPES + GROUNDING_TYPES:
            raise ValueError(f"boxes.model_dir={cfg.model_dir}: model_type {self.model_type!r} is not supported "
                             f"(supported: {', '.join(OWL_TYPES + GROUNDING_TYPES)})")
        self.model = AutoModelForZeroShotObjectDetection.from_pretrained(cfg.model_dir).to(device).eval()
        self.processor = AutoProcessor.from_pretrained(cfg.model_dir, backend="pil")
        text_cfg = self.model.config.text_config
        self.max_text = int(getattr(self.model.config, "max_text_len", text_cfg.max_position_embeddings))

    def provenance(self) -> dict[str, Any]:
        return {"backend": "hf_local", "model": str(self.cfg.model_dir), "prompt_version": "owl-queries-v1",
                "model_type": self.model_type}

    def _batch(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]) -> list[list[Detection]]:
        if self.model_type in GROUNDING_TYPES:
            return self._batch_grounding(images, queries)
        return self._batch_owl(images, queries)

    @torch.no_grad()
    def _batch_grounding(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]
                         ) -> list[list[Detection]]:
        """Grounding DINO: one prompt "p1 . p2 . ..." per image; a phrase's score for a box is the best
        sigmoid logit over that phrase's tokens (found from the tokenizer's character offsets)."""
        prompts = [grounding_prompt(self.processor.tokenizer, q, self.max_text) for q in queries]
        texts = [t for t, _ in prompts]
        inputs = self.processor(images=list(images), text=texts, return_tensors="pt", padding="longest",
                                truncation=True, max_length=self.max_text).to(self.device)
        out = self.model(**inputs)
        logits = out.logits.float().sigmoid().cpu()  # [B, boxes, max_text_len]
        boxes = out.pred_boxes.float().cpu()  # [B, boxes, 4] cxcywh relative to the image itself
        results = []
        for b, (_, token_idx) in enumerate(prompts):
            per_phrase = [logits[b, :, idx].max(dim=-1).values if idx else torch.zeros(logits.shape[1])
                          for idx in token_idx]  # a phrase cut off by truncation scores 0
            scores, labels = torch.stack(per_phrase, dim=-1).max(dim=-1)
            cx, cy, w, h = boxes[b].unbind(-1)
            xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
            results.append([Detection(int(lab), float(s), tuple(float(v) for v in box))  # type: ignore[arg-type]
                            for s, lab, box in zip(scores, labels, xyxy, strict=True)])
        return results

    @torch.no_grad()
    def _batch_owl(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]) -> list[list[Detection]]:
        inputs = self.processor(text=[list(q) for q in queries], images=list(images), return_tensors="pt",
                                padding="max_length", truncation=True, max_length=self.max_text).to(self.device)
        out = self.model(**inputs)
        logits = out.logits.float().cpu()  # [B, patches, max_queries]
        boxes = out.pred_boxes.float().cpu()  # [B, patches, 4] cxcywh, relative to the model input
        results = []
        for b, (img, q) in enumerate(zip(images, queries, strict=True)):
            probs = logits[b, :, : len(q)].sigmoid()  # padded queries are ignored
            scores, labels = probs.max(dim=-1)
            cx, cy, w, h = boxes[b].unbind(-1)
            xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
            if self.model_type == "owlv2":  # OWLv2 pads to a square (bottom/right) before resizing
                side = max(img.size)
                xyxy = xyxy * torch.tensor([side / img.width, side / img.height] * 2)
            results.append([Detection(int(lab), float(s), tuple(float(v) for v in box))  # type: ignore[arg-type]
                            for s, lab, box in zip(scores, labels, xyxy, strict=True)])
        return results

    def detect(self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]) -> list[list[Detection] | str]:
        out: list[list[Detection] | str] = [[] for _ in images]
        todo = [i for i, q in enumerate(queries) if q]
        for rng in _batches(len(todo), self.cfg.batch_size):
            idx = [todo[i] for i in rng]
            try:
                found = self._batch([images[i] for i in idx], [queries[i] for i in idx])
            except Exception as e:  # a failing batch is quarantined, never silently emptied
                for i in idx:
                    out[i] = f"boxes/hf_local: {type(e).__name__}: {e}"
                continue
            for i, dets in zip(idx, found, strict=True):
                out[i] = dets
        return out


class HFLocalCaptioner:
    def __init__(self, cfg: CaptionConfig, device: str = "cpu"):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        assert cfg.model_dir is not None
        self.cfg, self.device = cfg, device
        self.processor = AutoProcessor.from_pretrained(cfg.model_dir, backend="pil")
        self.model = AutoModelForImageTextToText.from_pretrained(cfg.model_dir).to(device).eval()  # type: ignore[arg-type]
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # decoder-only generation needs left padding in a batch
        self.prov = {"backend": "hf_local", "model": str(cfg.model_dir), "prompt_version": cfg.prompt_version,
                     "model_type": self.model.config.model_type}

    def _prompt(self) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.cfg.prompt_template}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    @torch.no_grad()
    def _batch(self, images: Sequence[Image.Image]) -> list[str]:
        prompt = self._prompt()
        inputs = self.processor(images=list(images), text=[prompt] * len(images), return_tensors="pt",
                                padding=True).to(self.device)
        out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [clean_text(t) for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    def caption(self, images: Sequence[LoadedImage]) -> list[CaptionResult]:
        out: list[CaptionResult] = []
        for rng in _batches(len(images), self.cfg.batch_size):
            batch = [images[i] for i in rng]
            try:
                texts = self._batch([b.image for b in batch])
            except Exception as e:  # the whole batch goes to quarantine with the reason
                out.extend(CaptionResult(error=f"captions/hf_local: {type(e).__name__}: {e}") for _ in batch)
                continue
            out.extend(finish(t, self.cfg, self.prov) for t in texts)
        return out
