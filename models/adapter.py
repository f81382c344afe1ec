"""Residual-stream adapters (named `LoRA` in the released code) and the block half that applies them."""

from __future__ import annotations

import torch
from torch import nn

from models.clip import ResidualAttentionBlock


class Adapter(nn.Module):
    """scale * up(PReLU(down(x))): x [..., width] -> [..., width]."""

    def __init__(self, width: int, hidden: int, scale: float):
        super().__init__()
        self.down = nn.Linear(width, hidden)
        self.act = nn.PReLU()
        self.up = nn.Linear(hidden, width)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.act(self.down(x)))


def mlp_with_adapter(block: ResidualAttentionBlock, x: torch.Tensor, adapter: Adapter | None) -> torch.Tensor:
    """Second half of a pre-LN block on x [N, L, D] (after the attention residual):
    x + MLP(LN2(x)) + adapter(x), the adapter reading the un-normalised residual stream."""
    out = x + block.mlp(block.ln_2(x))
    return out if adapter is None else out + adapter(x)
