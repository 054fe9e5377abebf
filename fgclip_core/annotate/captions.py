"""Stage 1: a long caption per image, and a short caption derived from it (or from alt text).

Backends (all behind :class:`Captioner`):
- :class:`SidecarCaptioner`: captions that come with the images: ``<image stem>.txt`` next to the
  image, or a metadata JSONL (``file_name``/``f_path`` + ``caption``, optional ``alt_text``/
  ``short_caption``); ``ROOT/metadata.jsonl`` is used when present and no file is configured. A
  folder of JSONL files works too, so the ``records/`` of an earlier run can feed the later stages
  alone (captions are then reused, not remade);
- :class:`EndpointCaptioner`: an OpenAI-compatible endpoint serving a vision-language model;
- ``HFLocalCaptioner`` (``fgclip_core.annotate.backends.hf_local``): a local transformers model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fgclip_core.annotate.backends.openai_compat import (
    ChatJob,
    JobResult,
    OpenAICompatClient,
    image_data_url,
    user_message,
)
from fgclip_core.annotate.config import CaptionConfig, EndpointConfig
from fgclip_core.annotate.images import LoadedImage
from fgclip_core.annotate.metadata_file import iter_metadata_rows
from fgclip_core.data.errors import Reason, RecordError
from fgclip_core.data.paths import ImageRoot
from fgclip_core.storage import filesystem, join

SIDECAR_MAX_BYTES = 1 << 20   # a caption file larger than 1 MiB is not a caption

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_WS = re.compile(r"\s+")


@dataclass
class CaptionResult:
    caption: str = ""
    short_caption: str = ""
    error: str | None = None
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)


class Captioner(Protocol):
    def caption(self, images: Sequence[LoadedImage]) -> list[CaptionResult]: ...


def clean_text(text: str) -> str:
    return _WS.sub(" ", text).strip()


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(clean_text(text)) if s.strip()]


def short_caption(caption: str, max_words: int) -> str:
    """The first sentence, cut to ``max_words`` words."""
    sentences = split_sentences(caption)
    first = sentences[0] if sentences else clean_text(caption)
    words = first.split()
    return " ".join(words[:max_words]).rstrip(",;:") if len(words) > max_words else first


def finish(caption: str, cfg: CaptionConfig, prov: dict[str, Any], alt: str | None = None) -> CaptionResult:
    caption = clean_text(caption)
    if not caption:
        return CaptionResult(error="empty caption")
    alt_clean = clean_text(alt or "")
    short = alt_clean or short_caption(caption, cfg.short_caption_max_words)
    short_prov = {**prov, "derived": "alt_text" if alt_clean else "first_sentence"}
    return CaptionResult(caption, short, None, {"caption": prov, "short_caption": short_prov})


class SidecarCaptioner:
    def __init__(self, cfg: CaptionConfig, images_root: str):
        self.cfg, self.root = cfg, images_root
        self.fs, self.base = filesystem(images_root)  # one instance for every lookup (S3 ones are costly)
        self.files = ImageRoot(images_root, SIDECAR_MAX_BYTES)
        self.meta_url = cfg.metadata_file
        if self.meta_url is None and self.fs.exists(f"{self.base.rstrip('/')}/metadata.jsonl"):
            self.meta_url = join(images_root, "metadata.jsonl")
        self.meta = self._read_meta(self.meta_url) if self.meta_url else {}

    @staticmethod
    def _read_meta(url: str) -> dict[str, dict[str, Any]]:
        """One JSONL file, or every ``*.jsonl`` in a folder (e.g. the ``records/`` of an earlier run)."""
        return {m.key: m.row for m in iter_metadata_rows(url)}

    def _prov(self, source: str) -> dict[str, Any]:
        return {"backend": "sidecar", "model": source, "prompt_version": "none"}

    def _one(self, img: LoadedImage) -> CaptionResult:
        row = self.meta.get(img.ref.f_path)
        if row is not None:
            caption = row.get("caption") or row.get("long_caption") or row.get("text") or ""
            alt = row.get("short_caption") or row.get("alt_text") or row.get("alt")
            if not isinstance(caption, str) or not caption.strip():
                return CaptionResult(error=f"metadata entry for {img.ref.f_path} has no caption")
            return finish(caption, self.cfg, self._prov(f"metadata:{self.meta_url}"), alt)
        txt = img.ref.f_path.rsplit(".", 1)[0] + ".txt"
        try:   # read like an image: inside the root, a regular file, bounded (``data.paths``)
            text = self.files.read(txt, SIDECAR_MAX_BYTES).decode("utf-8")
        except RecordError as e:
            if e.reason != Reason.IMAGE_MISSING:
                return CaptionResult(error=f"sidecar {txt} refused: {e}")
        except UnicodeDecodeError as e:
            return CaptionResult(error=f"sidecar {txt} is not UTF-8: {e.reason} at byte {e.start}")
        else:
            return finish(text, self.cfg, self._prov("sidecar-txt"))
        where = f" and no entry in {self.meta_url}" if self.meta_url else ""
        return CaptionResult(error=f"no caption: no sidecar {img.ref.f_path.rsplit('.', 1)[0]}.txt{where}")

    def caption(self, images: Sequence[LoadedImage]) -> list[CaptionResult]:
        return [self._one(i) for i in images]


def _caption_parser(cfg: CaptionConfig) -> Callable[[str], str]:
    def parse(text: str) -> str:
        text = clean_text(text)
        if len(text.split()) < 3:
            raise ValueError(f"caption too short: {text!r}")
        return text

    return parse


class EndpointCaptioner:
    def __init__(self, cfg: CaptionConfig, endpoint: EndpointConfig, client: OpenAICompatClient | None = None,
                 on_done: Callable[[JobResult[str]], None] | None = None):
        self.cfg = cfg
        self.client = client or OpenAICompatClient(endpoint)
        self.on_done = on_done

    def caption(self, images: Sequence[LoadedImage]) -> list[CaptionResult]:
        parse = _caption_parser(self.cfg)

        def build(img: LoadedImage) -> Callable[[], list[dict[str, Any]]]:
            return lambda: user_message(self.cfg.prompt_template, [image_data_url(img.image, self.cfg.max_image_side)])

        jobs = [ChatJob(build(img), parse) for img in images]
        prov = self.client.provenance(self.cfg.prompt_version)
        out = []
        for res in self.client.run(jobs, self.on_done):
            if res.error is not None or res.value is None:
                out.append(CaptionResult(error=f"captions/openai: {res.error}"))
            else:
                out.append(finish(res.value, self.cfg, prov))
        return out
