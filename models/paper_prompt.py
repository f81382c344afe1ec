"""The STOP paper's token-space prompts (MODEL.md section 8), as building blocks for the video encoder.

The released implementation prompts pixels (models/spatial_prompt.py) and adds an inter-frame prompt to the
local prompts (models/temporal_prompt.py). The paper instead prompts the frame tokens after ln_pre:

* `cls_patch_attention`: A, the frozen CLS-to-patch attention of a frame (head-averaged, over patches).
* `PaperSpatialPrompt`: score = alpha A' + (1 - alpha) M', top-N_s patches per frame get h_ij + p_ij,
  p = P_s(h_{i-1}, h_i, h_{i+1}) (Conv3d over neighbouring frames, MLP).
* `PaperTemporalPrompt`: per gap between frames i and i+1, min(cap, ceil(eta W^t_i)) prompt tokens made from
  the frame difference dh_i = h_{i+1} - h_i (attention -> Conv3d -> MLP), K = cap slots per gap.
* `insertion_slots`: the inserted tokens as K slots opening each frame's window; models/prompted_video.py lays
  them out and hides the unused ones from its global-local attention with a key mask.

Volumes: the patch tokens of a video [B, T, N, W] are convolved as [B, W, T, g, g] (width = channels, the
patch grid = the two spatial axes, frames = depth). Choices and reasons: docs/PAPER_STOP.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.clip import ResidualAttentionBlock, attention
from models.conv3d import apply_conv3d
from models.model_config import ModelConfig


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


def _score_conv(width: int, config: ModelConfig) -> nn.Conv3d:
    """Bias-free (zero input -> zero score), variance-preserving init: E[out^2] = E[in^2] over the weights."""
    conv = _conv(width, config.paper_score_channels, config.paper_kernel, bias=False)
    nn.init.normal_(conv.weight, std=(width * math.prod(config.paper_kernel)) ** -0.5)
    return conv


class PaperSpatialPrompt(nn.Module):
    """(tokens h [B, T, 1 + N, W] after ln_pre, CLS first; attention A [B, T, N]) ->
    (prompted tokens [B, T, 1 + N, W], selected bool [B, T, N]).

    score = alpha minmax(A) + (1 - alpha) minmax(M) per frame, M = channel mean of score_conv(h)^2; the top_k
    patches of each frame are selected and get h + p, p = scale MLP(PReLU(conv(h))) (kernel depth over frames,
    zero padded). CLS and unselected patches are returned bit-identical. The prompt is multiplied by
    `straight_through_one(score)` (value 1) so that score_conv learns: d loss / d score_ij = <d loss / d h_ij, p_ij>.
    """

    def __init__(self, width: int, grid_size: int, config: ModelConfig):
        super().__init__()
        if config.paper_top_k > grid_size ** 2:
            raise ValueError(f"--paper_top_k {config.paper_top_k}: more than the {grid_size ** 2} patches of this CLIP")
        self.grid_size, self.conv_impl = grid_size, config.conv_impl
        self.alpha, self.top_k, self.scale = config.paper_alpha, config.paper_top_k, config.paper_spatial_scale
        self.score_conv = _score_conv(width, config)
        self.conv = _conv(width, config.paper_channels, config.paper_kernel)
        self.act = nn.PReLU()
        self.mlp = nn.Sequential(nn.Linear(config.paper_channels, config.paper_mlp_hidden), nn.PReLU(),
                                 nn.Linear(config.paper_mlp_hidden, width))

    def score(self, volume: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """volume [B, W, T, g, g], A [B, T, N] -> score [B, T, N]."""
        energy = from_volume(apply_conv3d(self.score_conv, volume, self.conv_impl)).square().mean(dim=-1)  # M
        return self.alpha * minmax_normalise(attention) + (1 - self.alpha) * minmax_normalise(energy)

    def forward(self, tokens: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = tokens[:, :, 1:]
        volume = to_volume(patches, self.grid_size)
        score = self.score(volume, attention)
        selected = top_k_mask(score.detach(), self.top_k)
        prompt = self.mlp(self.act(from_volume(apply_conv3d(self.conv, volume, self.conv_impl))))  # [B, T, N, W]
        prompt = prompt * self.scale * straight_through_one(score)[..., None]
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

    def __init__(self, width: int, grid_size: int, config: ModelConfig):
        super().__init__()
        self.grid_size, self.conv_impl = grid_size, config.conv_impl
        self.beta, self.eta, self.cap, self.scale = (config.paper_beta, config.paper_eta, config.paper_cap,
                                                     config.paper_temporal_scale)
        self.score_conv = _score_conv(width, config)
        self.attention = nn.MultiheadAttention(width, max(1, width // 64))
        self.conv = _conv(width, config.paper_channels, config.paper_kernel)
        self.act = nn.PReLU()
        self.to_slots = nn.Sequential(nn.Linear(grid_size ** 2, config.paper_slot_hidden), nn.PReLU(),
                                      nn.Linear(config.paper_slot_hidden, config.paper_cap))
        self.to_width = nn.Linear(config.paper_channels, width)

    def strength(self, diff: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """dh [B, T-1, N, W], selected [B, T, N] -> W^t [B, T-1] (>= 0)."""
        response = from_volume(apply_conv3d(self.score_conv, to_volume(diff, self.grid_size), self.conv_impl))
        weight = 1 + self.beta * selected[:, 1:].to(response.dtype)
        return (response.square().mean(dim=-1) * weight).mean(dim=-1)

    def prompts(self, diff: torch.Tensor) -> torch.Tensor:
        """dh [B, T-1, N, W] -> candidate tokens [B, T-1, K, W]; attention over the (T-1)*N tokens of a video."""
        mixed = attention(self.attention, diff.flatten(1, 2)).view_as(diff)
        hidden = self.act(from_volume(apply_conv3d(self.conv, to_volume(mixed, self.grid_size), self.conv_impl)))
        slots = self.to_slots(hidden.transpose(2, 3)).transpose(2, 3)  # [B, T-1, K, C]
        return self.to_width(slots) * self.scale

    def forward(self, tokens: torch.Tensor, selected: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _, width = tokens.shape
        cap = self.cap
        if t < 2:
            return (tokens.new_zeros(b, 0, cap, width), torch.zeros(b, 0, cap, dtype=torch.bool, device=tokens.device),
                    torch.zeros(b, 0, dtype=torch.long, device=tokens.device))
        patches = tokens[:, :, 1:]
        diff = patches[:, 1:] - patches[:, :-1]
        soft = (self.eta * self.strength(diff, selected)).clamp(max=cap)
        counts = soft.detach().ceil().long()
        slot_mask = torch.arange(cap, device=tokens.device) < counts[..., None]
        inserted = self.prompts(diff) * straight_through_one(soft)[..., None, None]
        return torch.where(slot_mask[..., None], inserted, torch.zeros_like(inserted)), slot_mask, counts


def insertion_slots(inserted: torch.Tensor, slot_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """inserted [B, T-1, K, W], slot_mask [B, T-1, K] (per gap) -> (slots [B, T, K, W], used bool [B, T, K]) per
    frame: frame t's window opens with the slots of the gap t-1 -> t; frame 0's slots are zeros and unused."""
    b, _, k, width = inserted.shape
    slots = torch.cat([inserted.new_zeros(b, 1, k, width), inserted], dim=1)
    return slots, torch.cat([slot_mask.new_zeros(b, 1, k), slot_mask], dim=1)
