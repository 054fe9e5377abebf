"""OpenAI-compatible client and endpoint backends against a real loopback HTTP server.

Faults (500s, timeouts, malformed JSON) must be retried, and what still fails must come back with
a reason: count in == results out, nothing lost.
"""

from __future__ import annotations

import random

import pytest
from PIL import Image

from fgclip_core.annotate.backends.openai_compat import ChatJob, OpenAICompatClient, user_message
from fgclip_core.annotate.boxes import EndpointDetector, parse_grounding
from fgclip_core.annotate.captions import EndpointCaptioner
from fgclip_core.annotate.config import BoxConfig, CaptionConfig, EndpointConfig, NegativesConfig
from fgclip_core.annotate.images import ImageRef, LoadedImage
from fgclip_core.annotate.llm_negatives import LLMNegatives

pytestmark = pytest.mark.integration


def endpoint(srv, **kw) -> EndpointConfig:
    base = {"base_url": srv.url, "model": "loopback-vlm", "concurrency": 4, "timeout_s": 2.0, "max_retries": 3,
            "backoff_base_s": 0.01, "backoff_max_s": 0.05}
    return EndpointConfig(**{**base, **kw})


def images(n: int) -> list[LoadedImage]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        img = Image.new("RGB", (40 + i, 30), tuple(rng.randrange(256) for _ in range(3)))
        out.append(LoadedImage(ImageRef(f"img{i}", f"img{i}.png", f"/x/img{i}.png", f"/x/img{i}.png"), img, 40 + i, 30))
    return out


def echo_jobs(n: int) -> list[ChatJob[str]]:
    return [ChatJob(user_message(f"job {i}"), lambda t: t) for i in range(n)]


@pytest.mark.parametrize("fault", ["500", "429", "malformed", "empty", "timeout"])
def test_transient_faults_are_retried_then_succeed(openai_server, fault):
    openai_server.reset(transient=[fault, fault], hang_s=1.0)
    cfg = endpoint(openai_server, timeout_s=0.3 if fault == "timeout" else 2.0)
    res = OpenAICompatClient(cfg).run(echo_jobs(6))
    assert [r.value for r in res] == [f"echo: job {i}" for i in range(6)]
    assert all(r.error is None and r.attempts == 3 for r in res)
    assert openai_server.faults[fault] == 12
    assert openai_server.requests == 18


def test_persistent_faults_are_reported_with_reason_and_nothing_is_lost(openai_server):
    openai_server.reset(always={"job 1": "500", "job 3": "malformed", "job 5": "timeout", "job 7": "400"}, hang_s=1.0)
    res = OpenAICompatClient(endpoint(openai_server, timeout_s=0.3, max_retries=2)).run(echo_jobs(9))
    assert len(res) == 9
    ok = {i for i, r in enumerate(res) if r.error is None}
    assert ok == {0, 2, 4, 6, 8}
    assert "HTTP 500" in res[1].error and "after 3 attempts" in res[1].error
    assert "malformed JSON" in res[3].error
    assert "timeout" in res[5].error
    assert "HTTP 400" in res[7].error and res[7].attempts == 1  # a client error is not retried


def test_concurrency_limit_and_parallelism(openai_server):
    openai_server.reset(latency_s=0.1)
    res = OpenAICompatClient(endpoint(openai_server, concurrency=3)).run(echo_jobs(12))
    assert all(r.error is None for r in res)
    assert openai_server.peak_in_flight == 3


