"""FG-CLIP in plain PyTorch: CLIP ViT image tower, causal text tower with 77 short and 248 long
positions, and the region (dense / RoI) head of FG-CLIP v1.

Module and parameter names follow Hugging Face ``CLIPModel`` (plus FG-CLIP's
``position_embedding_ori/_res``, ``text_filip_projection``, ``logit_scale_finegraind`` and
``logit_scale_hardneg``), so state dicts of both load without renaming. Loading and saving live in
``checkpoint.py``; this file only defines the computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from fgclip_core.model.config import FGCLIPConfig, TextConfig, VisionConfig
from fgclip_core.model.roi_align import roi_align, roi_align_batched


def long_positions_from_short(short: torch.Tensor, keep: int = 20) -> torch.Tensor:
    """FG-CLIP's 77 -> 248 position table: keep the first ``keep`` rows, interpolate the rest x4 and
    extrapolate 4 rows past the last one. ``short [L, D]`` -> ``[4L - 3 keep, D]``."""
    if short.dim() != 2 or short.shape[0] < keep + 2:
        raise ValueError(f"need a [L, D] table with L >= keep + 2 = {keep + 2}, got {tuple(short.shape)}")
    a, b = short[keep:-1], short[keep + 1:]
    inner = torch.stack([a, 0.75 * a + 0.25 * b, 0.5 * a + 0.5 * b, 0.25 * a + 0.75 * b], dim=1)
    last, prev = short[-1], short[-2]
    k = torch.arange(4, dtype=short.dtype, device=short.device)[:, None]
    tail = last + k * (last - prev) / 4
    return torch.cat([short[:keep], inner.reshape(-1, short.shape[1]), tail], dim=0)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return x * torch.sigmoid(1.702 * x)
        return torch.sigmoid(1.702 * x).mul_(x)  # same values, one temporary less (inference)


def _activation(name: str) -> nn.Module:
    return QuickGELU() if name == "quick_gelu" else nn.GELU()


class CLIPAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, causal: bool, query_index: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over ``x [B, T, C]``. With ``query_index [B]`` only that one query row per
        sequence is computed (``[B, 1, C]``), still attending to every key (to keys up to it if causal)."""
        b, t, c = x.shape

        def heads(h: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
            return proj(h).view(b, h.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        k, v = heads(x, self.k_proj), heads(x, self.v_proj)
        if query_index is None:
            out = F.scaled_dot_product_attention(heads(x, self.q_proj), k, v, is_causal=causal)
        else:
            rows = x[torch.arange(b, device=x.device), query_index][:, None]
            mask = None
            if causal:
                mask = (torch.arange(t, device=x.device)[None, :] <= query_index[:, None])[:, None, None, :]
            out = F.scaled_dot_product_attention(heads(rows, self.q_proj), k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, out.shape[2], c))

    def forward_without_mixing(self, x: torch.Tensor) -> torch.Tensor:
        """Each token attends only to itself: ``out_proj(v_proj(x))`` (FG-CLIP's dense path)."""
        return self.out_proj(self.v_proj(x))


class CLIPMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation_fn = _activation(act)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig | VisionConfig) -> None:
        super().__init__()
        self.self_attn = CLIPAttention(cfg.hidden_size, cfg.num_attention_heads)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = CLIPMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, causal: bool, query_index: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T, C]``, or only the row ``query_index [B]`` of each sequence (``[B, 1, C]``)."""
        attn = self.self_attn(self.layer_norm1(x), causal, query_index)
        if query_index is not None:
            x = x[torch.arange(x.shape[0], device=x.device), query_index][:, None]
        x = x + attn
        return x + self.mlp(self.layer_norm2(x))

    def forward_without_mixing(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn.forward_without_mixing(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: TextConfig | VisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.gradient_checkpointing = False

    @property
    def blocks(self) -> list[CLIPEncoderLayer]:
        return [cast(CLIPEncoderLayer, m) for m in self.layers]

    def forward(self, x: torch.Tensor, causal: bool, start: int = 0, end: int | None = None,
                query_index: torch.Tensor | None = None) -> torch.Tensor:
        """Run layers ``start..end-1`` (all by default). With ``query_index [B]`` the last of them
        computes only that row of each sequence (the only one pooling reads): ``[B, 1, C]``."""
        blocks = self.blocks[start:end]
        for i, layer in enumerate(blocks):
            qi = query_index if i == len(blocks) - 1 else None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, causal, qi, use_reentrant=False)
            else:
                x = layer(x, causal, qi)
        return x


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.position_embedding_ori = nn.Embedding(cfg.long_max_position_embeddings, cfg.hidden_size)
        self.position_embedding_res = nn.Embedding(cfg.long_max_position_embeddings, cfg.hidden_size)

    def positions(self, length: int, long: bool, device: torch.device | None = None) -> torch.Tensor:
        """``[length, D]``: the short table, or ``ori * mask(first keep) + res * mask(rest)``
        (computed as a concatenation: same values and gradients, no multiplications). Tables are
        read by calling their modules, so ZeRO-3 gathers them (no direct ``.weight`` access)."""
        ids = torch.arange(length, device=device)
        if not long:
            return self.position_embedding(ids)
        keep = min(self.cfg.long_keep_positions, length)
        return torch.cat([self.position_embedding_ori(ids[:keep]), self.position_embedding_res(ids[keep:])], dim=0)

    def check_length(self, length: int, long: bool) -> None:
        limit = self.cfg.long_max_position_embeddings if long else self.cfg.max_position_embeddings
        if length > limit:
            raise ValueError(f"input_ids has {length} tokens but {'long' if long else 'short'} text allows "
                             f"{limit}; tokenize with mode={'long' if long else 'short'!r} (truncates, keeps EOS)")

    def forward(self, input_ids: torch.Tensor, long: bool) -> torch.Tensor:
        length = input_ids.shape[-1]
        self.check_length(length, long)
        return self.token_embedding(input_ids) + self.positions(length, long, input_ids.device)


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = CLIPTextEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, long: bool) -> torch.Tensor:
        """Pooled text state ``[N, width]``: final-LN hidden state at the first EOS token."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [N, T], got shape {tuple(input_ids.shape)}")
        self.embeddings.check_length(input_ids.shape[-1], long)
        is_eos = input_ids == self.cfg.eos_token_id
        has_eos = is_eos.any(dim=-1)
        if not bool(has_eos.all()):
            rows = (~has_eos).nonzero(as_tuple=True)[0][:10].tolist()
            raise ValueError(f"input_ids rows {rows} contain no eos_token_id {self.cfg.eos_token_id}: "
                             "EOS pooling needs it (tokenize with the FG-CLIP tokenizer; trim after EOS only)")
        eos_index = is_eos.int().argmax(dim=-1)
        # Under the causal mask nothing after a row's EOS reaches its pooled state: drop the
        # columns after the last EOS (padding), and let the last layer compute only the EOS row.
        needed = int(eos_index.max()) + 1 if input_ids.shape[0] else input_ids.shape[1]
        if needed < input_ids.shape[1]:
            input_ids = input_ids[:, :needed]
        x = self.encoder(self.embeddings(input_ids, long), causal=True, query_index=eos_index)
        return self.final_layer_norm(x[:, 0])


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.class_embedding = nn.Parameter(torch.empty(cfg.hidden_size))
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, kernel_size=cfg.patch_size,
                                         stride=cfg.patch_size, bias=False)
        self.position_embedding = nn.Embedding(cfg.num_patches + 1, cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        size, ch = self.cfg.image_size, self.cfg.num_channels
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (ch, size, size):
            raise ValueError(f"pixel_values must be [B, {ch}, {size}, {size}] for this model, "
                             f"got {tuple(pixel_values.shape)}")
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values are {pixel_values.dtype}: the model takes normalised float pixels "
                             "(a loader batch of uint8 pixels: TrainBatch.normalized() or .to(device) first)")
        w = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(w.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        positions = self.position_embedding(torch.arange(patches.shape[1] + 1, device=patches.device))
        return torch.cat([cls, patches], dim=1) + positions


class CLIPVisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = CLIPVisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = CLIPEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def hidden_before_last(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Input of the last encoder layer (``hidden_states[-2]`` in HF terms): ``[B, 1 + h*w, W]``."""
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        return self.encoder(x, causal=False, end=self.cfg.num_hidden_layers - 1)

    def pooled_from(self, before_last: torch.Tensor) -> torch.Tensor:
        cls = torch.zeros(before_last.shape[0], dtype=torch.long, device=before_last.device)
        x = self.encoder(before_last, causal=False, start=self.cfg.num_hidden_layers - 1, query_index=cls)
        return self.post_layernorm(x[:, 0])

    def dense_from(self, before_last: torch.Tensor) -> torch.Tensor:
        """Last layer without attention mixing, CLS dropped, post-LN: ``[B, h*w, W]``."""
        x = self.encoder.blocks[-1].forward_without_mixing(before_last)
        return self.post_layernorm(x[:, 1:])


@dataclass
class ImageEncoding:
    image_embeds: torch.Tensor              # [B, D] global image features (not normalised)
    dense_map: torch.Tensor | None = None   # [B, D, h, w] dense region features (not normalised)


class FGCLIPModel(nn.Module):
    """FG-CLIP v1. Feature methods return un-normalised tensors, as the official release does."""

    def __init__(self, config: FGCLIPConfig) -> None:
        super().__init__()
        self.config = config
        t, v = config.text_config, config.vision_config
        self.text_model = CLIPTextTransformer(t)
        self.vision_model = CLIPVisionTransformer(v)
        self.visual_projection = nn.Linear(v.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(t.hidden_size, config.projection_dim, bias=False)
        self.text_filip_projection = nn.Linear(t.hidden_size, config.projection_dim, bias=False)
        init = torch.tensor(config.logit_scale_init_value)
        self.logit_scale = nn.Parameter(init.clone())
        self.logit_scale_finegraind = nn.Parameter(init.clone())
        self.logit_scale_hardneg = nn.Parameter(init.clone())
        self.reset_parameters()

    # ---- construction ------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random init in the style of HF CLIP; long positions derived from the short ones."""
        if any(p.is_meta for p in self.parameters()):
            return
        cfg, f = self.config, self.config.initializer_factor
        std = cfg.initializer_range * f
        for tower in (self.text_model, self.vision_model):
            width, n_layers = tower.cfg.hidden_size, tower.cfg.num_hidden_layers
            in_std = width**-0.5 * (2 * n_layers) ** -0.5 * f
            out_std = width**-0.5 * f
            fc_std = (2 * width) ** -0.5 * f
            for layer in tower.encoder.blocks:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    nn.init.normal_(proj.weight, std=in_std)
                nn.init.normal_(layer.self_attn.out_proj.weight, std=out_std)
                nn.init.normal_(layer.mlp.fc1.weight, std=fc_std)
                nn.init.normal_(layer.mlp.fc2.weight, std=in_std)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        temb = self.text_model.embeddings
        nn.init.normal_(temb.token_embedding.weight, std=std)
        nn.init.normal_(temb.position_embedding.weight, std=std)
        self.reset_long_positions()
        vemb = self.vision_model.embeddings
        nn.init.normal_(vemb.class_embedding, std=vemb.cfg.hidden_size**-0.5 * f)
        nn.init.normal_(vemb.patch_embedding.weight, std=std)
        nn.init.normal_(vemb.position_embedding.weight, std=std)
        nn.init.normal_(self.visual_projection.weight, std=cfg.vision_config.hidden_size**-0.5 * f)
        nn.init.normal_(self.text_projection.weight, std=cfg.text_config.hidden_size**-0.5 * f)
        self.text_filip_projection.weight.copy_(self.text_projection.weight)
        for p in (self.logit_scale, self.logit_scale_finegraind, self.logit_scale_hardneg):
            p.fill_(cfg.logit_scale_init_value)

    @torch.no_grad()
    def reset_long_positions(self) -> None:
        """Set both 248-position tables from the 77-position table (FG-CLIP's starting point)."""
        emb = self.text_model.embeddings
        long = long_positions_from_short(emb.position_embedding.weight, self.config.text_config.long_keep_positions)
        emb.position_embedding_ori.weight.copy_(long)
        emb.position_embedding_res.weight.copy_(long)

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype | None = torch.float32) -> FGCLIPModel:
        """FG-CLIP checkpoint, official FG-CLIP release, or ``transformers`` CLIP dir (local or URL)."""
        from fgclip_core.model.checkpoint import load_model

        return load_model(path, dtype=dtype)

    def save_pretrained(self, path: str) -> None:
        """``config.json`` (``model_type: fgclip``) + ``model.safetensors`` in the official key layout."""
        from fgclip_core.model.checkpoint import save_model

        save_model(self, path)

    def gradient_checkpointing_enable(self) -> None:
        self.text_model.encoder.gradient_checkpointing = True
        self.vision_model.encoder.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.text_model.encoder.gradient_checkpointing = False
        self.vision_model.encoder.gradient_checkpointing = False

    @property
    def grid_size(self) -> int:
        return self.config.vision_config.grid_size

    # ---- text --------------------------------------------------------------------------------
    def get_text_features(self, input_ids: torch.Tensor, walk_short_pos: bool = True) -> torch.Tensor:
        """``[N, D]``: short (77 positions, ``text_projection``) or long (248, ``text_filip_projection``)."""
        pooled = self.text_model(input_ids, long=not walk_short_pos)
        proj = self.text_projection if walk_short_pos else self.text_filip_projection
        return proj(pooled)

    # ---- image -------------------------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor, with_dense: bool = False) -> ImageEncoding:
        """Global features and, optionally, the dense map ``[B, D, h, w]`` from one vision pass."""
        before_last = self.vision_model.hidden_before_last(pixel_values)
        image_embeds = self.visual_projection(self.vision_model.pooled_from(before_last))
        if not with_dense:
            return ImageEncoding(image_embeds)
        dense = self.visual_projection(self.vision_model.dense_from(before_last))  # [B, h*w, D]
        g = self.grid_size
        dense_map = dense.transpose(1, 2).reshape(dense.shape[0], dense.shape[2], g, g)
        return ImageEncoding(image_embeds, dense_map)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encode_image(pixel_values, with_dense=False).image_embeds

    def get_image_dense_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, h*w, D]`` patch features (row-major over the grid)."""
        before_last = self.vision_model.hidden_before_last(pixel_values)
        return self.visual_projection(self.vision_model.dense_from(before_last))

    def _dense_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dense = self.get_image_dense_features(pixel_values)
        g = self.grid_size
        return dense.transpose(1, 2).reshape(dense.shape[0], dense.shape[2], g, g)

    def roi_features(self, dense_map: torch.Tensor, boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """``[B, K, D]`` RoI features of normalised xyxy boxes ``[B, K, 4]`` on ``dense_map [B, D, h, w]``."""
        h, w = dense_map.shape[-2:]
        scale = boxes_xyxy.new_tensor([w, h, w, h])
        out = roi_align_batched(dense_map, boxes_xyxy * scale, (1, 1), spatial_scale=1.0,
                                sampling_ratio=-1, aligned=True)
        return out[..., 0, 0]

    def get_image_box_roi_features(self, pixel_values: torch.Tensor, box_info: torch.Tensor) -> torch.Tensor:
        """``[R, D]`` for ``box_info [R, 5]`` rows ``[batch_index, x1, y1, x2, y2]`` in grid units."""
        dense_map = self._dense_map(pixel_values)
        out = roi_align(dense_map, box_info.to(dense_map.device), (1, 1), spatial_scale=1.0,
                        sampling_ratio=-1, aligned=True)
        return out[:, :, 0, 0]

    def get_image_box_roi_features_normalized(self, pixel_values: torch.Tensor,
                                              boxes_xyxy: torch.Tensor) -> torch.Tensor:
        """``[B, K, D]`` for normalised xyxy boxes ``[B, K, 4]``."""
        return self.roi_features(self._dense_map(pixel_values), boxes_xyxy.to(pixel_values.device))

    # ---- both --------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                walk_short_pos: bool = True, with_dense: bool = False) -> FGCLIPOutput:
        image = self.encode_image(pixel_values, with_dense) if pixel_values is not None else None
        text = self.get_text_features(input_ids, walk_short_pos) if input_ids is not None else None
        return FGCLIPOutput(
            image_embeds=image.image_embeds if image is not None else None,
            dense_map=image.dense_map if image is not None else None,
            text_embeds=text, logit_scale=self.logit_scale.exp())


@dataclass
class FGCLIPOutput:
    image_embeds: torch.Tensor | None
    dense_map: torch.Tensor | None
    text_embeds: torch.Tensor | None
    logit_scale: torch.Tensor
