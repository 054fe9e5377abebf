"""Build each stage's backend from the config (heavy backends are imported only when chosen)."""

from __future__ import annotations

from fgclip_core.annotate.boxes import Detector, EndpointDetector
from fgclip_core.annotate.captions import Captioner, EndpointCaptioner, SidecarCaptioner
from fgclip_core.annotate.config import AnnotateConfig
from fgclip_core.annotate.metadata_boxes import MetadataRegions, metadata_url
from fgclip_core.annotate.negatives import NegativeGenerator, RuleNegatives


def build_captioner(cfg: AnnotateConfig, images_root: str) -> Captioner:
    c = cfg.captions
    if c.backend == "sidecar":
        return SidecarCaptioner(c, images_root)
    if c.backend == "openai":
        return EndpointCaptioner(c, cfg.endpoint)
    from fgclip_core.annotate.backends.hf_local import HFLocalCaptioner

    return HFLocalCaptioner(c, device=c.device)


def build_detector(cfg: AnnotateConfig) -> Detector | None:
    b = cfg.boxes
    if b.backend in ("none", "metadata"):
        return None  # metadata: no detector, see build_region_metadata
    if b.backend == "openai":
        return EndpointDetector(b, cfg.endpoint)
    from fgclip_core.annotate.backends.hf_local import HFZeroShotDetector

    return HFZeroShotDetector(b, device=b.device)


def build_region_metadata(cfg: AnnotateConfig) -> MetadataRegions | None:
    """The boxes that come with the images (``boxes.backend: metadata``), else None."""
    if cfg.boxes.backend != "metadata":
        return None
    url = metadata_url(cfg)
    assert url is not None  # AnnotateConfig validates this
    return MetadataRegions(cfg.boxes, url)


def build_negatives(cfg: AnnotateConfig) -> NegativeGenerator:
    n = cfg.negatives
    if n.backend == "rules":
        return RuleNegatives(n=n.n, seed=n.seed, difficulty=n.difficulty)
    from fgclip_core.annotate.llm_negatives import LLMNegatives

    return LLMNegatives(n, cfg.endpoint)
