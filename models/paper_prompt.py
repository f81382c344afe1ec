"""The STOP paper's token-space prompts (MODEL.md section 8), as building blocks for the video encoder.

The released implementation prompts pixels (models/spatial_prompt.py) and adds an inter-frame prompt to the
local prompts (models/temporal_prompt.py). The paper instead prompts the frame tokens after ln_pre:

* `cls_patch_attention`: A, the frozen CLS-to-patch attention of a frame (head-averaged, over patches).
* `PaperSpatialPrompt`: score = alpha A' + (1 - alpha) M', top-N_s patches per frame get h_ij + p_ij,
  p = P_s(h_{i-1}, h_i, h_{i+1}) (Conv3d over neighbouring frames, MLP).
* `PaperTemporalPrompt`: per gap between frames i and i+1, min(cap, ceil(eta W^t_i)) prompt tokens made from
  the frame difference dh_i = h_{i+1} - h_i (attention -> Conv3d -> MLP), K = cap slots per gap.
* `layout_tokens` / `SlotLayout` / `masked_global_local_attention`: the token sequence with the inserted slots
  and the global-local attention that ignores unused slots.

Volumes: the patch tokens of a video [B, T, N, W] are convolved as [B, W, T, g, g] (width = channels, the
patch grid = the two spatial axes, frames = depth). Choices and reasons: docs/PAPER_STOP.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.clip import ResidualAttentionBlock, attention
from models.conv3d import apply_conv3d


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class PaperPromptConfig:
    """Hyperparameters of the paper's spatial and temporal prompts; every size is independent of the ViT."""

    alpha: float = 0.5  # weight of the CLS attention A' against the conv energy M' in the spatial score
    beta: float = 1.0  # extra weight of selected patches in the temporal score W^t
    eta: float = 4.0  # inserted prompts per gap = min(cap, ceil(eta * W^t))
    top_k: int = 6  # N_s, prompted patches per frame
    cap: int = 4  # K, the most prompts inserted per gap (= slots per gap)
    spatial_scale: float = 0.05  # p = spatial_scale * P_s(...)
    temporal_scale: float = 0.05  # inserted tokens = temporal_scale * prompter(dh)
    kernel: tuple[int, int, int] = (3, 3, 3)  # every Conv3d, (frames, grid rows, grid columns), "same" padded
    channels: int = 32  # output channels of the two prompters' convolutions
    score_channels: int = 8  # output channels of the two (bias-free) score convolutions
    mlp_hidden: int = 32  # hidden size of the spatial prompter's MLP
    slot_hidden: int = 16  # hidden size of the temporal prompter's patches -> slots MLP
    heads: int | None = None  # temporal prompter's attention heads; None = width // 64 (at least 1)

    def __post_init__(self):
        checks = {
            "alpha": (0 <= self.alpha <= 1, "a number in [0, 1]"),
            "beta": (self.beta >= 0, "a number >= 0"),
            "eta": (self.eta > 0 and math.isfinite(self.eta), "a finite number > 0"),
            "top_k": (_is_int(self.top_k) and self.top_k >= 1, "an integer >= 1"),
            "cap": (_is_int(self.cap) and self.cap >= 1, "an integer >= 1"),
            "spatial_scale": (math.isfinite(self.spatial_scale), "a finite number"),
            "temporal_scale": (math.isfinite(self.temporal_scale), "a finite number"),
            "kernel": (len(self.kernel) == 3 and all(_is_int(k) and k >= 1 and k % 2 for k in self.kernel),
                       "three odd positive integers"),
            "channels": (_is_int(self.channels) and self.channels >= 1, "an integer >= 1"),
            "score_channels": (_is_int(self.score_channels) and self.score_channels >= 1, "an integer >= 1"),
            "mlp_hidden": (_is_int(self.mlp_hidden) and self.mlp_hidden >= 1, "an integer >= 1"),
            "slot_hidden": (_is_int(self.slot_hidden) and self.slot_hidden >= 1, "an integer >= 1"),
            "heads": (self.heads is None or (_is_int(self.heads) and self.heads >= 1), "None or an integer >= 1"),
        }
        for name, (ok, requirement) in checks.items():
            if not ok:
                raise ValueError(f"PaperPromptConfig.{name} = {getattr(self, name)!r}: must be {requirement}")


