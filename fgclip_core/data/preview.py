"""Markdown previews a person reads next to a data set: a picture with its boxes drawn, its captions,
its region captions and hard negatives next to their positive, and a table of quarantined items.

Pictures are embedded as PNG data URIs (downscaled, palette-quantised to keep them small), so the
Markdown stands alone (the Dagster UI shows it as asset metadata). Text from records is escaped.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from fgclip_core import storage
from fgclip_core.data.records import FineHARDRecord

COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
MAX_SIDE = 360


def md_escape(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    for ch in "\\`*_[]<>|#":
        text = text.replace(ch, "\\" + ch)
    return text


def png_data_uri(image: Image.Image, max_side: int = MAX_SIDE, colours: int = 128) -> str:
    img = image.convert("RGB")
    img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.quantize(colours).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def open_image(url: str) -> Image.Image:
    fs, path = storage.filesystem(url)
    with fs.open(path, "rb") as f:
        img = Image.open(io.BytesIO(f.read()))
        img.load()
    return ImageOps.exif_transpose(img).convert("RGB")


def draw_regions(image: Image.Image, record: FineHARDRecord, max_regions: int, max_side: int = MAX_SIDE
                 ) -> Image.Image:
    """A copy of ``image`` (downscaled) with each region's box and number drawn."""
    img = image.convert("RGB")
    img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    w, h = img.size
    for i, region in enumerate(record.bbox_info[:max_regions]):
        x1, y1, x2, y2 = region.bbox
        box = (x1 * w, y1 * h, x2 * w, y2 * h)
        colour = COLOURS[i % len(COLOURS)]
        draw.rectangle(box, outline=colour, width=3)
        label = f"{i + 1} {region.short_expr}"[:22]
        tx, ty = box[0] + 2, max(0, box[1] - 12)
        left, top, right, bottom = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colour)
        draw.text((tx, ty), label, fill="white", font=font)
    return img


def record_preview_md(record: FineHARDRecord, image_url: str | None, *, max_regions: int = 4,
                      max_negatives: int = 3) -> str:
    """What the record holds so far: the picture (with boxes when it has regions), captions, regions
    with their long caption and a few hard negatives next to the positive."""
    lines = [f"**{md_escape(record.id)}** (`{md_escape(record.f_path, 120)}`)", ""]
    if image_url is not None:
        try:
            img = open_image(image_url)
            shown = draw_regions(img, record, max_regions) if record.bbox_info else img
            lines += [f"![{md_escape(record.id, 60)}]({png_data_uri(shown)})", ""]
        except Exception as e:  # a preview never fails the asset
            lines += [f"(picture not shown: {md_escape(f'{type(e).__name__}: {e}', 200)})", ""]
    if record.caption:
        lines += [f"**Long caption:** {md_escape(record.caption, 800)}", ""]
    if record.short_caption:
        lines += [f"**Short caption:** {md_escape(record.short_caption)}", ""]
    if record.bbox_info:
        lines += ["| # | region (positive) | region caption | hard negatives |", "|---|---|---|---|"]
        for i, r in enumerate(record.bbox_info[:max_regions]):
            negs = "; ".join(md_escape(n, 80) for n in r.short_expr_negs[:max_negatives]) or "-"
            lines.append(f"| {i + 1} | {md_escape(r.short_expr, 80)} | {md_escape(r.long_expr, 200)} | {negs} |")
        if len(record.bbox_info) > max_regions:
            lines.append(f"\n{len(record.bbox_info) - max_regions} more region(s) not shown")
    return "\n".join(lines)


def images_preview_md(image_urls: Sequence[str], limit: int = 4) -> str:
    """A few pictures of a batch side by side (a picture that cannot be read is named instead)."""
    parts = []
    for url in image_urls[:limit]:
        name = md_escape(url.rsplit("/", 1)[-1], 80)
        try:
            parts.append(f"![{name}]({png_data_uri(open_image(url), max_side=200)})")
        except Exception as e:
            parts.append(f"({name}: not readable: {md_escape(type(e).__name__, 60)})")
    more = f"\n\n{len(image_urls) - limit} more not shown" if len(image_urls) > limit else ""
    return " ".join(parts) + more


def quarantine_md(rows: Iterable[dict[str, Any]], limit: int = 10) -> str:
    """A table of quarantined items: id, stage, reason (the first ``limit``)."""
    rows = list(rows)
    if not rows:
        return "nothing quarantined"
    lines = ["| id | stage | reason |", "|---|---|---|"]
    for r in rows[:limit]:
        # annotation rows: stage + reason; validation rows: reason (a code) + detail
        stage = r.get("stage") or f"validate: {r.get('reason', '?')}"
        why = r.get("detail") if "detail" in r else r.get("reason", "")
        lines.append(f"| {md_escape(r.get('id') or '?', 60)} | {md_escape(stage, 40)} | {md_escape(why or '', 200)} |")
    if len(rows) > limit:
        lines.append(f"\n{len(rows) - limit} more in the quarantine file")
    return "\n".join(lines)
