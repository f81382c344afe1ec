"""The one forward path of every Conv3d in the spatial and temporal prompts.

The prompt modules keep plain `nn.Conv3d` modules (their parameter names are what checkpoints and the converter
use) but never call them directly: they call `apply_conv3d(conv, x, impl)`. `impl` (the `--conv_impl` flag) selects the
algorithm, all computing the same function to float32 rounding (`models.fast_conv`):
`direct` = the module itself (`nn.Conv3d.forward`), `fft` = 2-D FFTs with per-bin depth taps, `auto` = FFT where its
cost model says it is cheaper (every STOP prompt convolution at ViT-B/32 shapes).

Where the FFT path is taken, two exact savings are available to a module (the `--fft_chain` flag): a chain of
size-keeping convolutions and f(0) = 0 activations stays on the zero-margined FFT grid between layers
(`apply_conv3d_chain`), and convolutions reading the same input share its transform (`shared_input_spectrum`).
"""

from __future__ import annotations

import torch
from torch import nn

from models import fast_conv

CONV_IMPLS = fast_conv.IMPLS


def apply_conv3d(conv: nn.Conv3d, x: torch.Tensor, impl: str = "direct",
                 x_spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """`conv` applied to x [B, C_in, D, H, W] -> [B, C_out, D', H', W'] by the algorithm `impl` (CONV_IMPLS);
    x_spectrum: x's transform from `shared_input_spectrum` (used where the FFT path is taken)."""
    if impl == "direct":
        return conv(x)
    _check_fft_conv(conv, impl)
    return fast_conv.functional_conv3d(x, conv.weight, conv.bias, conv.padding, impl, x_spectrum)


def _check_fft_conv(conv: nn.Conv3d, impl: str) -> None:
    if impl not in CONV_IMPLS:
        raise ValueError(f"--conv_impl {impl!r} is not one of {list(CONV_IMPLS)}")
    if conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1) or conv.groups != 1 or conv.padding_mode != "zeros" \
            or isinstance(conv.padding, str):
        raise ValueError(f"--conv_impl {impl} supports stride-1, undilated, ungrouped, zero-padded Conv3d with "
                         f"integer padding only, got {conv}; use --conv_impl direct")


def _takes_fft_path(conv: nn.Conv3d, x_shape: torch.Size, impl: str) -> fast_conv.ConvGeometry | None:
    """The geometry of `conv` on an input of x_shape [B, C, D, H, W] (C: the conv's own) when `impl` takes the
    FFT path for it, else None."""
    if impl == "direct":
        return None
    _check_fft_conv(conv, impl)
    b, _, *size = x_shape
    geometry = fast_conv.ConvGeometry(b, conv.in_channels, conv.out_channels, tuple(size), conv.kernel_size,
                                      conv.padding)
    cached = not torch.is_grad_enabled() or not any(p.requires_grad for p in conv.parameters())
    return geometry if impl == "fft" or fast_conv.fft_is_cheaper(geometry, weight_cached=cached) else None


def shared_input_spectrum(convs: list[nn.Conv3d], x: torch.Tensor, impl: str) -> torch.Tensor | None:
    """The transform of x [B, C, D, H, W] (`fast_conv.input_spectrum`) that every conv of `convs` can read
    (`apply_conv3d(..., x_spectrum=)`, `apply_conv3d_chain`): when each takes the FFT path on the same grid,
    in float32 / float64; else None."""
    geometries = [_takes_fft_path(conv, x.shape, impl) for conv in convs]
    if any(g is None for g in geometries) or len({g.grid for g in geometries}) != 1:
        return None
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast(x.device.type, enabled=False):
        return fast_conv.input_spectrum(x.to(compute), geometries[0].grid)


def apply_conv3d_chain(layers: list[nn.Module], x: torch.Tensor, impl: str = "direct", on_grid: bool = True,
                       x_spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """`layers` (Conv3d modules, and elementwise activations with f(0) = 0 such as PReLU) applied in order to
    x [B, C, D, H, W]. With on_grid, where every conv takes the FFT path of `impl` on one grid and keeps the size
    (and no autocast, whose per-layer rounding it would skip), through `fast_conv.fft_conv3d_chain`: the same
    function to float32 rounding, fewer memory passes. x_spectrum: x's transform (`shared_input_spectrum`)."""
    convs = [layer for layer in layers if isinstance(layer, nn.Conv3d)]
    shape, geometries = x.shape, []
    for conv in convs:
        geometries.append(_takes_fft_path(conv, shape, impl))
        shape = (shape[0], conv.out_channels, *shape[2:])
    if (on_grid and convs and all(g is not None and g.out_size == g.size for g in geometries)
            and len({g.grid for g in geometries}) == 1 and not torch.is_autocast_enabled(x.device.type)):
        return fast_conv.fft_conv3d_chain(
            x, [(layer.weight, layer.bias, layer.padding) if isinstance(layer, nn.Conv3d) else layer
                for layer in layers], x_spectrum)
    for layer in layers:
        if isinstance(layer, nn.Conv3d):
            x, x_spectrum = apply_conv3d(layer, x, impl, x_spectrum), None
        else:
            x = layer(x)
    return x
