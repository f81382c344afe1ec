"""CLIP's image encoder turned into a video encoder with global and local prompts (MODEL.md section 3).

Token layout of one video: [Pg global prompts] then, frame by frame, [CLS_t, Pl local prompts of frame t,
N patches of frame t] -> Pg + T * (1 + Pl + N) tokens. In every block the tokens of frame t attend to
[global prompts ; frame t], the global prompts attend to the whole video. Both patterns run batched over
videos and frames (two scaled_dot_product_attention calls per block).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from models.adapter import Adapter, mlp_with_adapter
from models.clip import ResidualAttentionBlock, VisionTransformer
from models.model_config import ModelConfig
from models.prompt_generator import uniform_prompt_init_
from models.spatial_prompt import SpatialPrompt
from models.temporal_prompt import TemporalPrompt


class VideoDetails(NamedTuple):
    """What STOP computed on the way, for inspection and visualisation (None without STOP)."""

    region_mask: torch.Tensor | None  # bool [B, T, g, g], the spatial prompt's kept cells (see cell layout)
    frame_weights: torch.Tensor | None  # [B, T] in [0, 1], the inter-frame weights w


def global_local_attention(attn: nn.MultiheadAttention, x: torch.Tensor, num_globals: int,
                           num_frames: int) -> torch.Tensor:
    """Attention with `attn`'s weights over normalised tokens x [B, Pg + T*S, D] laid out as [globals, frame 0
    (S tokens), frame 1, ...]: frame tokens attend to [globals ; own frame], globals to every token of their
    video. Each token is projected once; the globals' keys/values are shared by all frames. -> [B, Pg + T*S, D].

    The frames' queries, keys and values go into one buffer [3, B*T, heads, Pg + S, dh] (keys/values behind the
    video's global ones) and the outputs into one [B, Pg + T*S, D]: three large copies per call, where
    concatenating would make nine (measured: docs/BENCHMARKS.md)."""
    b, length, d = x.shape
    h, g, t = attn.num_heads, num_globals, num_frames
    s, dh = (length - g) // t, d // h
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).unflatten(-1, (3, h, dh))  # [B, L, 3, h, dh]
    video = qkv.permute(2, 0, 3, 1, 4)  # [3, B, h, L, dh]
    frames = qkv.new_empty(3, b, t, h, g + s, dh)
    frames[..., g:, :].copy_(qkv[:, g:].unflatten(1, (t, s)).permute(3, 0, 1, 4, 2, 5))
    if g:
        frames[1:, ..., :g, :].copy_(video[1:, :, None, :, :g])  # the globals' keys/values, for every frame
    q, k, v = frames.flatten(1, 2)  # [B*T, h, Pg + S, dh]
    out = qkv.new_empty(b, length, h, dh)
    out[:, g:].unflatten(1, (t, s)).copy_(
        F.scaled_dot_product_attention(q[:, :, g:], k, v).unflatten(0, (b, t)).transpose(2, 3))
    if g:
        out[:, :g].copy_(F.scaled_dot_product_attention(video[0, :, :, :g], video[1], video[2]).transpose(1, 2))
    return attn.out_proj(out.flatten(2))


def prompted_block(block: ResidualAttentionBlock, adapter: Adapter | None, x: torch.Tensor, num_globals: int,
                   num_frames: int) -> torch.Tensor:
    """One frozen CLIP block with global-local attention and the adapter: x [B, Pg + T*S, W] -> same shape."""
    x = x + global_local_attention(block.attn, block.ln_1(x), num_globals, num_frames)
    return mlp_with_adapter(block, x, adapter)


class PromptedVideoEncoder(nn.Module):
    """video [B, T, 3, H, W] + local prompts [Lp, T*Pl, W] -> [B, E].

    Holds the global prompts (config.global_visual_prompt_length), STOP's spatial and temporal prompts (when
    config.uses_stop) and the adapters (config.lora); the frozen CLIP image encoder is passed in. Frames are used
    as given: padding frames (video_mask 0) take part like the released implementation's, which ignores the mask.
    config.checkpoint_activations: when gradients are on, each visual block's activations are recomputed in the
    backward pass instead of stored (`torch.utils.checkpoint`; the same gradients, less memory, one more block
    forward).
    """

    def __init__(self, visual: VisionTransformer, config: ModelConfig):
        super().__init__()
        self.checkpoint_blocks = config.checkpoint_activations
        self.local_length, self.global_length = config.local_each_frame_prompt_length, config.global_visual_prompt_length
        self.output_type = config.visual_output_type
        self.global_prompts = nn.Parameter(torch.empty(self.global_length, visual.width))
        uniform_prompt_init_(self.global_prompts, visual.patch_size, visual.width)
        use_stop = config.uses_stop
        self.spatial_prompt = SpatialPrompt(visual.patch_size, visual.grid_size, config) if use_stop else None
        self.temporal_prompt = TemporalPrompt(visual.width, visual.grid_size ** 2, config) if use_stop else None
        self.adapters = nn.ModuleList([Adapter(visual.width, config.adapter_width, config.adapter_scale)
                                       for _ in range(visual.layers)] if config.lora else [])

    def forward(self, visual: VisionTransformer, video: torch.Tensor, local_prompts: torch.Tensor,
                return_details: bool = False) -> torch.Tensor | tuple[torch.Tensor, VideoDetails]:
        b, t = video.shape[:2]
        if local_prompts.shape[1] != t * self.local_length:
            raise ValueError(f"expected {t} x {self.local_length} local prompts per layer, got "
                             f"{local_prompts.shape[1]}")
        region_mask = frame_weights = None
        if self.spatial_prompt is not None:
            video, region_mask = self.spatial_prompt(video)
        tokens = visual.embed(video.flatten(0, 1)).unflatten(0, (b, t))  # [B, T, 1 + N, W]
        local = local_prompts.unsqueeze(1)  # [Lp, 1, T*Pl, W]
        if self.temporal_prompt is not None:
            inter_frame, frame_weights = self.temporal_prompt(tokens, region_mask)
            local = local + inter_frame
        local = local.expand(-1, b, -1, -1).unflatten(2, (t, self.local_length))  # [Lp, B, T, Pl, W]

        frames = torch.cat([tokens[:, :, :1], local[0], tokens[:, :, 1:]], dim=2)  # [B, T, S, W]
        x = torch.cat([self.global_prompts.expand(b, -1, -1), frames.flatten(1, 2)], dim=1)
        g = self.global_length
        for i, block in enumerate(visual.transformer.resblocks):
            if 0 < i < len(local):  # in place: x is the previous block's fresh output, saved by no backward
                x[:, g:].unflatten(1, (t, -1))[:, :, 1:1 + self.local_length] = local[i]
            adapter = self.adapters[i] if self.adapters else None
            if self.checkpoint_blocks and torch.is_grad_enabled():
                x = checkpoint(prompted_block, block, adapter, x, g, t, use_reentrant=False)
            else:
                x = prompted_block(block, adapter, x, g, t)
        features = self.pool(visual, x, t)
        return (features, VideoDetails(region_mask, frame_weights)) if return_details else features

    def pool(self, visual: VisionTransformer, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Final tokens x [B, Pg + T*S, W] -> video feature [B, E] (ln_post and proj per token, then the mean)."""
        g = self.global_length
        if self.output_type == "global_prompt0":
            chosen = x[:, :1]
        elif self.output_type == "average_global_prompt":
            chosen = x[:, :g]
        else:
            cls = x[:, g:].unflatten(1, (num_frames, -1))[:, :, 0]  # [B, T, W]
            chosen = cls if self.output_type == "average_frame_cls_token" else torch.cat([x[:, :g], cls], dim=1)
        return (visual.ln_post(chosen) @ visual.proj).mean(dim=1)
