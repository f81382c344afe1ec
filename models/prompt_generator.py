"""DGL's shared latent space: the input-independent layer prompts of the text and the visual branch.

A generator is called once per forward (the prompts are the same for every sample) and returns `LayerPrompts`:
text [Lt, Pt, Wt] (per layer: Pt // 2 prefix then the postfix prompts) and visual local prompts [Lv, T*Pl, W]
(frame-major: frame t owns rows t*Pl .. t*Pl + Pl - 1). The latent space has Lp = max(Lv, Lt) layers; the text
prompts are read from its first Lt, the visual ones from its first Lv (Lv = Lt = Lp on ViT-B; ViT-L/14 has
Lv = 24 visual and Lt = 12 text layers).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from models.clip import QuickGELU, ResidualAttentionBlock


class LayerPrompts(NamedTuple):
    text: torch.Tensor  # [Lt, Pt, Wt]
    visual: torch.Tensor  # [Lv, T * Pl, W]


def uniform_prompt_init_(tensor: torch.Tensor, patch_size: int, width: int) -> torch.Tensor:
    """VPT's init, as released: uniform in +-sqrt(6 / (3 * patch * patch + width))."""
    bound = math.sqrt(6.0 / (3 * patch_size * patch_size + width))
    return nn.init.uniform_(tensor, -bound, bound)


class TransformerPromptGenerator(nn.Module):
    """DGL-Transformer: an embedding table of Pt + T*Pl rows of size Lp*W, each layer's slice run as one sequence
    through a pre-LN transformer block of width W; text prompts (of the first text_layers slices) then go through
    an MLP W -> 2W -> Wt. Beyond the text depth the text rows stay in the sequence, context for the visual ones."""

    def __init__(self, width: int, text_width: int, visual_layers: int, text_layers: int, text_length: int,
                 local_length: int, num_frames: int):
        super().__init__()
        layers = max(visual_layers, text_layers)
        self.width, self.layers, self.text_length = width, layers, text_length
        self.visual_layers, self.text_layers = visual_layers, text_layers
        self.local_length, self.num_frames = local_length, num_frames
        self.embedding = nn.Embedding(text_length + num_frames * local_length, layers * width)
        self.block = ResidualAttentionBlock(width, width // 64)
        self.text_mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 2 * width)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(2 * width, text_width)),
        ]))

    def forward(self, num_frames: int) -> LayerPrompts:
        if num_frames != self.num_frames:
            raise ValueError(f"the transformer latent space was built for {self.num_frames} frames (--max_frames) "
                             f"and holds one set of local prompts per frame; got a video of {num_frames} frames")
        rows = self.embedding.weight.view(-1, self.layers, self.width).transpose(0, 1)  # [Lp, rows, W]
        out = self.block(rows)
        return LayerPrompts(self.text_mlp(out[: self.text_layers, : self.text_length]),
                            out[: self.visual_layers, self.text_length:])


class LinearPromptGenerator(nn.Module):
    """DGL-Linear: Pl visual prompts per layer (shared by all frames); the text prefix and postfix prompts are two
    linear projections of those of the first text_layers layers."""

    def __init__(self, width: int, text_width: int, visual_layers: int, text_layers: int, local_length: int,
                 patch_size: int):
        super().__init__()
        layers = max(visual_layers, text_layers)
        self.width, self.layers, self.local_length = width, layers, local_length
        self.visual_layers, self.text_layers = visual_layers, text_layers
        self.visual_embedding = nn.Parameter(torch.empty(local_length, layers * width))
        uniform_prompt_init_(self.visual_embedding, patch_size, width)
        self.prefix_proj = nn.Linear(width, text_width)
        self.postfix_proj = nn.Linear(width, text_width)

    def forward(self, num_frames: int) -> LayerPrompts:
        visual = self.visual_embedding.view(self.local_length, self.layers, self.width).transpose(0, 1)
        text = visual[: self.text_layers]
        text = torch.cat([self.prefix_proj(text), self.postfix_proj(text)], dim=1)
        return LayerPrompts(text, visual[: self.visual_layers].repeat(1, num_frames, 1))
