"""Captions (sidecar, short caption), phrases, box selection, config and image listing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from fgclip_core.annotate.boxes import Detection, clip_box, iou, nms, select_regions, to_regions
from fgclip_core.annotate.captions import SidecarCaptioner, short_caption, split_sentences
from fgclip_core.annotate.config import AnnotateConfig, BoxConfig, CaptionConfig, load_annotate_config
from fgclip_core.annotate.images import ImageLoadError, list_images, load_image
from fgclip_core.annotate.phrases import Phrase, RulePhraseExtractor
from fgclip_core.config import ConfigError

CAPTION = ("A woman in a red dress is holding a small white dog on a wooden bench. Two black cats sleep near "
           "a pair of brown leather shoes, and a sleeping baby lies in the background. It is sunny.")


def test_sentences_and_short_caption():
    assert split_sentences(CAPTION)[1].startswith("Two black cats")
    assert len(split_sentences(CAPTION)) == 3
    assert short_caption(CAPTION, 40) == "A woman in a red dress is holding a small white dog on a wooden bench."
    assert short_caption(CAPTION, 5) == "A woman in a red"
    assert split_sentences("Dr. no split? Yes. 3.5 m tall.") == ["Dr. no split?", "Yes.", "3.5 m tall."]


def test_phrases_with_their_sentences():
    phrases = RulePhraseExtractor().extract(CAPTION)
    assert [p.text for p in phrases] == ["a woman", "a red dress", "a small white dog", "a wooden bench",
                                         "two black cats", "a pair of brown leather shoes", "a sleeping baby"]
    assert phrases[4].sentence.startswith("Two black cats sleep")
    assert phrases[5].head == "shoes"
    assert all(p.text in p.sentence or p.text[0].upper() + p.text[1:] in p.sentence for p in phrases)


def test_phrase_limits():
    from fgclip_core.annotate.config import PhraseConfig

    assert len(RulePhraseExtractor(PhraseConfig(max_phrases=2)).extract(CAPTION)) == 2
    assert "a pair of brown leather shoes" not in [p.text for p in RulePhraseExtractor(PhraseConfig(max_words=4))
                                                   .extract(CAPTION)]


def test_nms_and_selection():
    a = Detection(0, 0.9, (0.1, 0.1, 0.5, 0.5))
    b = Detection(1, 0.8, (0.12, 0.1, 0.5, 0.52))  # overlaps a
    c = Detection(0, 0.7, (0.6, 0.6, 0.9, 0.9))
    low = Detection(1, 0.3, (0.0, 0.6, 0.3, 0.9))
    out_of_image = Detection(1, 0.95, (-0.2, 0.7, 0.5, 1.3))
    degenerate = Detection(0, 0.99, (0.4, 0.4, 0.4001, 0.8))
    assert iou(a.box, a.box) == 1.0 and iou(a.box, c.box) == 0.0
    assert nms([a, b, c], 0.5) == [a, c]
    assert nms([a, b, c], 0.5, class_agnostic=False) == [a, b, c]
    sel = select_regions([a, b, c, low, out_of_image, degenerate], BoxConfig())
    assert [d.score for d in sel] == [0.95, 0.9, 0.7]
    assert sel[0].box == (0.0, 0.7, 0.5, 1.0)
    assert [d.score for d in select_regions([a, b, c], BoxConfig(max_regions=1))] == [0.9]
    assert clip_box((0.8, 1.2, 0.2, -0.1)) == (0.2, 0.0, 0.8, 1.0)


def test_regions_carry_phrase_sentence_and_provenance():
    phrases = [Phrase("a red car", "A red car is parked.", "car")]
    [r] = to_regions([Detection(0, 0.87654321, (0.1, 0.2, 0.3, 0.4))], phrases, {"backend": "x"}, {"backend": "rules"})
    assert (r.short_expr, r.long_expr, r.bbox, r.score) == ("a red car", "A red car is parked.", [0.1, 0.2, 0.3, 0.4],
                                                           0.876543)
    assert r.provenance["bbox"] == {"backend": "x"} and r.provenance["short_expr"] == {"backend": "rules"}


def test_config_defaults_and_errors(tmp_path):
    cfg = AnnotateConfig()
    assert (cfg.captions.backend, cfg.boxes.backend, cfg.negatives.backend) == ("sidecar", "none", "rules")
    assert cfg.boxes.score_threshold == 0.4 and cfg.negatives.n == 10
    with pytest.raises(ValueError, match=r"needs boxes\.model_dir"):
        BoxConfig(backend="hf_local")
    with pytest.raises(ValueError, match=r"needs captions\.model_dir"):
        CaptionConfig(backend="hf_local")
    p = tmp_path / "a.yaml"
    p.write_text("endpoint:\n  concurrency: 3\nboxes:\n  scor_threshold: 0.5\n")
    with pytest.raises(ConfigError, match="scor_threshold"):
        load_annotate_config(p)
    p.write_text("endpoint:\n  concurrency: 3\n")
    assert load_annotate_config(p, ["negatives.n=5"]).endpoint.concurrency == 3
    assert load_annotate_config(p, ["negatives.n=5"]).negatives.n == 5


def _img(path, size=(32, 24), color=(200, 20, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_list_and_load_images(tmp_path):
    _img(tmp_path / "b" / "x.y.jpg")
    _img(tmp_path / "a.png", size=(2000, 1000))
    _img(tmp_path / "b_x_y.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    refs = list_images(str(tmp_path), [".jpg", ".png"])
    assert [r.f_path for r in refs] == ["a.png", "b/x.y.jpg", "b_x_y.png", "bad.jpg"]
    assert refs[0].id == "a" and refs[1].id.startswith("b_x_y-") and refs[2].id.startswith("b_x_y-")
    assert len({r.id for r in refs}) == 4 and all("." not in r.id and "/" not in r.id for r in refs)
    big = load_image(refs[0], max_side=256, max_pixels=10**8)
    assert (big.width, big.height) == (2000, 1000) and big.image.size == (256, 128)
    with pytest.raises(ImageLoadError, match="exceeds"):
        load_image(refs[0], max_side=256, max_pixels=1000)
    with pytest.raises(ImageLoadError, match="side under 25 pixels"):
        load_image(refs[1], max_side=256, max_pixels=10**8, min_side=25)
    with pytest.raises(ImageLoadError, match=r"bad\.jpg: cannot decode"):
        load_image(refs[3], max_side=256, max_pixels=10**8)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    [ref] = list_images(str(tmp_path), [".jpg"])
    loaded = load_image(ref, 1024, 10**8)
    assert (loaded.width, loaded.height) == (20, 40) and loaded.image.mode == "RGB"


def test_sidecar_captions(tmp_path):
    _img(tmp_path / "a.jpg")
    _img(tmp_path / "b.jpg")
    _img(tmp_path / "c.jpg")
    _img(tmp_path / "d.jpg")
    (tmp_path / "a.txt").write_text("A red square on a plain background.  It is small.\n")
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "b.jpg", "caption": "A red block. Nothing else.", "alt_text": "red block"}) + "\n"
        + json.dumps({"file_name": "d.jpg", "caption": "  "}) + "\n")
    loaded = [load_image(r, 64, 10**8) for r in list_images(str(tmp_path), [".jpg"])]
    out = SidecarCaptioner(CaptionConfig(), str(tmp_path)).caption(loaded)
    assert (out[0].caption, out[0].short_caption) == ("A red square on a plain background. It is small.",
                                                      "A red square on a plain background.")
    assert out[0].provenance["caption"]["backend"] == "sidecar"
    assert out[0].provenance["short_caption"]["derived"] == "first_sentence"
    assert (out[1].short_caption, out[1].provenance["short_caption"]["derived"]) == ("red block", "alt_text")
    assert "no sidecar c.txt" in out[2].error and "metadata.jsonl" in out[2].error
    assert "has no caption" in out[3].error


coord = st.floats(-0.5, 1.5, allow_nan=False)
detection = st.builds(Detection, st.integers(0, 3), st.floats(0, 1), st.tuples(coord, coord, coord, coord))


@settings(max_examples=150, deadline=None)
@given(st.lists(detection, max_size=30), st.floats(0.1, 0.9), st.integers(1, 5))
def test_selected_regions_are_valid_whatever_the_detector_says(dets, iou_threshold, max_regions):
    cfg = BoxConfig(nms_iou=iou_threshold, max_regions=max_regions)
    sel = select_regions(dets, cfg)
    assert len(sel) <= max_regions
    assert [d.score for d in sel] == sorted((d.score for d in sel), reverse=True)
    for i, d in enumerate(sel):
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        assert x2 - x1 >= cfg.min_side and y2 - y1 >= cfg.min_side and d.score >= cfg.score_threshold
        assert all(iou(d.box, e.box) <= iou_threshold for e in sel[:i])
