"""The one forward path of every Conv3d in the spatial and temporal prompts.

The prompt modules keep plain `nn.Conv3d` modules (their parameter names are what checkpoints and the converter
use) but never call them directly: they call `apply_conv3d(conv, x, impl)`. `impl` (the `--conv_impl` flag) selects the
algorithm, all computing the same function to float32 rounding (`models.fast_conv`):
`direct` = the module itself (`nn.Conv3d.forward`), `fft` = 2-D FFTs with per-bin depth taps, `auto` = FFT where its
cost model says it is cheaper (every STOP prompt convolution at ViT-B/32 shapes).
"""

from __future__ import annotations

import torch
from torch import nn

from models import fast_conv

CONV_IMPLS = fast_conv.IMPLS


def apply_conv3d(conv: nn.Conv3d, x: torch.Tensor, impl: str = "direct") -> torch.Tensor:
    """`conv` applied to x [B, C_in, D, H, W] -> [B, C_out, D', H', W'] by the algorithm `impl` (CONV_IMPLS)."""
    if impl == "direct":
        return conv(x)
    if impl not in CONV_IMPLS:
        raise ValueError(f"--conv_impl {impl!r} is not one of {list(CONV_IMPLS)}")
    if conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1) or conv.groups != 1 or conv.padding_mode != "zeros" \
            or isinstance(conv.padding, str):
        raise ValueError(f"--conv_impl {impl} supports stride-1, undilated, ungrouped, zero-padded Conv3d with "
                         f"integer padding only, got {conv}; use --conv_impl direct")
    return fast_conv.functional_conv3d(x, conv.weight, conv.bias, conv.padding, impl)
