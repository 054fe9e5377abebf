"""MLflow model registry: log an exported FG-CLIP checkpoint as a pyfunc model, register it under the
alias ``challenger``, and promote it to ``champion`` when its gate metric beats the current champion.

MLflow 3 aliases replace stages: ``models:/NAME@champion`` is what serving loads. The pyfunc wraps our
own loader (``FGCLIPModel.from_pretrained`` on the checkpoint shipped as an artifact), so a registered
model loads back without this repository's training code being importable beyond ``fgclip_core``.

Input of the pyfunc: a DataFrame with a ``text`` column and/or an ``image`` column (base64-encoded
image bytes); each row is embedded as an image when ``image`` is set, else as a text. Param
``text_mode``: ``long`` (248 tokens, ``text_filip_projection``) or ``short`` (77, ``text_projection``).
Output: a DataFrame with ``kind`` and ``embedding`` (L2-normalised floats).

An HTTP tracking server is probed first and every MLflow call runs with bounded retries
(``fgclip_core.mlflow_http``): an unreachable server fails in seconds with one line naming the
(masked) URI, before the checkpoint is loaded.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.pyfunc import PyFuncModel, PythonModel

from fgclip_core.errors import UserError
from fgclip_core.eval.protocol import gate_comparable
from fgclip_core.mlflow_http import bounded_http, keep_credentials_off_stdout, require_reachable

log = logging.getLogger(__name__)

class RegistryError(ValueError, UserError):
    """A registry request that cannot be carried out (e.g. the version has no such metric)."""


CHALLENGER = "challenger"
CHAMPION = "champion"
PIP_REQUIREMENTS = ["torch==2.13.0", "transformers>=5.20,<6", "safetensors", "pillow", "numpy", "pandas"]


class FGCLIPPyfunc(PythonModel):
    """Embeds images and texts with an FG-CLIP checkpoint shipped as the artifact ``checkpoint``."""

    def load_context(self, context: Any) -> None:
        from fgclip_core.model import FGCLIPModel, ImageProcessor, load_tokenizer

        ckpt = context.artifacts["checkpoint"]
        self.model = FGCLIPModel.from_pretrained(ckpt).eval()
        self.tokenizer = load_tokenizer(ckpt)
        self.processor = ImageProcessor.from_pretrained(ckpt)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import torch
        from PIL import Image

        mode = (params or {}).get("text_mode", "long")
        if mode not in ("long", "short"):
            raise ValueError(f"text_mode must be 'long' or 'short', got {mode!r}")
        images = model_input["image"] if "image" in model_input else pd.Series([None] * len(model_input))
        texts = model_input["text"] if "text" in model_input else pd.Series([None] * len(model_input))
        kinds, rows_img, rows_txt, pil, txt = [], [], [], [], []
        for i, (img, t) in enumerate(zip(images, texts, strict=True)):
            if isinstance(img, str) and img:
                try:
                    pil.append(Image.open(io.BytesIO(base64.b64decode(img))).convert("RGB"))
                except Exception as e:  # name the row: a serving client must see which input was bad
                    raise ValueError(f"row {i}: image is not a decodable base64 image: {e}") from e
                rows_img.append(i)
                kinds.append("image")
            elif isinstance(t, str) and t.strip():
                txt.append(t)
                rows_txt.append(i)
                kinds.append("text")
            else:
                raise ValueError(f"row {i}: needs a non-empty 'text' or an 'image'")
        out = [None] * len(model_input)
        with torch.no_grad():
            if pil:
                emb = self.model.get_image_features(self.processor(pil))
                for r, vec in zip(rows_img, torch.nn.functional.normalize(emb, dim=-1), strict=True):
                    out[r] = vec.tolist()
            if txt:
                ids = self.tokenizer.encode(txt, mode=mode)
                emb = self.model.get_text_features(ids, walk_short_pos=(mode == "short"))
                for r, vec in zip(rows_txt, torch.nn.functional.normalize(emb, dim=-1), strict=True):
                    out[r] = vec.tolist()
        return pd.DataFrame({"kind": kinds, "embedding": out})


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    model_uri: str
    run_id: str


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    metric: str
    challenger_version: str
    challenger_value: float
    champion_version: str | None
    champion_value: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _example_input(checkpoint_dir: Path) -> pd.DataFrame:
    from fgclip_core.model import ImageProcessor

    size = ImageProcessor.from_pretrained(checkpoint_dir).size
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (120, 80, 40)).save(buf, format="PNG")
    return pd.DataFrame({"text": ["a photo of a brown square", None],
                         "image": [None, base64.b64encode(buf.getvalue()).decode()]})


def register_checkpoint(checkpoint_dir: str | Path, name: str, *, metrics: dict[str, float] | None = None,
                        tags: dict[str, str] | None = None, tracking_uri: str | None = None,
                        run_id: str | None = None) -> RegisteredVersion:
    """Log ``checkpoint_dir`` as a pyfunc model, register it as a new version of ``name`` and give it the
    ``challenger`` alias. ``metrics`` (e.g. evaluation results) are logged on the run and as version tags,
    which is what :func:`promote` compares."""
    ckpt = Path(checkpoint_dir)
    if not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"{ckpt}: not an FG-CLIP checkpoint directory (no config.json)")
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    keep_credentials_off_stdout(mlflow.get_tracking_uri())
    require_reachable(mlflow.get_tracking_uri())
    with bounded_http():
        return _register(ckpt, name, metrics, tags, run_id)


def _register(ckpt: Path, name: str, metrics: dict[str, float] | None, tags: dict[str, str] | None,
              run_id: str | None) -> RegisteredVersion:
    client = MlflowClient()
    example = _example_input(ckpt)
    wrapper = FGCLIPPyfunc()
    wrapper.load_context(type("Ctx", (), {"artifacts": {"checkpoint": str(ckpt)}})())
    signature = infer_signature(example, wrapper.predict(None, example), params={"text_mode": "long"})
    with mlflow.start_run(run_id=run_id) as run:
        for k, v in (metrics or {}).items():
            mlflow.log_metric(_metric_key(k), float(v))
        info = mlflow.pyfunc.log_model(
            name="fgclip", python_model=str(Path(__file__).with_name("registry_pyfunc.py")),
            artifacts={"checkpoint": str(ckpt)}, signature=signature,
            input_example=example, pip_requirements=PIP_REQUIREMENTS, registered_model_name=name)
    version = _version_of(client, name, info.model_uri, run.info.run_id)
    version_tags = dict(tags or {})
    version_tags.update({f"metric.{_metric_key(k)}": str(float(v)) for k, v in (metrics or {}).items()})
    for key, text in version_tags.items():
        client.set_model_version_tag(name, version, key, text)
    client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("registered %s version %s as @%s", name, version, CHALLENGER)
    return RegisteredVersion(name=name, version=version, model_uri=f"models:/{name}/{version}", run_id=run.info.run_id)


def _metric_key(k: str) -> str:
    # MLflow metric and tag names allow alphanumerics, _ - . / : and spaces; '@' (as in R@1) is not allowed.
    return k.replace("@", "_at_")


def _version_of(client: MlflowClient, name: str, model_uri: str, run_id: str) -> str:
    versions = client.search_model_versions(f"name='{name}'")
    mine = [v for v in versions if v.run_id == run_id]
    if not mine:
        raise RuntimeError(f"registered model {name!r}: no version from run {run_id} ({model_uri})")
    return str(max(int(v.version) for v in mine))


def _version_metric(client: MlflowClient, name: str, version: str, metric: str) -> float | None:
    raw = client.get_model_version(name, version).tags.get(f"metric.{_metric_key(metric)}")
    return None if raw is None else float(raw)


def promote(name: str, version: str, metric: str, *, higher_is_better: bool = True, min_delta: float = 0.0,
            tracking_uri: str | None = None) -> PromotionDecision:
    """Give ``version`` the ``champion`` alias if its ``metric`` beats the champion's by more than
    ``min_delta`` (or there is no champion yet). The decision is written as version tags."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    keep_credentials_off_stdout(mlflow.get_tracking_uri())
    require_reachable(mlflow.get_tracking_uri())
    with bounded_http():
        return _promote(name, version, metric, higher_is_better, min_delta)