@torch.no_grad()
def cls_patch_attention(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """Head-averaged softmax attention of the CLS token over the patches in frozen `block` (its ln_1 and
    attention weights): x [B*T, 1 + N, W], the block's input with CLS first -> A [B*T, N], each row renormalised
    over the N patches to sum to 1. The softmax runs over all 1 + N keys, as in CLIP's own forward."""
    attn, y = block.attn, block.ln_1(x)
    heads, width = attn.num_heads, x.shape[-1]
    w_q, w_k, _ = attn.in_proj_weight.chunk(3)
    b_q, b_k, _ = attn.in_proj_bias.chunk(3)
    q = F.linear(y[:, :1], w_q, b_q).unflatten(-1, (heads, -1)).transpose(1, 2)  # [B*T, h, 1, dh]
    k = F.linear(y, w_k, b_k).unflatten(-1, (heads, -1)).transpose(1, 2)  # [B*T, h, 1 + N, dh]
    weights = (q @ k.transpose(-1, -2) * (width // heads) ** -0.5).softmax(dim=-1)
    patches = weights.mean(dim=1)[:, 0, 1:]
    return patches / patches.sum(dim=-1, keepdim=True)


def minmax_normalise(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalise along the last axis to [0, 1]; a constant row becomes zeros."""
    low = x.amin(dim=-1, keepdim=True)
    spread = x.amax(dim=-1, keepdim=True) - low
    return (x - low) / torch.where(spread > 0, spread, torch.ones_like(spread))


def top_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """bool mask of the k largest entries along the last axis; ties go to the lower index (stable sort)."""
    index = score.sort(dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(score, dtype=torch.bool).scatter_(-1, index, True)


def straight_through_one(x: torch.Tensor) -> torch.Tensor:
    """Exactly 1 in value, gradient 1 with respect to x: 1 + (x - x.detach())."""
    return 1 + (x - x.detach())


def to_volume(patches: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, T, N, W] -> [B, W, T, g, g] (channels = width, depth = frames, the patch grid row-major)."""
    return patches.unflatten(2, (grid, grid)).permute(0, 4, 1, 2, 3)


def from_volume(volume: torch.Tensor) -> torch.Tensor:
    """[B, C, T, g, g] -> [B, T, N, C]."""
    return volume.permute(0, 2, 3, 4, 1).flatten(2, 3)


def _conv(in_channels: int, out_channels: int, kernel: tuple[int, int, int], bias: bool = True) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel, padding=tuple(k // 2 for k in kernel), bias=bias)


def _score_conv(width: int, config: PaperPromptConfig) -> nn.Conv3d:
    """Bias-free (zero input -> zero score), variance-preserving init: E[out^2] = E[in^2] over the weights."""
    conv = _conv(width, config.score_channels, config.kernel, bias=False)
    nn.init.normal_(conv.weight, std=(width * math.prod(config.kernel)) ** -0.5)
    return conv


def _check_grid(width: int, grid_size: int, config: PaperPromptConfig) -> None:
    if config.top_k > grid_size ** 2:
        raise ValueError(f"PaperPromptConfig.top_k = {config.top_k}: more than the {grid_size ** 2} patches")
    heads = config.heads or max(1, width // 64)
    if width % heads:
        raise ValueError(f"PaperPromptConfig.heads = {heads}: does not divide the width {width}")


class PaperSpatialPrompt(nn.Module):
    """(tokens h [B, T, 1 + N, W] after ln_pre, CLS first; attention A [B, T, N]) ->
    (prompted tokens [B, T, 1 + N, W], selected bool [B, T, N]).

    score = alpha minmax(A) + (1 - alpha) minmax(M) per frame, M = channel mean of score_conv(h)^2; the top_k
    patches of each frame are selected and get h + p, p = scale MLP(PReLU(conv(h))) (kernel depth over frames,
    zero padded). CLS and unselected patches are returned bit-identical. The prompt is multiplied by
    `straight_through_one(score)` (value 1) so that score_conv learns: d loss / d score_ij = <d loss / d h_ij, p_ij>.
    """

    def __init__(self, width: int, grid_size: int, config: PaperPromptConfig = PaperPromptConfig(),
                 conv_impl: str = "direct"):
        super().__init__()
        _check_grid(width, grid_size, config)
        self.grid_size, self.config, self.conv_impl = grid_size, config, conv_impl
        self.score_conv = _score_conv(width, config)
        self.conv = _conv(width, config.channels, config.kernel)
        self.act = nn.PReLU()
        self.mlp = nn.Sequential(nn.Linear(config.channels, config.mlp_hidden), nn.PReLU(),
                                 nn.Linear(config.mlp_hidden, width))

    def score(self, volume: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """volume [B, W, T, g, g], A [B, T, N] -> score [B, T, N]."""
        energy = from_volume(apply_conv3d(self.score_conv, volume, self.conv_impl)).square().mean(dim=-1)  # M
        alpha = self.config.alpha
        return alpha * minmax_normalise(attention) + (1 - alpha) * minmax_normalise(energy)

    def forward(self, tokens: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = tokens[:, :, 1:]
        volume = to_volume(patches, self.grid_size)
        score = self.score(volume, attention)
        selected = top_k_mask(score.detach(), self.config.top_k)
        prompt = self.mlp(self.act(from_volume(apply_conv3d(self.conv, volume, self.conv_impl))))  # [B, T, N, W]
        prompt = prompt * self.config.spatial_scale * straight_through_one(score)[..., None]
        prompted = torch.where(selected[..., None], patches + prompt, patches)
        return torch.cat([tokens[:, :, :1], prompted], dim=2), selected


class PaperTemporalPrompt(nn.Module):
    """(tokens h [B, T, 1 + N, W], selected bool [B, T, N]) ->
    (inserted tokens [B, T-1, K, W], slot mask bool [B, T-1, K], counts int64 [B, T-1]), K = cap.

    Gap i (frames i -> i+1) has dh_i = h_{i+1} - h_i over the patches, W^t_i = mean over patches and channels of
    (1 + beta r_{i+1,j}) score_conv(dh)^2 (r of the later frame, as the paper's dh_i = h_i - h_{i-1} uses r_i)
    and count_i = min(cap, ceil(eta W^t_i)); slot k of gap i is used iff k < count_i, unused slots are zeros.
    score_conv has no bias, so a static video (dh = 0) gets W^t = 0 and no prompt. The tokens are
    scale * Linear(MLP_over_patches(PReLU(conv(MHA(dh))))), multiplied by straight_through_one(min(cap, eta W^t))
    (value 1): the count itself is an integer without gradient, W^t learns through the tokens it admits.
    """

    def __init__(self, width: int, grid_size: int, config: PaperPromptConfig = PaperPromptConfig(),
                 conv_impl: str = "direct"):
        super().__init__()
        _check_grid(width, grid_size, config)
        self.grid_size, self.config, self.conv_impl = grid_size, config, conv_impl
        self.score_conv = _score_conv(width, config)
        self.attention = nn.MultiheadAttention(width, config.heads or max(1, width // 64))
        self.conv = _conv(width, config.channels, config.kernel)
        self.act = nn.PReLU()
        self.to_slots = nn.Sequential(nn.Linear(grid_size ** 2, config.slot_hidden), nn.PReLU(),
                                      nn.Linear(config.slot_hidden, config.cap))
        self.to_width = nn.Linear(config.channels, width)

    def strength(self, diff: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """dh [B, T-1, N, W], selected [B, T, N] -> W^t [B, T-1] (>= 0)."""
        response = from_volume(apply_conv3d(self.score_conv, to_volume(diff, self.grid_size), self.conv_impl))
        weight = 1 + self.config.beta * selected[:, 1:].to(response.dtype)
        return (response.square().mean(dim=-1) * weight).mean(dim=-1)

    def prompts(self, diff: torch.Tensor) -> torch.Tensor:
        """dh [B, T-1, N, W] -> candidate tokens [B, T-1, K, W]; attention over the (T-1)*N tokens of a video."""
        mixed = attention(self.attention, diff.flatten(1, 2)).view_as(diff)
        hidden = self.act(from_volume(apply_conv3d(self.conv, to_volume(mixed, self.grid_size), self.conv_impl)))
        slots = self.to_slots(hidden.transpose(2, 3)).transpose(2, 3)  # [B, T-1, K, C]
        return self.to_width(slots) * self.config.temporal_scale

    def forward(self, tokens: torch.Tensor, selected: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _, width = tokens.shape
        cap = self.config.cap
        if t < 2:
            return (tokens.new_zeros(b, 0, cap, width), torch.zeros(b, 0, cap, dtype=torch.bool, device=tokens.device),
                    torch.zeros(b, 0, dtype=torch.long, device=tokens.device))
        patches = tokens[:, :, 1:]
        diff = patches[:, 1:] - patches[:, :-1]
        soft = (self.config.eta * self.strength(diff, selected)).clamp(max=cap)
        counts = soft.detach().ceil().long()
        slot_mask = torch.arange(cap, device=tokens.device) < counts[..., None]
        inserted = self.prompts(diff) * straight_through_one(soft)[..., None, None]
        return torch.where(slot_mask[..., None], inserted, torch.zeros_like(inserted)), slot_mask, counts


class SlotLayout(NamedTuple):
    """Token sequence [Pg globals] then per frame t: [K slots (gap t-1 -> t; frame 0: unused), CLS_t,
    Pl local prompts, N patches] -> length Pg + T (K + 1 + Pl + N)."""

    num_globals: int
    num_frames: int
    num_slots: int
    num_local: int

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


def layout_tokens(global_prompts: torch.Tensor, tokens: torch.Tensor, local: torch.Tensor, inserted: torch.Tensor,
                  slot_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, SlotLayout]:
    """global_prompts [B, Pg, W], frame tokens [B, T, 1 + N, W] (CLS first), local prompts [B, T, Pl, W],
    inserted [B, T-1, K, W], slot_mask [B, T-1, K] -> (x [B, L, W], key_mask bool [B, L] (False = unused slot),
    SlotLayout). Gap i's slots open frame i+1's window; frame 0's K slots are zeros and masked."""
    b, t = tokens.shape[:2]
    k = inserted.shape[2]
    slots = torch.cat([inserted.new_zeros(b, 1, k, inserted.shape[-1]), inserted], dim=1)  # [B, T, K, W]
    frames = torch.cat([slots, tokens[:, :, :1], local, tokens[:, :, 1:]], dim=2)
    x = torch.cat([global_prompts, frames.flatten(1, 2)], dim=1)
    slot_keys = torch.cat([slot_mask.new_zeros(b, 1, k), slot_mask], dim=1)
    frame_keys = torch.cat([slot_keys, slot_mask.new_ones(b, t, frames.shape[2] - k)], dim=2)
    key_mask = torch.cat([slot_mask.new_ones(b, global_prompts.shape[1]), frame_keys.flatten(1)], dim=1)
    return x, key_mask, SlotLayout(global_prompts.shape[1], t, k, local.shape[2])


def masked_global_local_attention(attn: nn.MultiheadAttention, x: torch.Tensor, num_globals: int, num_frames: int,
                                  key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """models.prompted_video.global_local_attention with a key mask: x [B, Pg + T*S, D] normalised tokens laid out
    [globals, frame 0 (S tokens), frame 1, ...]; frame tokens attend to [globals ; own frame], globals to the whole
    video, and nobody attends to a key whose key_mask [B, L] is False. Queries at masked positions get some output
    that no unmasked output depends on. Every frame window needs one unmasked token (CLS). -> [B, L, D].
    Without key_mask it computes exactly what global_local_attention computes (the same buffers and kernels)."""
    b, length, d = x.shape
    h, g, t = attn.num_heads, num_globals, num_frames
    if (length - g) % t:
        raise ValueError(f"{length - g} frame tokens do not split into {t} frames")
    s, dh = (length - g) // t, d // h
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).unflatten(-1, (3, h, dh))  # [B, L, 3, h, dh]
    video = qkv.permute(2, 0, 3, 1, 4)  # [3, B, h, L, dh]
    frames = qkv.new_empty(3, b, t, h, g + s, dh)
    frames[..., g:, :].copy_(qkv[:, g:].unflatten(1, (t, s)).permute(3, 0, 1, 4, 2, 5))
    if g:
        frames[1:, ..., :g, :].copy_(video[1:, :, None, :, :g])  # the globals' keys/values, for every frame
    q, k, v = frames.flatten(1, 2)  # [B*T, h, Pg + S, dh]
    frame_mask = video_mask = None
    if key_mask is not None:
        video_mask = key_mask[:, None, None, :]  # [B, 1, 1, L]
        frame_keys = torch.cat([key_mask[:, None, :g].expand(b, t, g), key_mask[:, g:].unflatten(1, (t, s))], dim=2)
        frame_mask = frame_keys.flatten(0, 1)[:, None, None, :]  # [B*T, 1, 1, Pg + S]
    out = qkv.new_empty(b, length, h, dh)
    out[:, g:].unflatten(1, (t, s)).copy_(
        F.scaled_dot_product_attention(q[:, :, g:], k, v, attn_mask=frame_mask).unflatten(0, (b, t)).transpose(2, 3))
    if g:
        out[:, :g].copy_(F.scaled_dot_product_attention(video[0, :, :, :g], video[1], video[2],
                                                        attn_mask=video_mask).transpose(1, 2))
    return attn.out_proj(out.flatten(2))
