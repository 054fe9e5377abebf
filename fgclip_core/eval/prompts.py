"""Prompt templates for zero-shot classifiers (CLIP's 80 ImageNet templates, or a single one) and the
built-in ImageNet-1k class names (OpenAI CLIP's names, index i = the i-th WordNet id in sorted order)."""

from __future__ import annotations

from functools import cache
from importlib import resources

N_CLIP_TEMPLATES = 80
N_IMAGENET_CLASSES = 1000


@cache
def clip_imagenet_templates() -> tuple[str, ...]:
    text = resources.files("fgclip_core.eval").joinpath("templates/clip_imagenet_templates.txt").read_text()
    templates = tuple(line for line in text.splitlines() if line.strip())
    if len(templates) != N_CLIP_TEMPLATES or not all("{}" in t for t in templates):
        raise RuntimeError(f"packaged CLIP template file is damaged ({len(templates)} templates)")
    return templates


@cache
def imagenet1k_classnames() -> tuple[str, ...]:
    text = resources.files("fgclip_core.eval").joinpath("templates/imagenet1k_classnames.txt").read_text()
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != N_IMAGENET_CLASSES:
        raise RuntimeError(f"packaged ImageNet-1k class-name file is damaged ({len(names)} names)")
    return names


def templates_for(name: str) -> tuple[str, ...]:
    if name == "clip80":
        return clip_imagenet_templates()
    if name == "simple":
        return ("a photo of a {}.",)
    if name == "none":
        return ("{}",)
    raise ValueError(f"unknown template set {name!r} (clip80, simple, none)")


def prompts_for_class(classname: str, templates: tuple[str, ...]) -> list[str]:
    return [t.format(classname) for t in templates]
