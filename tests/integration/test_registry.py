"""Registry: pyfunc round trip through models:/NAME@alias, challenger/champion promotion by metric."""

from __future__ import annotations

import base64
import io

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from fgclip_core.model import FGCLIPModel, ImageProcessor, load_tokenizer
from fgclip_core.registry import CHALLENGER, CHAMPION, embeddings, load_embedder, promote, register_checkpoint


@pytest.fixture()
def tracking_uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # artifacts land under tmp_path/mlruns
    return uri


def test_register_promote_and_load_champion(tiny_checkpoint_dir, tracking_uri):
    v1 = register_checkpoint(tiny_checkpoint_dir, "fgclip-test", metrics={"fgovd/accuracy": 0.40},
                             tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    assert str(client.get_model_version_by_alias("fgclip-test", CHALLENGER).version) == v1.version
    d1 = promote("fgclip-test", v1.version, "fgovd/accuracy", tracking_uri=tracking_uri)
    assert d1.promoted and d1.champion_version is None

    v2 = register_checkpoint(tiny_checkpoint_dir, "fgclip-test", metrics={"fgovd/accuracy": 0.35},
                             tracking_uri=tracking_uri)
    d2 = promote("fgclip-test", v2.version, "fgovd/accuracy", tracking_uri=tracking_uri)
    assert not d2.promoted and d2.champion_value == pytest.approx(0.40)
    assert str(client.get_model_version_by_alias("fgclip-test", CHAMPION).version) == v1.version
    assert str(client.get_model_version_by_alias("fgclip-test", CHALLENGER).version) == v2.version

    v3 = register_checkpoint(tiny_checkpoint_dir, "fgclip-test", metrics={"fgovd/accuracy": 0.55},
                             tracking_uri=tracking_uri)
    assert promote("fgclip-test", v3.version, "fgovd/accuracy", tracking_uri=tracking_uri).promoted
    assert str(client.get_model_version_by_alias("fgclip-test", CHAMPION).version) == v3.version

    # The champion loads through MLflow alone and embeds exactly like the checkpoint it wraps.
    pyfunc = load_embedder("models:/fgclip-test@champion")
    img = Image.new("RGB", (50, 40), (200, 30, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    frame = pd.DataFrame({"text": ["a red square", None], "image": [None, base64.b64encode(buf.getvalue()).decode()]})
    got = embeddings(pyfunc.predict(frame, params={"text_mode": "short"}))
    model = FGCLIPModel.from_pretrained(tiny_checkpoint_dir).eval()
    with torch.no_grad():
        t = model.get_text_features(load_tokenizer(tiny_checkpoint_dir).encode(["a red square"], mode="short"),
                                    walk_short_pos=True)
        i = model.get_image_features(ImageProcessor.from_pretrained(tiny_checkpoint_dir)([img]))
    want = torch.nn.functional.normalize(torch.cat([t, i]), dim=-1).numpy()
    assert got.shape == want.shape
    assert abs(got - want).max() < 1e-5


def test_promote_requires_the_metric(tiny_checkpoint_dir, tracking_uri):
    v = register_checkpoint(tiny_checkpoint_dir, "fgclip-nometric", tracking_uri=tracking_uri)
    with pytest.raises(ValueError, match=r"metric\.fgovd/accuracy"):
        promote("fgclip-nometric", v.version, "fgovd/accuracy", tracking_uri=tracking_uri)


def test_register_rejects_a_non_checkpoint(tmp_path, tracking_uri):
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        register_checkpoint(tmp_path, "x", tracking_uri=tracking_uri)


def test_metric_names_with_at_sign_are_stored_and_compared(tiny_checkpoint_dir, tracking_uri):
    # fgclip eval names recall metrics i2t_R@1; MLflow forbids '@' in metric and tag names.
    v = register_checkpoint(tiny_checkpoint_dir, "fgclip-at", metrics={"coco/i2t_R@1": 50.0},
                            tracking_uri=tracking_uri)
    d = promote("fgclip-at", v.version, "coco/i2t_R@1", tracking_uri=tracking_uri)
    assert d.promoted and d.challenger_value == 50.0


def test_download_checkpoint_gives_back_the_registered_folder(tiny_checkpoint_dir, tracking_uri, tmp_path):
    from fgclip_core.registry import download_checkpoint

    v = register_checkpoint(tiny_checkpoint_dir, "fgclip-dl", tracking_uri=tracking_uri)
    got = download_checkpoint("fgclip-dl", v.version, tmp_path / "dl", tracking_uri=tracking_uri)
    names = sorted(p.name for p in tiny_checkpoint_dir.iterdir())
    assert sorted(p.name for p in got.iterdir()) == names
    assert all((got / n).read_bytes() == (tiny_checkpoint_dir / n).read_bytes() for n in names)
