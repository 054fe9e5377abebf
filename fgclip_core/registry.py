"""MLflow model registry: log an exported FG-CLIP checkpoint as a pyfunc model, register it under the
alias ``challenger``, and promote it to ``champion`` when its gate metric beats the current champion.

MLflow 3 aliases replace stages: ``models:/NAME@champion`` is what serving loads. The pyfunc wraps our
own loader (``FGCLIPModel.from_pretrained`` on the checkpoint shipped as an artifact), so a registered
model loads back without this repository's training code being importable beyond ``fgclip_core``.

Input of the pyfunc: a DataFrame with a ``text`` column and/or an ``image`` column (signature type
``binary``: base64 in a JSON request; a local DataFrame may hold raw bytes or base64 text); each row is
embedded as an image when ``image`` is set, else as a text. MLflow's JSON parser refuses nulls in a
binary column, so a served request sends text rows and image rows separately. Param
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
            if isinstance(img, str | bytes | bytearray) and img:
                # a str is base64 text (a local DataFrame); bytes are what MLflow's JSON serving makes of
                # the base64 a client sent for the `binary` column of the signature
                raw = base64.b64decode(img) if isinstance(img, str) else bytes(img)
                try:
                    pil.append(Image.open(io.BytesIO(raw)).convert("RGB"))
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
    # Raw bytes for the `binary` image column (MLflow writes them as base64 in the serving example). One
    # image row: MLflow's JSON parser refuses a null in a binary column, so a serving request sends its
    # text rows and its image rows apart (each column is optional).
    return pd.DataFrame({"image": [buf.getvalue()]})


def register_checkpoint(checkpoint_dir: str | Path, name: str, *, metrics: dict[str, float] | None = None,
                        tags: dict[str, str] | None = None, tracking_uri: str | None = None,
                        run_id: str | None = None) -> RegisteredVersion:
    """Log ``checkpoint_dir`` as a pyfunc model, register it as a new version of ``name`` and give it the
    ``challenger`` alias. ``metrics`` (e.g. evaluation results) are logged on the run and as version tags,
    which is what :func:`promote` compares. ``checkpoint_dir``: a local folder or a URL (``s3://``), which
    is fetched into the local checkpoint cache first (``fgclip_core.model.checkpoint.resolve_local``)."""
    from fgclip_core.model.checkpoint import resolve_local

    ckpt = resolve_local(checkpoint_dir)
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
    signature = _signature(example, wrapper.predict(None, example))
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


def _signature(example: pd.DataFrame, output: pd.DataFrame) -> Any:
    """Inputs: optional ``text`` (string) and ``image`` (MLflow ``binary``: base64 in JSON requests;
    a local DataFrame may hold base64 text or raw bytes); output inferred; param ``text_mode``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inferred = infer_signature(example, output, params={"text_mode": "long"})
    inputs = Schema([ColSpec("string", "text", required=False), ColSpec("binary", "image", required=False)])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs, params=inferred.params)


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


# ---- gated promotion (fgclip_core.promotion holds the gates) ---------------------------------------
BENCHMARK_METRICS_TAG = "fgclip.eval."   # + first 16 hex of the benchmark set's hash: JSON metrics on it
DECISION_TAG = "promotion.decision"
GATES_TAG = "promotion.gates"


def benchmark_tag(benchmarks_sha256: str) -> str:
    return BENCHMARK_METRICS_TAG + benchmarks_sha256[:16]


def _client(tracking_uri: str | None) -> MlflowClient:
    return MlflowClient(tracking_uri) if tracking_uri else MlflowClient()


