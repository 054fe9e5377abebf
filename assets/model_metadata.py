"""What the model-side assets show in the Dagster UI: loss curve, MLflow links, lineage values.

MLflow links come from the tracking URI when it is an http(s) server, or from ``MLFLOW_UI_URL`` when
the UI lives elsewhere (e.g. a SQLite store viewed with ``mlflow ui``); credentials in a URI never
reach metadata (links drop the user info; shown URIs are masked with ``fgclip_core.redact``).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from urllib.parse import quote

from dagster import MetadataValue

from fgclip_core.redact import strip_userinfo
from orchestration import settings


def mlflow_ui_base(tracking_uri: str) -> str | None:
    base = settings.mlflow_ui_url()
    if not base and tracking_uri.startswith(("http://", "https://")):
        base = tracking_uri
    return strip_userinfo(base)[0].rstrip("/") if base else None   # a link never carries credentials


def mlflow_links(tracking_uri: str, *, experiment_id: str | None = None, run_id: str | None = None,
                 model: tuple[str, str] | None = None, prefix: str = "mlflow") -> dict[str, MetadataValue]:
    """``MetadataValue.url`` entries for a run, its experiment and a model version (when a UI is known)."""
    base = mlflow_ui_base(tracking_uri)
    if base is None:
        return {}
    out: dict[str, MetadataValue] = {}
    if experiment_id:
        out[f"{prefix}_experiment_url"] = MetadataValue.url(f"{base}/#/experiments/{experiment_id}")
        if run_id:
            out[f"{prefix}_run_url"] = MetadataValue.url(f"{base}/#/experiments/{experiment_id}/runs/{run_id}")
    if model:
        name, version = model
        out[f"{prefix}_model_version_url"] = MetadataValue.url(f"{base}/#/models/{quote(name)}/versions/{version}")
    return out


def read_loss_curve(metrics_jsonl: Path) -> list[tuple[int, float]]:
    """(step, loss) from the trainer's local metrics copy (``<run>/tracking/metrics.jsonl``)."""
    if not metrics_jsonl.is_file():
        return []
    points = []
    for line in metrics_jsonl.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "loss" in row and "step" in row:
            points.append((int(row["step"]), float(row["loss"])))
    return points


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def loss_curve_png(points: list[tuple[int, float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 2.6), dpi=80)
    ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def loss_curve_markdown(points: list[tuple[int, float]]) -> str:
    if not points:
        return "no loss values were logged"
    table = " ".join(f"{s}: {v:.4f}" for s, v in points[-10:])
    return png_markdown(loss_curve_png(points), "training loss") + f"\n\nlast steps: {table}"


def code_version() -> str:
    from fgclip_core.train.tracking import git_commit

    return git_commit(Path(__file__).resolve().parent) or "unknown"


def manifests_json(trained_on: dict[str, str]) -> str:
    """The one string for shard-manifest hashes, in Dagster metadata and MLflow tags alike."""
    return json.dumps(dict(sorted(trained_on.items())), separators=(",", ":"))
