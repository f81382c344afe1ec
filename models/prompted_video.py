"""CLIP's image encoder turned into a video encoder with global and local prompts (MODEL.md section 3).

Token layout of one video: [Pg global prompts] then, frame by frame, [CLS_t, Pl local prompts of frame t,
N patches of frame t] -> Pg + T * (1 + Pl + N) tokens. In every block the tokens of frame t attend to
[global prompts ; frame t], the global prompts attend to the whole video. Both patterns run batched over
videos and frames (two scaled_dot_product_attention calls per block). The last block runs only for the tokens the
video feature reads (`readout_block`, --visual_output_type): their values, and no others, are what it outputs.

The paper's STOP (`--temporal_prompt paper`, models/paper_prompt.py) prompts the frame tokens instead of the
pixels and inserts up to K prompt tokens between frames: each frame's window then starts with the K slots of
the gap before it, [slots, CLS_t, local prompts, patches], and a key mask hides the unused slots.
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
from models.paper_prompt import PaperSpatialPrompt, PaperTemporalPrompt, cls_patch_attention, insertion_slots
from models.prompt_generator import uniform_prompt_init_
from models.spatial_prompt import SpatialPrompt
from models.temporal_prompt import TemporalPrompt


class VideoDetails(NamedTuple):
    """What STOP computed on the way, for inspection and visualisation (None where the model has no such part)."""

    region_mask: torch.Tensor | None = None  # bool [B, T, g, g], released STOP: the kept cells (see cell layout)
    frame_weights: torch.Tensor | None = None  # [B, T] in [0, 1], released STOP: the inter-frame weights w
    selected_patches: torch.Tensor | None = None  # bool [B, T, g, g], paper STOP: the spatially prompted patches
    inserted_prompts: torch.Tensor | None = None  # int64 [B, T-1], paper STOP: prompt tokens before frame t+1


class SlotLayout(NamedTuple):
    """Token sequence [Pg globals] then per frame t: [K insertion slots (the paper's STOP; K = 0 otherwise),
    CLS_t, Pl local prompts, N patches] -> length Pg + T (K + 1 + Pl + N)."""

    num_globals: int
    num_frames: int
    num_slots: int
    num_local: int
    num_patches: int

    def key_mask(self, used: torch.Tensor) -> torch.Tensor:
        """used bool [B, T, K] (which slots hold an inserted prompt) -> key mask [B, L] for global_local_attention:
        True everywhere but at the unused slots."""
        b, rest = used.shape[0], 1 + self.num_local + self.num_patches
        frames = torch.cat([used, used.new_ones(b, self.num_frames, rest)], dim=2)
        return torch.cat([used.new_ones(b, self.num_globals), frames.flatten(1)], dim=1)

    @property
    def cls(self) -> int:
        """Index of CLS inside a frame's window."""
        return self.num_slots

    @property
    def local(self) -> slice:
        """The local prompts inside a frame's window."""
        return slice(self.num_slots + 1, self.num_slots + 1 + self.num_local)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, W] -> a view [B, T, K + 1 + Pl + N, W] of the frame windows (writable in place)."""
        return x[:, self.num_globals:].unflatten(1, (self.num_frames, -1))

    def frame_cls(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, W] -> the frames' CLS tokens [B, T, W]."""
        return self.frames(x)[:, :, self.cls]


def lay_out(global_prompts: torch.Tensor, tokens: torch.Tensor, local: torch.Tensor,
            slots: torch.Tensor | None = None) -> tuple[torch.Tensor, SlotLayout]:
    """global_prompts [B, Pg, W], frame tokens [B, T, 1 + N, W] (CLS first), local prompts [B, T, Pl, W],
    insertion slots [B, T, K, W] or None -> (x [B, L, W], its SlotLayout)."""
    parts = [tokens[:, :, :1], local, tokens[:, :, 1:]]
    frames = torch.cat(parts if slots is None else [slots] + parts, dim=2)  # [B, T, S, W]
    layout = SlotLayout(global_prompts.shape[1], tokens.shape[1], 0 if slots is None else slots.shape[2],
                        local.shape[2], tokens.shape[2] - 1)
    return torch.cat([global_prompts, frames.flatten(1, 2)], dim=1), layout


