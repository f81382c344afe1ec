"""The one forward path of every Conv3d in the spatial and temporal prompts.

The prompt modules keep plain `nn.Conv3d` modules (their parameter names are what checkpoints and the converter
use) but never call them directly: they call `conv3d(conv, x)`. An alternative exact algorithm for these large
"same"-padded kernels (e.g. FFT convolution) plugs in here, behind a flag, without touching the prompt logic.
"""

from __future__ import annotations

import torch
from torch import nn


def conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """`conv` applied to x [B, C_in, D, H, W] -> [B, C_out, D', H', W']."""
    return conv(x)
