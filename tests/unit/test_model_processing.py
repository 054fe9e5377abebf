"""Tokenizer (OpenAI CLIP BPE, offline) and image processor."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pytest
import regex
import torch
from PIL import Image

from fgclip_core.model import ImageProcessor, TokenizerError, load_tokenizer
from fgclip_core.model.processing import bytes_to_unicode, clip_vocab_and_merges

SAMPLES = [
    "a photo of a cat",
    "A Photo of a CAT.",
    "Two dogs playing in the snow, one brown and one white!",
    "it's a man's world; we'll see what they'd do",
    "hello   world 123 4567 3.14",
    "naïve café résumé über straße",
    "emoji 🐱 and symbols #@$%^&*() <b>bold</b>",
    "",
]


class ReferenceBPE:
    """Straight transcription of the published CLIP BPE algorithm (slow, for checking only)."""

    pattern = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
                            r"""[^\s\p{L}\p{N}]+""", regex.IGNORECASE)

    def __init__(self) -> None:
        self.encoder, merges = clip_vocab_and_merges()
        self.ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()

    def bpe(self, token: str) -> list[str]:
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(self, text: str) -> list[int]:
        text = " ".join(html.unescape(html.unescape(text)).strip().split()).lower()
        ids = [49406]
        for tok in self.pattern.findall(text):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids += [self.encoder[t] for t in self.bpe(tok)]
        return [*ids, 49407]


@pytest.fixture(scope="module")
def tok(tiny_checkpoint_dir):
    return load_tokenizer(tiny_checkpoint_dir)


def test_known_ids_and_reference_bpe(tok):
    ref = ReferenceBPE()
    assert len(ref.encoder) == 49408
    ids = tok.encode(SAMPLES, mode="long")
    for text, row in zip(SAMPLES, ids.tolist(), strict=True):
        want = ref.encode(text)
        assert row[: len(want)] == want, text
        assert all(t == tok.pad_token_id for t in row[len(want):]), text
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_shapes_padding_and_special_ids(tok):
    assert tok.pad_token_id == tok.eos_token_id == 49407 and tok.bos_token_id == 49406
    assert tok.encode(["x"], "long").shape == (1, 248)
    assert tok.encode(["x", "y"], "short").shape == (2, 77)
    assert tok.encode([], "short").shape == (0, 77)
    with pytest.raises(ValueError, match="mode must be"):
        tok.encode(["x"], "medium")
    with pytest.raises(TypeError, match="list of strings"):
        tok.encode("x")


@pytest.mark.parametrize(("mode", "length"), [("short", 77), ("long", 248)])
def test_overlong_text_is_truncated_with_eos_last(tok, mode, length):
    ids = tok.encode(["cat " * 400, "dog"], mode)
    assert ids.shape == (2, length)
    row = ids[0].tolist()
    assert row[0] == 49406 and row[-1] == 49407 and row[1:-1] == [2368] * (length - 2)
    assert row.count(49407) == 1  # no padding on the truncated row; EOS is the last token


def test_tokenizer_round_trip_and_lengths_from_config(tok, tmp_path: Path):
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert torch.equal(again.encode(SAMPLES, "long"), tok.encode(SAMPLES, "long"))


def test_missing_tokenizer_is_a_clear_error(tmp_path: Path):
    with pytest.raises(TokenizerError, match="no tokenizer files"):
        load_tokenizer(tmp_path)


def test_image_processor_matches_clip_image_processor(tiny_checkpoint_dir, tmp_path: Path):
    from transformers import CLIPImageProcessor

    proc = ImageProcessor.from_pretrained(tiny_checkpoint_dir)
    cfg = json.loads((tiny_checkpoint_dir / "preprocessor_config.json").read_text())
    assert cfg["do_center_crop"] is False and cfg["size"] == {"height": 64, "width": 64}
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (37, 90, 3), dtype=np.uint8)),
              Image.fromarray(rng.integers(0, 256, (120, 50, 4), dtype=np.uint8), mode="RGBA"),
              Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), mode="L")]
    ours = proc(images)
    hf = CLIPImageProcessor.from_pretrained(str(tiny_checkpoint_dir))
    want = torch.as_tensor(np.asarray(hf([im.convert("RGB") for im in images], return_tensors="np")["pixel_values"]))
    assert ours.shape == (3, 3, 64, 64) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(proc.preprocess_one(images[0]), ours[0], rtol=0, atol=0)
    proc.save_pretrained(tmp_path)
    assert ImageProcessor.from_pretrained(tmp_path).config == proc.config


def test_clip_style_processor_config_uses_crop_size(tmp_path: Path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 224},
         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    proc = ImageProcessor.from_pretrained(tmp_path)
    assert proc.size == 224 and proc.config.image_mean == (0.5, 0.5, 0.5)
    white = proc([Image.new("RGB", (10, 20), (255, 255, 255))])
    assert torch.allclose(white, torch.ones_like(white))


def test_tokenizer_with_other_ids_is_refused(tmp_path: Path):
    """A directory whose tokenizer does not give OpenAI's CLIP ids (the model's vocabulary)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(str(tmp_path))
    with pytest.raises(TokenizerError, match=r"expected OpenAI CLIP ids \[49406, 320"):
        load_tokenizer(tmp_path)
