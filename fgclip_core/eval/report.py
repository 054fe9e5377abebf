"""Self-contained HTML report (images inlined as base64) and a PNG summary, model vs baseline.

Sections per benchmark: the metrics table side by side with the baseline, recall@k / top-k curves,
and galleries (top retrievals for sample queries; FG-OVD boxes drawn on the image with the
positive and the negatives and their scores; classification top classes).
"""

from __future__ import annotations

import base64
import html
import io as _io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image, ImageDraw

from fgclip_core.eval import io
from fgclip_core.eval.result import SuiteResult

THUMB = 200


@dataclass
class ReportPaths:
    html: Path
    png: Path


def _png_b64(fig: plt.Figure) -> str:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img_tag(img: Image.Image | None, alt: str, border: str = "#ccc") -> str:
    if img is None:
        return f'<div class="missing" title="{html.escape(alt)}">missing image</div>'
    img = img.copy()
    img.thumbnail((THUMB, THUMB))
    buf = _io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<img src="data:image/jpeg;base64,{data}" alt="{html.escape(alt)}" title="{html.escape(alt)}" '
            f'style="border:3px solid {border}">')


def _load(location: str) -> Image.Image | None:
    return io.open_image(location)


def _with_box(location: str, bbox_xywh: list[float]) -> Image.Image | None:
    img = _load(location)
    if img is None:
        return None
    x, y, w, h = bbox_xywh
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 150))
    draw.rectangle([x, y, x + w, y + h], outline=(255, 40, 40), width=width)
    return img


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _metrics_table(res: SuiteResult, base: SuiteResult | None) -> str:
    rows = []
    for k, v in res.metrics.items():
        b = base.metrics.get(k) if base else None
        delta = "" if b is None else f"{100 * (v - b):+.2f}"
        cls = "" if b is None else ("up" if v > b else "down" if v < b else "")
        rows.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td><td>{_fmt(b)}</td>"
                    f'<td class="{cls}">{delta}</td></tr>')
    return ("<table><tr><th>metric (%)</th><th>model</th><th>baseline</th><th>&Delta;</th></tr>"
            + "".join(rows) + "</table>")


def _summary_table(pairs: list[tuple[SuiteResult, SuiteResult | None]]) -> str:
    rows = []
    for res, base in pairs:
        for k, v in res.metrics.items():
            b = base.metrics.get(k) if base else None
            cls = "" if b is None else ("up" if v > b else "down" if v < b else "")
            delta = "" if b is None else f"{100 * (v - b):+.2f}"
            rows.append(f"<tr><td>{html.escape(res.benchmark)}</td><td>{html.escape(k)}</td><td>{_fmt(v)}</td>"
                        f'<td>{_fmt(b)}</td><td class="{cls}">{delta}</td><td>{res.n}</td>'
                        f"<td>{len(res.missing_images)}</td></tr>")
    return ("<table><tr><th>benchmark</th><th>metric (%)</th><th>model</th><th>baseline</th><th>&Delta;</th>"
            "<th>n</th><th>missing images</th></tr>" + "".join(rows) + "</table>")


def _curves_figure(res: SuiteResult, base: SuiteResult | None) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, ys in res.curves.items():
        ax.plot(range(1, len(ys) + 1), ys, label=f"model {name}")
        if base and name in base.curves:
            ys_b = base.curves[name]
            ax.plot(range(1, len(ys_b) + 1), ys_b, "--", label=f"baseline {name}")
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k" if res.suite.endswith("retrieval") else "fraction correct within k")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{res.benchmark} ({res.suite})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _gallery(res: SuiteResult) -> str:
    parts = []
    for g in res.gallery:
        kind = g["kind"]
        if kind == "t2i":
            cells = "".join(
                f'<figure>{_img_tag(_load(r["image"]), r["image"], "#2a2" if r["positive"] else "#ccc")}'
                f'<figcaption>{r["score"]:.3f}</figcaption></figure>' for r in g["results"])
            parts.append(f'<div class="g"><p class="q">text &rarr; images: {html.escape(g["query"][:300])}</p>'
                         f'<div class="row">{cells}</div></div>')
        elif kind == "i2t":
            items = "".join(f'<li class="{"pos" if r["positive"] else ""}">{r["score"]:.3f} '
                            f'{html.escape(r["text"][:200])}</li>' for r in g["results"])
            parts.append(f'<div class="g row">{_img_tag(_load(g["query"]), g["query"])}'
                         f"<ol>{items}</ol></div>")
        elif kind == "fgovd":
            scored = [(g["positive_score"], g["positive"], True)]
            scored += [(s, t, False) for s, t in zip(g["negative_scores"], g["negatives"], strict=True)]
            scored.sort(key=lambda x: -x[0])
            items = "".join(f'<li class="{"pos" if p else "neg"}">{s:.3f} {html.escape(t)}</li>'
                            for s, t, p in scored)
            verdict = "correct" if g["correct"] else f"wrong (rank {g['rank'] + 1})"
            parts.append(f'<div class="g row">{_img_tag(_with_box(g["image"], g["bbox_xywh"]), g["image"])}'
                         f"<div><p>line {g['line']}: {verdict}</p><ol>{items}</ol></div></div>")
        elif kind in ("classify", "box-classify"):
            img = (_with_box(g["image"], g["bbox_xywh"]) if kind == "box-classify" else _load(g["image"]))
            items = "".join(f'<li class="{"pos" if r["class"] == g["label"] else ""}">{r["score"]:.3f} '
                            f'{html.escape(r["class"])}</li>' for r in g["results"])
            parts.append(f'<div class="g row">{_img_tag(img, g["image"])}'
                         f"<div><p>truth: {html.escape(g['label'])}</p><ol>{items}</ol></div></div>")
    return "".join(parts)


CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child{text-align:left}
.up{color:#080}.down{color:#b00}.row{display:flex;gap:.6em;align-items:flex-start;flex-wrap:wrap}
figure{margin:0;text-align:center;font-size:80%}.g{margin:.8em 0;padding:.4em;border-top:1px solid #eee}
.pos{color:#080;font-weight:bold}.neg{color:#555}.missing{width:200px;height:120px;background:#eee;
display:flex;align-items:center;justify-content:center;color:#900}.q{font-style:italic}"""


def write_report(pairs: list[tuple[SuiteResult, SuiteResult | None]], out_dir: str | Path,
                 model: str = "", baseline: str | None = None) -> ReportPaths:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for res, base in pairs:
        missing = (f'<p class="down">{len(res.missing_images)} missing image(s), e.g. '
                   f"{html.escape(res.missing_images[0])}</p>" if res.missing_images else "")
        counts = ", ".join(f"{k}: {v}" for k, v in res.counts.items())
        protocol = (f"protocol {res.protocol.get('name')}: " + ", ".join(
            f"{k}={v}" for k, v in res.protocol.get("settings", {}).items())) if res.protocol else ""
        sections.append(
            f"<h2>{html.escape(res.benchmark)} <small>({html.escape(res.suite)}, n={res.n})</small></h2>"
            f"<p>{html.escape(counts)}</p><p>{html.escape(protocol)}</p>{missing}{_metrics_table(res, base)}"
            f'<img src="data:image/png;base64,{_png_b64(_curves_figure(res, base))}" alt="curves">'
            f"<h3>Gallery</h3>{_gallery(res)}")
    summary = _summary_table(pairs)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (f"<p>model: <code>{html.escape(model)}</code><br>baseline: "
            f"<code>{html.escape(baseline or 'none')}</code><br>generated {when}</p>")
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>FG-CLIP evaluation</title>'
            f"<style>{CSS}</style></head><body><h1>FG-CLIP evaluation</h1>{head}<h2>Summary</h2>{summary}"
            f"{''.join(sections)}</body></html>")
    html_path = out / "report.html"
    html_path.write_text(page)
    png_path = out / "report.png"
    _summary_png(pairs, png_path)
    return ReportPaths(html=html_path, png=png_path)


def _summary_png(pairs: list[tuple[SuiteResult, SuiteResult | None]], path: Path) -> None:
    n = len(pairs)
    fig, axes = plt.subplots(n, 2, figsize=(11, 3.4 * n), squeeze=False)
    for row, (res, base) in enumerate(pairs):
        ax = axes[row][0]
        keys = list(res.metrics)
        xs = range(len(keys))
        width = 0.4 if base else 0.8
        ax.bar([x - (width / 2 if base else 0) for x in xs], [100 * res.metrics[k] for k in keys], width,
               label="model")
        if base:
            ax.bar([x + width / 2 for x in xs], [100 * base.metrics.get(k, 0.0) for k in keys], width,
                   label="baseline")
        ax.set_xticks(list(xs), keys, rotation=30, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(f"{res.benchmark}: metrics (%)")
        ax.legend(fontsize=7)
        ax2 = axes[row][1]
        for name, ys in res.curves.items():
            ax2.plot(range(1, len(ys) + 1), ys, label=f"model {name}")
            if base and name in base.curves:
                ax2.plot(range(1, len(base.curves[name]) + 1), base.curves[name], "--", label=f"baseline {name}")
        ax2.set_ylim(0, 1.02)
        ax2.set_xlabel("k")
        ax2.set_title(f"{res.benchmark}: @k curves")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
