"""`fgclip annotate` subcommands that reach a server or build models: negatives with the LLM backend
against the loopback endpoint, and the tiny-model builder feeding a fully local pipeline run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from fgclip_core.annotate.pipeline import read_records
from fgclip_core.cli import cli

pytestmark = pytest.mark.integration


def test_negatives_llm_backend_and_quarantine(openai_server, tmp_path):
    def responder(req):
        text = req["messages"][0]["content"][0]["text"]
        expr = text.split('"')[1]
        noun = expr.split()[-1]
        colours = ["red", "blue", "green", "pink", "black", "white", "grey", "brown", "orange", "purple", "tan"]
        return "\n".join(f"{i}. a {c} {noun}" for i, c in enumerate(colours, 1))

    openai_server.reset(responder=responder, always={"broken umbrella": "500"})
    src = tmp_path / "in.txt"
    src.write_text("a yellow cup\na broken umbrella\na red kite\n")
    out = tmp_path / "neg.jsonl"
    res = CliRunner().invoke(cli, ["annotate", "negatives", "--expressions", str(src), "--out", str(out),
                                   "--backend", "llm", "-n", "10", "--set", f"endpoint.base_url={openai_server.url}",
                                   "--set", "endpoint.max_retries=1", "--set", "endpoint.backoff_base_s=0.01"])
    assert res.exit_code == 1, res.output  # one expression failed: said, and non-zero
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["expression"] for r in rows] == ["a yellow cup", "a broken umbrella", "a red kite"]
    assert len(rows[0]["negatives"]) == 10 and "a red cup" in rows[0]["negatives"]
    assert "a red kite" not in rows[2]["negatives"] and len(rows[2]["negatives"]) == 10
    assert rows[1]["negatives"] == []
    [q] = [json.loads(ln) for ln in (tmp_path / "neg.jsonl.quarantine.jsonl").read_text().splitlines()]
    assert q["expression"] == "a broken umbrella" and "HTTP 500" in q["reason"]


def test_tiny_models_drive_a_fully_local_pipeline(tmp_path):
    runner = CliRunner()
    for kind in ("owlv2", "llava"):
        res = runner.invoke(cli, ["annotate", "build-tiny", "--kind", kind, "--out", str(tmp_path / kind)])
        assert res.exit_code == 0, res.output
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (48 + 8 * i, 40), (60 * i, 120, 200)).save(images / f"im{i}.png")
    res = runner.invoke(cli, ["annotate", "--images", str(images), "--out", str(tmp_path / "out"), "--no-progress",
                              "--set", "captions.backend=hf_local", "--set", f"captions.model_dir={tmp_path / 'llava'}",
                              "--set", "captions.max_new_tokens=12",
                              "--set", "boxes.backend=hf_local", "--set", f"boxes.model_dir={tmp_path / 'owlv2'}"])
    assert res.exit_code == 0, res.output
    recs = read_records(str(tmp_path / "out"))
    assert [r.f_path for r in recs] == ["im0.png", "im1.png", "im2.png"]
    assert all(r.caption and r.provenance["caption"]["backend"] == "hf_local" for r in recs)
    assert all(r.provenance["bbox_info"]["backend"] == "hf_local" for r in recs)