def test_backoff_grows_and_is_capped():
    client = OpenAICompatClient(EndpointConfig(backoff_base_s=1.0, backoff_max_s=4.0), rng=random.Random(0))
    delays = [client.backoff_s(a) for a in range(1, 6)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert all(2.0 <= d <= 4.0 for d in delays[3:])


def test_endpoint_captioner_sends_image_and_derives_short_caption(openai_server):
    openai_server.reset(always={"img-fails": "500"})
    cap = EndpointCaptioner(CaptionConfig(backend="openai", prompt_template="Describe. img-ok"), endpoint(openai_server))
    out = cap.caption(images(5))
    assert all(r.error is None for r in out)
    assert out[0].caption.startswith("A small red ball") and out[0].short_caption == \
        "A small red ball lies on a wooden table near a window."
    assert out[0].provenance["caption"] == {"backend": "openai", "model": "loopback-vlm",
                                            "prompt_version": "caption-v1", "endpoint": openai_server.url}
    body = openai_server.bodies[0]
    parts = body["messages"][0]["content"]
    assert parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert parts[1] == {"type": "text", "text": "Describe. img-ok"}
    assert len({r.caption for r in out}) == 5  # one request per image, answers kept in order


def test_endpoint_captioner_failures_carry_reasons(openai_server):
    openai_server.reset(always={"Describe": "malformed"})
    out = EndpointCaptioner(CaptionConfig(backend="openai", prompt_template="Describe."),
                            endpoint(openai_server, max_retries=1)).caption(images(3))
    assert len(out) == 3 and all(r.error and "malformed JSON" in r.error for r in out)
    assert openai_server.requests == 6


def test_llm_negatives_repair_and_top_up(openai_server):
    calls = {"n": 0}

    def responder(req):
        calls["n"] += 1
        text = req["messages"][0]["content"][0]["text"]
        if "Attempt 2" in text:
            return "\n".join(f"{i}. a {c} plastic pipe" for i, c in enumerate(["red", "blue", "tan", "gold"], 1))
        return "\n".join(["Here are the negatives:", "1. a light grey wooden pipe", "2. a light grey plastic pipe",
                          "3) a dark pink plastic pipe", "4. a dark pink plastic pipe", "- a green metal pipe",
                          "5. a light grey wooden hose", "6. 'a white glass pipe'", "7. a black rubber pipe",
                          "8. a beige paper pipe"])

    openai_server.reset(responder=responder)
    gen = LLMNegatives(NegativesConfig(backend="llm", n=10), endpoint(openai_server))
    [res] = gen.generate(["a light grey plastic pipe"])
    assert res.error is None
    # hard (the default): only single-attribute changes count; two-change lines and the lost noun are rejected
    assert res.negatives[:6] == ["a light grey wooden pipe", "a dark pink plastic pipe", "a red plastic pipe",
                                 "a blue plastic pipe", "a tan plastic pipe", "a gold plastic pipe"]
    assert "a green metal pipe" not in res.negatives and res.levels == ["hard"] * 10
    assert len(res.negatives) == 10 and len(set(res.negatives)) == 10
    assert "a light grey plastic pipe" not in res.negatives and all("pipe" in n for n in res.negatives)
    assert calls["n"] == 3  # a second round topped the list up, a third found nothing new
    assert res.checks["replaced"] == 4  # the rest are rule-based
    assert gen.provenance()["prompt_version"] == "negatives-v2"


def test_llm_negatives_endpoint_down_is_an_error(openai_server):
    openai_server.reset(always={"hard negative": "500"})
    gen = LLMNegatives(NegativesConfig(backend="llm"), endpoint(openai_server, max_retries=1))
    [res] = gen.generate(["a red car"])
    assert res.negatives == [] and "HTTP 500" in res.error


def test_parse_grounding():
    text = 'Sure:\n```json\n[{"phrase": "a red ball", "bbox": [100, 200, 500, 800], "score": 0.9}, ' \
           '{"phrase": "unknown", "bbox": [0, 0, 1, 1]}]\n```'
    [d] = parse_grounding(text, ["a dog", "a red ball"], 1000)
    assert d.label == 1 and d.box == (0.1, 0.2, 0.5, 0.8) and d.score == 0.9
    with pytest.raises(ValueError, match="bad bbox"):
        parse_grounding('[{"phrase": "a dog", "bbox": [1, 2]}]', ["a dog"], 1)
    with pytest.raises(ValueError, match="no JSON list"):
        parse_grounding("I see nothing", ["a dog"], 1)


def test_endpoint_detector_retries_unusable_answers(openai_server):
    answers = iter(["I cannot do JSON", '[{"phrase": "a red ball", "bbox": [0.1, 0.1, 0.6, 0.5], "score": 0.8}]'])
    openai_server.reset(responder=lambda req: next(answers))
    det = EndpointDetector(BoxConfig(backend="openai"), endpoint(openai_server))
    imgs = [i.image for i in images(2)]
    out = det.detect(imgs, [["a red ball"], []])
    assert out[1] == [] and len(out[0]) == 1 and out[0][0].box == (0.1, 0.1, 0.6, 0.5)
    assert openai_server.requests == 2
