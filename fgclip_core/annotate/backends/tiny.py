"""Tiny randomly initialised Hugging Face models for tests and the offline demo (plumbing, not quality).

Built from configs with no download: a character-level CLIP BPE vocabulary (every byte symbol,
no merges), an OWLv2 detector with the PIL image processor (no torchvision), and a LLaVA-style
vision-language model (CLIP vision tower + Llama decoder) with a word-level tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fgclip_core.annotate.lexicon import load_lexicon
from fgclip_core.model.processing import bytes_to_unicode


def _char_clip_tokenizer():
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>", model_max_length=32)
    return tok, len(vocab)


def build_tiny_owlv2(out_dir: str | Path, seed: int = 0, image_size: int = 64) -> Path:
    """Save a tiny random OWLv2 (model + PIL-backend processor) loadable with ``from_pretrained``."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    out = Path(out_dir)
    tok, vocab_size = _char_clip_tokenizer()
    cfg = Owlv2Config(
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "bos_token_id": vocab_size - 2,
                     "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": 16},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(cfg).eval()
    # Random box heads predict degenerate boxes; small last-layer weights keep each patch's box near its
    # grid-cell prior, so the tiny detector returns varied, valid boxes.
    with torch.no_grad():
        torch.nn.init.normal_(model.box_head.dense2.weight, std=0.05)
        model.box_head.dense2.bias.zero_()
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size={"height": image_size, "width": image_size}),
                               tokenizer=tok)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _word_tokenizer(extra_words: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
    words = sorted({w for w in extra_words if w.isalpha()})
    vocab = {t: i for i, t in enumerate(specials + [".", ",", ":"] + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    from tokenizers import decoders

    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    tok.chat_template = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                         "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
                         "{% if add_generation_prompt %}: {% endif %}")
    return tok, len(vocab)


def build_tiny_llava(out_dir: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """Save a tiny random LLaVA (CLIP vision + Llama text) with a PIL image processor and chat template."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out = Path(out_dir)
    lex = load_lexicon()
    words = [f for groups in lex.groups.values() for g in groups for f in g] + \
        ["a", "an", "the", "of", "on", "in", "with", "and", "is", "are", "photo", "image", "picture", "shows", "dog", "cat", "table", "car", "man", "woman", "tree", "sky"]
    tok, vocab_size = _word_tokenizer(words)
    patch = 8
    n_patches = (image_size // patch) ** 2
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=image_size, patch_size=patch, projection_dim=32),
        text_config=LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                pad_token_id=0, bos_token_id=2, eos_token_id=3),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=n_patches,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch,
                               vision_feature_select_strategy="default", chat_template=tok.chat_template,
                               num_additional_image_tokens=1)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_grounding_dino(out_dir: str | Path, seed: int = 0, image_size: int = 64) -> Path:
    """Save a tiny random Grounding DINO (Swin + BERT, word-level vocabulary) with the PIL processor."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        SwinConfig,
    )

    out = Path(out_dir)
    lex = load_lexicon()
    words = sorted({f for groups in lex.groups.values() for g in groups for f in g if f.isalpha()}
                   | {"a", "an", "the", "of", "on", "in", "with", "and", "ball", "dog", "cat", "table", "car", "man",
                      "woman", "tree", "cup", "bowl"})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *words])}
    tok = BertTokenizer(vocab=vocab)
    cfg = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=image_size, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 1],
                                   window_size=4, out_features=["stage1", "stage2"]),  # type: ignore[call-arg]
        text_config=BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=12, num_feature_levels=2, encoder_n_points=2,
        decoder_n_points=2, max_text_len=64,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(cfg).eval()
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": image_size, "longest_edge": image_size})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    model.save_pretrained(out)
    return out