def frame_windows(heads: torch.Tensor, num_globals: int, num_frames: int, with_globals_from: int) -> torch.Tensor:
    """Per-head projections heads [B, Pg + T*S, m, h, dh] (m of query/key/value) -> one buffer [m, B*T, h, Pg + S, dh]:
    frame t's window, its S tokens behind Pg slots that hold the video's globals for entries
    m >= with_globals_from (keys/values; a query buffer leaves them unset)."""
    b, length, m, h, dh = heads.shape
    g, t = num_globals, num_frames
    s = (length - g) // t
    frames = heads.new_empty(m, b, t, h, g + s, dh)
    frames[..., g:, :].copy_(heads[:, g:].unflatten(1, (t, s)).permute(3, 0, 1, 4, 2, 5))
    if g:
        globals_ = heads[:, :g, with_globals_from:].permute(2, 0, 3, 1, 4)  # [m', B, h, Pg, dh]
        frames[with_globals_from:, ..., :g, :].copy_(globals_[:, :, None])
    return frames.flatten(1, 2)


def frame_key_mask(key_mask: torch.Tensor | None, num_globals: int, num_frames: int) -> torch.Tensor | None:
    """key_mask bool [B, Pg + T*S] (or None) -> the frames' windows' key mask [B*T, 1, 1, Pg + S] (or None)."""
    if key_mask is None:
        return None
    b, g, t = key_mask.shape[0], num_globals, num_frames
    frame_keys = torch.cat([key_mask[:, None, :g].expand(b, t, g), key_mask[:, g:].unflatten(1, (t, -1))], dim=2)
    return frame_keys.flatten(0, 1)[:, None, None, :]


def _split_frames(length: int, num_globals: int, num_frames: int) -> int:
    """Tokens per frame window S of a sequence of `length` = Pg + T*S (ValueError if T does not divide)."""
    if (length - num_globals) % num_frames:
        raise ValueError(f"{length - num_globals} frame tokens do not split into {num_frames} frames")
    return (length - num_globals) // num_frames


