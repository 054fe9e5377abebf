"""Local Hugging Face backends on tiny random models built and saved here (plumbing, not quality)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from fgclip_core.annotate.backends.hf_local import HFLocalCaptioner, HFZeroShotDetector, grounding_prompt
from fgclip_core.annotate.backends.tiny import build_tiny_grounding_dino, build_tiny_llava, build_tiny_owlv2
from fgclip_core.annotate.boxes import select_regions
from fgclip_core.annotate.config import BoxConfig, CaptionConfig
from fgclip_core.annotate.images import ImageRef, LoadedImage


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return build_tiny_owlv2(tmp_path_factory.mktemp("owlv2"))


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return build_tiny_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def gdino_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return build_tiny_grounding_dino(tmp_path_factory.mktemp("gdino"))


def pictures() -> list[Image.Image]:
    return [Image.new("RGB", (80, 40), (200, 10, 10)), Image.new("RGB", (30, 60), (10, 200, 10)),
            Image.new("RGB", (50, 50), (10, 10, 200))]


def test_detector_loads_without_torchvision_and_batches_consistently(owl_dir):
    import importlib.util

    assert importlib.util.find_spec("torchvision") is None
    queries = [["a red ball", "a dog"], ["a cat"], []]
    one_by_one = HFZeroShotDetector(BoxConfig(backend="hf_local", model_dir=str(owl_dir), batch_size=1))
    batched = HFZeroShotDetector(BoxConfig(backend="hf_local", model_dir=str(owl_dir), batch_size=3))
    assert type(batched.processor.image_processor).__name__ == "Owlv2ImageProcessorPil"
    a = one_by_one.detect(pictures(), queries)
    b = batched.detect(pictures(), queries)
    assert a[2] == [] and b[2] == []  # no phrases, no detections
    n_patches = (64 // 16) ** 2
    assert len(a[0]) == len(a[1]) == n_patches
    assert {d.label for d in a[0]} <= {0, 1} and {d.label for d in a[1]} == {0}
    for x, y in zip(a[:2], b[:2], strict=True):
        # padding the second image's queries to the batch's must not change its scores
        assert [d.label for d in x] == [d.label for d in y]
        assert torch.allclose(torch.tensor([d.score for d in x]), torch.tensor([d.score for d in y]), atol=1e-5)
        assert torch.allclose(torch.tensor([d.box for d in x]), torch.tensor([d.box for d in y]), atol=1e-5)
    assert batched.provenance()["model_type"] == "owlv2"


def test_owlv2_boxes_are_rescaled_from_the_padded_square(owl_dir):
    det = HFZeroShotDetector(BoxConfig(backend="hf_local", model_dir=str(owl_dir)))
    wide = Image.new("RGB", (80, 40), (120, 120, 120))
    square = Image.new("RGB", (80, 80), (120, 120, 120))
    square.paste(wide, (0, 0))  # the padded image OWLv2 sees (padding is grey 0.5 in its processor)
    [w] = det.detect([wide], [["a thing"]])
    # the y coordinates of a wide image are stretched by side/height = 2 relative to the model's square
    raw = det._batch([wide], [["a thing"]])[0]
    assert [d.box for d in raw] == [d.box for d in w]
    boxes = torch.tensor([d.box for d in w])
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    # patch priors cover the square: on a 2:1 image the bottom half of the grid lies below the image
    assert boxes[:, 3].max() > 1.5


def test_detector_rejects_unsupported_models(tmp_path, llava_dir):
    with pytest.raises(ValueError, match="not supported"):
        HFZeroShotDetector(BoxConfig(backend="hf_local", model_dir=str(llava_dir)))


def test_local_captioner_batches_and_writes_provenance(llava_dir):
    imgs = [LoadedImage(ImageRef(f"i{i}", f"i{i}.png", f"/x/i{i}.png", f"/x/i{i}.png"), im, *im.size) for i, im in enumerate(pictures())]
    c1 = HFLocalCaptioner(CaptionConfig(backend="hf_local", model_dir=str(llava_dir), batch_size=1, max_new_tokens=8))
    c3 = HFLocalCaptioner(CaptionConfig(backend="hf_local", model_dir=str(llava_dir), batch_size=3, max_new_tokens=8))
    a, b = c1.caption(imgs), c3.caption(imgs)
    assert all(r.error is None for r in a + b)
    assert [r.caption for r in a] == [r.caption for r in b]
    assert all(r.caption and r.short_caption for r in a)
    assert a[0].provenance["caption"] == {"backend": "hf_local", "model": str(llava_dir),
                                          "prompt_version": "caption-v1", "model_type": "llava"}


def test_local_captioner_failure_is_reported_per_image(llava_dir, monkeypatch):
    cap = HFLocalCaptioner(CaptionConfig(backend="hf_local", model_dir=str(llava_dir), batch_size=2, max_new_tokens=4))

    def boom(images):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(cap, "_batch", boom)
    imgs = [LoadedImage(ImageRef(f"i{i}", "p", "p", "p"), im, *im.size) for i, im in enumerate(pictures())]
    out = cap.caption(imgs)
    assert len(out) == 3 and all("RuntimeError: out of memory" in r.error for r in out)


def test_grounding_prompt_maps_phrases_to_their_tokens(gdino_dir):
    det = HFZeroShotDetector(BoxConfig(backend="hf_local", model_dir=str(gdino_dir)))
    tok = det.processor.tokenizer
    text, idx = grounding_prompt(tok, ["A red ball", "a small  white dog"], 64)
    assert text == "a red ball . a small white dog ."
    ids = tok(text)["input_ids"]
    assert [tok.convert_ids_to_tokens([ids[j] for j in span]) for span in idx] == \
        [["a", "red", "ball"], ["a", "small", "white", "dog"]]
    _, cut = grounding_prompt(tok, ["a red ball", "a small white dog"], 6)  # truncated: second phrase lost
    assert cut == [[1, 2, 3], []]


def test_grounding_dino_detector(gdino_dir):
    one = HFZeroShotDetector(BoxConfig(backend="hf_local", model_dir=str(gdino_dir), batch_size=1, score_threshold=0))
    assert type(one.processor.image_processor).__name__ == "GroundingDinoImageProcessorPil"
    assert one.provenance()["model_type"] == "grounding-dino"
    queries = [["a red ball", "a small white dog"], ["a cat"], []]
    out = one.detect(pictures(), queries)
    assert len(out[0]) == len(out[1]) == 12 and out[2] == []
    assert {d.label for d in out[0]} <= {0, 1} and {d.label for d in out[1]} == {0}
    assert all(0 <= d.score <= 1 for d in out[0] + out[1])
    # a single image processed alone gives the same answer whatever else was asked before
    again = one.detect([pictures()[1]], [["a cat"]])[0]
    assert [d.box for d in again] == [d.box for d in out[1]]
    sel = select_regions(out[0], one.cfg)
    assert sel and all(0 <= d.box[0] < d.box[2] <= 1 and 0 <= d.box[1] < d.box[3] <= 1 for d in sel)