def _promote(name: str, version: str, metric: str, higher_is_better: bool, min_delta: float) -> PromotionDecision:
    client = MlflowClient()
    value = _version_metric(client, name, version, metric)
    if value is None or math.isnan(value):
        raise RegistryError(f"{name} version {version} has no tag metric.{_metric_key(metric)}: "
                         "register it with that metric")
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champion = None
    champ_version = str(champion.version) if champion else None
    champ_value = _version_metric(client, name, champ_version, metric) if champ_version else None
    if champ_version == str(version):
        decision = PromotionDecision(False, "already champion", metric, str(version), value, champ_version, champ_value)
    elif champ_value is None:
        decision = PromotionDecision(True, "no champion with this metric yet", metric, str(version), value,
                                     champ_version, champ_value)
    elif not gate_comparable(client.get_model_version(name, str(version)).tags,
                             client.get_model_version(name, str(champ_version)).tags, metric):
        decision = PromotionDecision(False, "evaluation protocol differs from the champion's: not compared",
                                     metric, str(version), value, champ_version, champ_value)
    else:
        gain = (value - champ_value) if higher_is_better else (champ_value - value)
        better = gain > min_delta
        reason = f"{metric} {value:.4f} vs champion {champ_value:.4f} (gain {gain:+.4f}, needs > {min_delta})"
        decision = PromotionDecision(better, reason, metric, str(version), value, champ_version, champ_value)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_model_version_tag(name, str(version), "promotion", json.dumps(decision.to_dict()))
    log.info("promotion of %s v%s: %s (%s)", name, version, decision.promoted, decision.reason)
    return decision


def load_embedder(model_uri: str) -> PyFuncModel:
    """``models:/NAME@champion`` (or any model URI) as a pyfunc."""
    return mlflow.pyfunc.load_model(model_uri)


def embeddings(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(frame["embedding"].tolist(), dtype=np.float32)