def champion_version(name: str, tracking_uri: str | None = None) -> str | None:
    try:
        return str(_client(tracking_uri).get_model_version_by_alias(name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def record_benchmark_metrics(name: str, version: str, benchmarks_sha256: str, metrics: dict[str, float],
                             tracking_uri: str | None = None) -> None:
    """Store ``metrics`` of ``version`` measured on the benchmark set ``benchmarks_sha256`` (a version
    may be evaluated on several benchmark versions over its life: one tag each)."""
    _client(tracking_uri).set_model_version_tag(name, str(version), benchmark_tag(benchmarks_sha256),
                                                json.dumps({k: float(v) for k, v in sorted(metrics.items())}))


def metrics_on_benchmarks(name: str, version: str, benchmarks_sha256: str,
                          tracking_uri: str | None = None) -> dict[str, float] | None:
    raw = _client(tracking_uri).get_model_version(name, str(version)).tags.get(benchmark_tag(benchmarks_sha256))
    return None if raw is None else {k: float(v) for k, v in json.loads(raw).items()}


def download_checkpoint(name: str, version: str, dst: str | Path, tracking_uri: str | None = None) -> Path:
    """The FG-CLIP checkpoint folder a registered version wraps, downloaded under ``dst``."""
    from mlflow.artifacts import download_artifacts

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    from mlflow.models import Model

    root = Path(download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))
    # the pyfunc flavour maps the artifact key to its folder (named after the logged checkpoint folder)
    artifacts = Model.load(str(root / "MLmodel")).flavors.get("python_function", {}).get("artifacts", {})
    rel = (artifacts.get("checkpoint") or {}).get("path")
    ckpt = (root / rel).resolve() if rel else None
    if ckpt is None or not ckpt.is_relative_to(root.resolve()) or not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"models:/{name}/{version}: no FG-CLIP checkpoint artifact ({rel!r})")
    return ckpt


@dataclass(frozen=True)
class GatedDecision:
    promoted: bool
    decision: str
    challenger_version: str
    champion_version: str | None
    gates: list[Any]   # promotion.GateResult
    table: str         # Markdown, one row per gate


def promote_gated(name: str, version: str, metrics: dict[str, float], gates: Any, *, benchmarks_sha256: str,
                  champion_metrics: dict[str, float] | None = None,
                  tracking_uri: str | None = None) -> GatedDecision:
    """Move ``champion`` to ``version`` only when every gate passes (``promotion.Gates``).

    The champion is compared on the same benchmark versions: ``champion_metrics`` when the caller
    re-evaluated it on ``benchmarks_sha256``, else what the champion recorded for that hash
    (:func:`record_benchmark_metrics`); with neither, the champion gates fail and the champion stays.
    The decision and the JSON of every gate go to the version's tags; one ``gate.<kind>.<metric>``
    tag per gate says pass or fail."""
    from fgclip_core.promotion import evaluate_gates, gate_table_markdown

    client = _client(tracking_uri)
    version = str(version)
    champ = champion_version(name, tracking_uri)
    if champ == version:
        return GatedDecision(False, "already champion", version, champ, [], "")
    if champ is not None and champion_metrics is None:
        champion_metrics = metrics_on_benchmarks(name, champ, benchmarks_sha256, tracking_uri)
    results = evaluate_gates(gates, metrics, champion_metrics, has_champion=champ is not None,
                             comparable=champion_metrics is not None)
    failed = [r for r in results if not r.passed]
    promoted = not failed
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        decision = f"promoted to {CHAMPION}" + (f" (replaces v{champ})" if champ else " (first champion)")
    else:
        kept = f"v{champ} stays {CHAMPION}" if champ else f"no {CHAMPION}"
        decision = f"not promoted: {len(failed)} gate(s) failed ({', '.join(f'{r.gate}:{r.metric}' for r in failed)}); {kept}"
    client.set_model_version_tag(name, version, DECISION_TAG, decision)
    client.set_model_version_tag(name, version, GATES_TAG, json.dumps([r.to_dict() for r in results]))
    for r in results:
        client.set_model_version_tag(name, version, f"gate.{r.gate}.{_metric_key(r.metric)}",
                                     "pass" if r.passed else f"fail: {r.detail}")
    log.info("promotion of %s v%s: %s", name, version, decision)
    return GatedDecision(promoted, decision, version, champ, results, gate_table_markdown(results))