def global_local_attention(attn: nn.MultiheadAttention, x: torch.Tensor, num_globals: int, num_frames: int,
                           key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention with `attn`'s weights over normalised tokens x [B, Pg + T*S, D] laid out as [globals, frame 0
    (S tokens), frame 1, ...]: frame tokens attend to [globals ; own frame], globals to every token of their
    video. Each token is projected once; the globals' keys/values are shared by all frames. -> [B, Pg + T*S, D].
    key_mask bool [B, Pg + T*S] (the paper's unused insertion slots False): nobody attends to a False key; the
    outputs at False positions are some values no other output depends on. Every frame window needs a True key.

    The frames' queries, keys and values go into one buffer [3, B*T, heads, Pg + S, dh] (keys/values behind the
    video's global ones) and the outputs into one [B, Pg + T*S, D]: three large copies per call, where
    concatenating would make nine (measured: docs/BENCHMARKS.md)."""
    b, length, d = x.shape
    h, g, t = attn.num_heads, num_globals, num_frames
    s, dh = _split_frames(length, g, t), d // h
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).unflatten(-1, (3, h, dh))  # [B, L, 3, h, dh]
    video = qkv.permute(2, 0, 3, 1, 4)  # [3, B, h, L, dh]
    q, k, v = frame_windows(qkv, g, t, 1)  # [B*T, h, Pg + S, dh]
    out = qkv.new_empty(b, length, h, dh)
    out[:, g:].unflatten(1, (t, s)).copy_(F.scaled_dot_product_attention(
        q[:, :, g:], k, v, attn_mask=frame_key_mask(key_mask, g, t)).unflatten(0, (b, t)).transpose(2, 3))
    if g:
        video_mask = None if key_mask is None else key_mask[:, None, None, :]
        out[:, :g].copy_(F.scaled_dot_product_attention(video[0, :, :, :g], video[1], video[2],
                                                        attn_mask=video_mask).transpose(1, 2))
    return attn.out_proj(out.flatten(2))


def prompted_block(block: ResidualAttentionBlock, adapter: Adapter | None, x: torch.Tensor, num_globals: int,
                   num_frames: int, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One frozen CLIP block with global-local attention and the adapter: x [B, Pg + T*S, W] -> same shape."""
    x = x + global_local_attention(block.attn, block.ln_1(x), num_globals, num_frames, key_mask)
    return mlp_with_adapter(block, x, adapter)


def readout_block(block: ResidualAttentionBlock, adapter: Adapter | None, x: torch.Tensor, layout: SlotLayout,
                  read_globals: int, read_cls: bool, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`prompted_block` computed only for the tokens a video feature reads (the last block: no later block needs
    the others): the first `read_globals` global prompts and, with read_cls, every frame's CLS.
    x [B, L, W] -> [B, read_globals (+ T), W], the globals first. Every token's keys and values are projected;
    the queries, the output projection, the MLP and the adapter run on the read tokens only (the same values
    as the rows of prompted_block's output, to float32 rounding)."""
    attn = block.attn
    b, length, d = x.shape
    h, g, t = attn.num_heads, layout.num_globals, layout.num_frames
    _split_frames(length, g, t)
    (w_q, w_kv), (b_q, b_kv) = attn.in_proj_weight.split([d, 2 * d]), attn.in_proj_bias.split([d, 2 * d])
    normed = block.ln_1(x)
    kv = F.linear(normed, w_kv, b_kv).unflatten(-1, (2, h, d // h))  # [B, L, 2, h, dh]
    rows, outputs = [], []
    if read_globals:
        q = F.linear(normed[:, :read_globals], w_q, b_q).unflatten(-1, (h, d // h)).transpose(1, 2)
        k, v = kv.permute(2, 0, 3, 1, 4)  # [B, h, L, dh]
        video_mask = None if key_mask is None else key_mask[:, None, None, :]
        outputs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=video_mask).transpose(1, 2).flatten(2))
        rows.append(x[:, :read_globals])
    if read_cls:
        q = F.linear(layout.frame_cls(normed), w_q, b_q).unflatten(-1, (h, d // h)).flatten(0, 1)[:, :, None]
        k, v = frame_windows(kv, g, t, 0)  # [B*T, h, Pg + S, dh]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=frame_key_mask(key_mask, g, t))  # [B*T, h, 1, dh]
        outputs.append(out.reshape(b, t, d))
        rows.append(layout.frame_cls(x))
    read = torch.cat(rows, dim=1) + attn.out_proj(torch.cat(outputs, dim=1))
    return mlp_with_adapter(block, read, adapter)


class PromptedVideoEncoder(nn.Module):
    """video [B, T, 3, H, W] + local prompts [Lv, T*Pl, W] (Lv: the visual prompt depth) -> [B, E].

    Holds the global prompts (config.global_visual_prompt_length), STOP's spatial and temporal prompts (released:
    config.uses_stop; the paper's: config.uses_paper_stop; config.stop_prompts keeps one of the two) and the
    adapters (config.lora); the frozen CLIP image encoder is passed in. Frames are used as given: padding frames
    (video_mask 0) take part like the released implementation's, which ignores the mask.
    config.checkpoint_activations: when gradients are on, each visual block's activations are recomputed in the
    backward pass instead of stored (`torch.utils.checkpoint`; the same gradients, less memory, one more block
    forward).
    """

    def __init__(self, visual: VisionTransformer, config: ModelConfig):
        super().__init__()
        self.checkpoint_blocks = config.checkpoint_activations
        self.local_length = config.local_each_frame_prompt_length
        self.global_length = config.global_visual_prompt_length
        g = self.global_length  # the video feature: the mean of the last block's outputs at these tokens
        self.read_tokens = {"global_prompt0": (1, False), "average_global_prompt": (g, False),  # (globals, frame CLS)
                            "average_frame_cls_token": (0, True),
                            "average_global_prompt_and_frame_cls_token": (g, True)}[config.visual_output_type]
        self.global_prompts = nn.Parameter(torch.empty(self.global_length, visual.width))
        uniform_prompt_init_(self.global_prompts, visual.patch_size, visual.width)
        spatial, temporal = config.uses_spatial_prompt, config.uses_temporal_prompt
        released, paper = config.uses_stop, config.uses_paper_stop
        self.spatial_prompt = (SpatialPrompt(visual.patch_size, visual.grid_size, config)
                               if released and spatial else None)
        self.temporal_prompt = (TemporalPrompt(visual.width, visual.grid_size ** 2, config)
                                if released and temporal else None)
        self.paper_spatial_prompt = (PaperSpatialPrompt(visual.width, visual.grid_size, config)
                                     if paper and spatial else None)
        self.paper_temporal_prompt = (PaperTemporalPrompt(visual.width, visual.grid_size, config)
                                      if paper and temporal else None)
        self.attention_layer = config.paper_attention_layer
        if paper and spatial and not self.attention_layer < visual.layers:
            raise ValueError(f"--paper_attention_layer {self.attention_layer}: this CLIP has {visual.layers} blocks")
        self.adapters = nn.ModuleList([Adapter(visual.width, config.adapter_width, config.adapter_scale)
                                       for _ in range(visual.layers)] if config.lora else [])

    def forward(self, visual: VisionTransformer, video: torch.Tensor, local_prompts: torch.Tensor,
                return_details: bool = False) -> torch.Tensor | tuple[torch.Tensor, VideoDetails]:
        b, t = video.shape[:2]
        if local_prompts.shape[1] != t * self.local_length:
            raise ValueError(f"expected {t} x {self.local_length} local prompts per layer, got "
                             f"{local_prompts.shape[1]}")
        details = {}
        if self.spatial_prompt is not None:
            video, details["region_mask"] = self.spatial_prompt(video)
        tokens = visual.embed(video.flatten(0, 1)).unflatten(0, (b, t))  # [B, T, 1 + N, W]
        local = local_prompts.unsqueeze(1)  # [Lv, 1, T*Pl, W]
        if self.temporal_prompt is not None:
            cells = details.get("region_mask")
            if cells is None:  # --stop_prompts temporal: no spatial mask, every cell weighs alike
                g = visual.grid_size
                cells = torch.zeros(b, t, g, g, dtype=torch.bool, device=video.device)
            inter_frame, details["frame_weights"] = self.temporal_prompt(tokens, cells)
            local = local + inter_frame
        local = local.expand(-1, b, -1, -1).unflatten(2, (t, self.local_length))  # [Lv, B, T, Pl, W]
        tokens, slots, used = self.paper_prompts(visual, tokens, details)

        g = self.global_length
        x, layout = lay_out(self.global_prompts.expand(b, -1, -1), tokens, local[0], slots)
        key_mask = None if used is None else layout.key_mask(used)
        blocks = visual.transformer.resblocks
        for i, block in enumerate(blocks):
            if 0 < i < len(local):  # in place: x is the previous block's fresh output, saved by no backward
                layout.frames(x)[:, :, layout.local] = local[i]
            adapter = self.adapters[i] if self.adapters else None
            last = i == len(blocks) - 1
            run, args = (readout_block, (layout, *self.read_tokens)) if last else (prompted_block, (g, t))
            if self.checkpoint_blocks and torch.is_grad_enabled():
                x = checkpoint(run, block, adapter, x, *args, key_mask, use_reentrant=False)
            else:
                x = run(block, adapter, x, *args, key_mask)
        features = (visual.ln_post(x) @ visual.proj).mean(dim=1)  # x: the read tokens [B, n, W]
        return (features, VideoDetails(**details)) if return_details else features

    def paper_prompts(self, visual: VisionTransformer, tokens: torch.Tensor, details: dict
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The paper's prompts on frame tokens [B, T, 1 + N, W] -> (prompted tokens, insertion slots [B, T, K, W]
        (gap t-1 -> t before frame t; frame 0's unused) and which are used [B, T, K], or None, None); fills
        `details`."""
        if self.paper_spatial_prompt is None and self.paper_temporal_prompt is None:
            return tokens, None, None
        b, t, n = tokens.shape[0], tokens.shape[1], tokens.shape[2] - 1
        grid = visual.grid_size
        selected = torch.zeros(b, t, n, dtype=torch.bool, device=tokens.device)
        prompted = tokens
        if self.paper_spatial_prompt is not None:
            prompted, selected = self.paper_spatial_prompt(tokens, self.patch_attention(visual, tokens))
            details["selected_patches"] = selected.unflatten(2, (grid, grid))
        if self.paper_temporal_prompt is None:
            return prompted, None, None
        inserted, slot_mask, details["inserted_prompts"] = self.paper_temporal_prompt(tokens, selected)  # clean
        return (prompted, *insertion_slots(inserted, slot_mask))

    @torch.no_grad()
    def patch_attention(self, visual: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
        """A [B, T, N]: the CLS-to-patch attention of block --paper_attention_layer on the unprompted frames."""
        x = tokens.flatten(0, 1)
        blocks = visual.transformer.resblocks
        for block in blocks[:self.attention_layer]:
            x = block(x)
        return cls_patch_attention(blocks[self.attention_layer], x).unflatten(0, tokens.shape[:2])
