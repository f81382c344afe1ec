"""Exact 3-D convolution through 2-D FFTs, for the large "same"-padded kernels of STOP's prompts.

`functional_conv3d(x, weight, bias, padding, impl)` computes exactly what `F.conv3d(x, weight, bias, padding=padding)`
computes (stride 1, dilation 1, groups 1, zero padding), to float32 rounding, in one of two ways:

* `direct`: `F.conv3d` itself.
* `fft`: a 2-D real FFT over the last two axes (H, W) and the kernel's few taps along the depth axis D applied
  directly in the frequency domain. Per frequency bin f the D taps and the input channels form one small complex
  matrix product, out[f][(d, b), o] = sum_{dt, i} X[f][(d + dt - pad_d, b), i] G[f][dt, i, o], computed as
  `kd` batched matrix products with the frequency bins as the batch. A full 3-D FFT (over D too) was measured
  slower on STOP's shapes (D = 12, kd = 3 and 5): see docs/BENCHMARKS.md.

Exactness of the circular convolution: the FFT grid of an axis of size n, kernel k and padding p has length
L >= max(n + p, k, n_out), the smallest 2-3-5-7-smooth such length (`fft_size`). Then every output sample
reads only real input samples or zeros of the grid, never a wrapped-around sample. The padding offset and the
cross-correlation orientation are folded into the weight's spectrum,
G[fh, fw] = sum_{a, b} w[a, b] exp(2 pi i (fh (a - ph) / Lh + fw (b - pw) / Lw)),
so output sample n sits at grid index n and is read off by cropping. The bias is added to the zero-frequency
bin (adds it to every grid sample, and the crop keeps only real outputs).

`auto` picks `fft` where `fft_is_cheaper` says so: a cost model in floating-point operations, direct
convolution versus the transforms + the per-bin products (+ the weight's spectrum when it is not cached),
with the direct FLOPs discounted by `DIRECT_EFFICIENCY` (`DIRECT_EFFICIENCY_SINGLE_OUTPUT` for one output channel),
the measured ratio of FLOP/s that direct convolution attains to what this FFT path attains on its cost-model FLOPs
(docs/BENCHMARKS.md). The constants were measured on a CPU; on a GPU the same rule applies, uncalibrated.

The weight's spectrum is cached for calls through which no gradient flows (evaluation, `torch.no_grad()`, frozen
weights and inputs); an entry is keyed by the weight tensor and checked against its data pointer, version counter
(bumped by every in-place update: optimizer steps, `load_state_dict`, `copy_` under `no_grad`), shape, dtype and
the FFT grid, so an updated weight gets a fresh spectrum. Writes through `weight.data` bypass the version counter:
call `clear_spectrum_cache()` after those.

The per-bin products run as batched matrix products (differentiable; every device) or, for cached spectra of
float32 CPU calls, in the native kernel of `models.spectral_kernel` on the transforms' own layout (the spectrum
is cached in that kernel's layout then).

Half-precision inputs (bfloat16, float16) are computed in float32 and the result cast back; float64 stays
float64. Autograd differentiates through the whole FFT path (input, weight and bias gradients).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models import spectral_kernel

IMPLS = ("auto", "direct", "fft")
FFT_RADICES = (2, 3, 5, 7)
# Direct convolution runs this many times more FLOP/s than the FFT path runs its cost-model FLOPs (measured on a
# 2-core AVX-512 CPU, torch 2.13 / MKL, STOP's shapes, docs/BENCHMARKS.md: 13-21 with several output channels,
# 2-4 with one, where direct convolution vectorises poorly). `auto` takes the FFT path when
# direct FLOPs > efficiency * FFT cost-model FLOPs: the upper end of each range, so FFT only where it clearly wins.
DIRECT_EFFICIENCY = 16.0
DIRECT_EFFICIENCY_SINGLE_OUTPUT = 3.0


def fft_size(n: int) -> int:
    """Smallest integer >= n whose prime factors are all in FFT_RADICES (fast FFT lengths for MKL, pocketfft, cuFFT)."""
    size = max(int(n), 1)
    while True:
        rest = size
        for radix in FFT_RADICES:
            while rest % radix == 0:
                rest //= radix
        if rest == 1:
            return size
        size += 1


@dataclass(frozen=True)
class ConvGeometry:
    """Sizes of one convolution: input x [B, C_in, D, H, W], weight [C_out, C_in, kd, kh, kw], padding (pd, ph, pw),
    output [B, C_out, D', H', W'], FFT grid (Lh, Lw) over (H, W) with Lw // 2 + 1 real-FFT bins along W."""

    batch: int
    in_channels: int
    out_channels: int
    size: tuple[int, int, int]
    kernel: tuple[int, int, int]
    padding: tuple[int, int, int]

    @property
    def out_size(self) -> tuple[int, int, int]:
        return tuple(n + 2 * p - k + 1 for n, k, p in zip(self.size, self.kernel, self.padding))

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(fft_size(max(n + p, k, m)) for n, k, p, m in
                     zip(self.size[1:], self.kernel[1:], self.padding[1:], self.out_size[1:]))

    def direct_flops(self) -> float:
        """Multiply-adds x 2 of the direct convolution."""
        return 2.0 * self.batch * self.out_channels * self.in_channels * math.prod(self.kernel) * math.prod(
            self.out_size)

    def fft_flops(self, weight_cached: bool) -> float:
        """Cost model of the FFT path: real 2-D FFTs of the input and output planes (2.5 N log2 N each), the per-bin
        complex products (8 FLOPs per complex multiply-add) and, unless cached, the weight's spectrum."""
        lh, lw = self.grid
        bins = lh * (lw // 2 + 1)
        d, d_out = self.size[0], self.out_size[0]
        kd, kh, kw = self.kernel
        planes = self.batch * (self.in_channels * d + self.out_channels * d_out)
        flops = planes * 2.5 * lh * lw * math.log2(lh * lw)
        flops += 8.0 * bins * self.batch * d_out * kd * self.in_channels * self.out_channels
        if not weight_cached:
            flops += 8.0 * self.out_channels * self.in_channels * kd * (kh * bins + kh * kw * (lw // 2 + 1))
        return flops


def fft_is_cheaper(geometry: ConvGeometry, weight_cached: bool = False) -> bool:
    """The `auto` rule: FFT when direct FLOPs exceed DIRECT_EFFICIENCY (DIRECT_EFFICIENCY_SINGLE_OUTPUT for one
    output channel) times the FFT path's cost-model FLOPs."""
    efficiency = DIRECT_EFFICIENCY_SINGLE_OUTPUT if geometry.out_channels == 1 else DIRECT_EFFICIENCY
    return geometry.direct_flops() > efficiency * geometry.fft_flops(weight_cached)


def functional_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      padding: int | tuple[int, int, int] = 0, impl: str = "auto",
                      x_spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, C_in, D, H, W], weight [C_out, C_in, kd, kh, kw], bias [C_out] or None, zero padding (pd, ph, pw)
    -> [B, C_out, D + 2 pd - kd + 1, H + 2 ph - kh + 1, W + 2 pw - kw + 1], equal to F.conv3d (stride 1).

    impl: `direct` (F.conv3d), `fft`, or `auto` (`fft_is_cheaper`). The result is contiguous like F.conv3d's
    (downstream random ops such as dropout draw different numbers for differently laid out tensors).
    x_spectrum: `input_spectrum(x, geometry.grid)` computed once for several convolutions of the same x on the
    same grid (used by the FFT path; in the compute dtype, without autocast)."""
    if impl not in IMPLS:
        raise ValueError(f"--conv_impl {impl!r} is not one of {list(IMPLS)}")
    padding = _check_padding(padding)
    if impl == "direct":
        return F.conv3d(x, weight, bias, padding=padding)
    geometry = _geometry(x, weight, bias, padding)
    cached = _cache_allowed(x, weight, bias)
    if impl == "auto" and not fft_is_cheaper(geometry, weight_cached=cached):
        return F.conv3d(x, weight, bias, padding=padding)
    return _fft_conv3d(x, weight, bias, geometry, cached, x_spectrum)


def conv_geometry(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  padding: int | tuple[int, int, int] = 0) -> ConvGeometry:
    """The ConvGeometry of functional_conv3d(x, weight, bias, padding) (ValueError for shapes that do not fit)."""
    return _geometry(x, weight, bias, _check_padding(padding))


def clear_spectrum_cache() -> None:
    """Drops every cached weight spectrum (needed only after writes through `weight.data`)."""
    _SPECTRUM_CACHE.clear()


def spectrum_cache_size() -> int:
    """Number of weight spectra currently cached."""
    return len(_SPECTRUM_CACHE)


def _check_padding(padding: int | tuple[int, int, int]) -> tuple[int, int, int]:
    padding = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
    if len(padding) != 3 or not all(isinstance(p, int) and p >= 0 for p in padding):
        raise ValueError(f"padding must be a non-negative int or three of them (depth, height, width), got {padding}")
    return padding


def _geometry(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
              padding: tuple[int, int, int]) -> ConvGeometry:
    if x.dim() != 5 or weight.dim() != 5:
        raise ValueError(f"conv3d takes x [B, C_in, D, H, W] and weight [C_out, C_in, kd, kh, kw], got x "
                         f"{list(x.shape)} and weight {list(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels but the weight expects {weight.shape[1]} (groups=1 only)")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be [{weight.shape[0]}], got {list(bias.shape)}")
    geometry = ConvGeometry(x.shape[0], weight.shape[1], weight.shape[0], tuple(x.shape[2:]),
                            tuple(weight.shape[2:]), padding)
    if min(geometry.out_size) < 1:
        raise ValueError(f"kernel {list(weight.shape[2:])} with padding {list(padding)} does not fit the input "
                         f"{list(x.shape[2:])}")
    return geometry


def _cache_allowed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """The weight's spectrum may be cached when no gradient flows through this call (and the weight has a version
    counter: not an inference tensor)."""
    if weight.is_inference():
        return False
    if not torch.is_grad_enabled():
        return True
    return not any(t is not None and t.requires_grad for t in (x, weight, bias))


def _compute_dtypes(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(real dtype the FFT path computes in, dtype of the result), like F.conv3d under the current autocast."""
    if torch.is_autocast_enabled(x.device.type):
        out_dtype = torch.get_autocast_dtype(x.device.type)
    elif x.dtype != weight.dtype:
        raise TypeError(f"conv3d input is {x.dtype} but the weight is {weight.dtype}; cast one of them (or run "
                        f"under torch.autocast)")
    else:
        out_dtype = x.dtype
    compute = torch.float64 if torch.float64 in (x.dtype, weight.dtype) else torch.float32
    return compute, out_dtype


def _fft_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, geometry: ConvGeometry,
                cached: bool, x_spectrum: torch.Tensor | None = None) -> torch.Tensor:
    compute, out_dtype = _compute_dtypes(x, weight)
    with torch.autocast(x.device.type, enabled=False):
        spectrum = (_cached_weight_spectrum if cached else weight_spectrum)(weight, geometry, compute)
        y = _spectral_conv(x.to(compute), spectrum, None if bias is None else bias.to(compute), geometry, x_spectrum)
    return y.to(out_dtype)


def weight_spectrum(weight: torch.Tensor, geometry: ConvGeometry, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """weight [C_out, C_in, kd, kh, kw] -> G [Lh * (Lw//2 + 1), kd, C_in, C_out] complex, bins (fh, fw) row-major:
    G[fh, fw] = sum_{a, b} w[.., a, b] exp(2 pi i (fh (a - ph) / Lh + fw (b - pw) / Lw)).
    Two small DFT matrix products (exact, differentiable) in the complex dtype of real `dtype`, laid out for the
    per-bin products."""
    c_out, c_in, kd, kh, kw = weight.shape
    lh, lw = geometry.grid
    _, ph, pw = geometry.padding
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    dft_h = _dft_matrix(lh, lh, kh, ph, weight.device).to(complex_dtype)  # [Lh, kh]
    dft_w = _dft_matrix(lw, lw // 2 + 1, kw, pw, weight.device).to(complex_dtype).T  # [kw, Fw]
    taps = weight.to(dtype).permute(3, 2, 1, 0, 4).to(complex_dtype)  # [kh, kd, C_in, C_out, kw]
    rows = (taps @ dft_w).permute(0, 4, 1, 2, 3)  # [kh, Fw, kd, C_in, C_out]
    spectrum = dft_h @ rows.reshape(kh, -1)  # [Lh, Fw * kd * C_in * C_out]
    return spectrum.view(-1, kd, c_in, c_out)


def _dft_matrix(length: int, bins: int, taps: int, pad: int, device: torch.device) -> torch.Tensor:
    """[bins, taps] complex128: exp(2 pi i f (a - pad) / length), phases reduced modulo length in integers."""
    f = torch.arange(bins, device=device, dtype=torch.int64)[:, None]
    a = torch.arange(taps, device=device, dtype=torch.int64)[None, :] - pad
    phase = torch.remainder(f * a, length).to(torch.float64) * (2 * math.pi / length)
    return torch.polar(torch.ones_like(phase), phase)


def input_spectrum(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """x [B, C, D, H, W] real -> the 2-D real FFT of x zero-padded to grid (Lh, Lw): [B, C, D, Lh, Lw//2 + 1].
    Convolutions of the same x on the same grid can share it (`functional_conv3d(..., x_spectrum=)`)."""
    return torch.fft.rfft2(_zero_pad(x, *grid))


def _spectral_conv(x: torch.Tensor, spectrum: torch.Tensor, bias: torch.Tensor | None,
                   geometry: ConvGeometry, x_spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, C_in, D, H, W] real, G from `weight_spectrum` -> [B, C_out, D', H', W'] (the crop of the FFT grid)."""
    _, h_out, w_out = geometry.out_size
    planes = input_spectrum(x, geometry.grid) if x_spectrum is None else x_spectrum
    return _spectral_products(planes, spectrum, bias, geometry)[..., :h_out, :w_out].contiguous()


def _spectral_products(planes: torch.Tensor, spectrum: torch.Tensor, bias: torch.Tensor | None,
                       geometry: ConvGeometry) -> torch.Tensor:
    """planes [B, C_in, D, Lh, Lw//2 + 1] (`input_spectrum`), G from `weight_spectrum` (batched matrix products,
    differentiable) or in `spectral_kernel.chunk_layout` (the native kernel, no autograd) -> the output on the
    whole FFT grid [B, C_out, D', Lh, Lw] (real; the output proper at [..., :H', :W'], other values beside it)."""
    b, c_in, c_out = geometry.batch, geometry.in_channels, geometry.out_channels
    d, _, _ = geometry.size
    kd = geometry.kernel[0]
    pd = geometry.padding[0]
    d_out = geometry.out_size[0]
    lh, lw = geometry.grid
    if spectrum.dim() == 5:  # the native kernel's layout (`_cached_weight_spectrum` on the CPU)
        grid = spectral_kernel.spectral_products(planes, spectrum, pd, d_out)  # [B, C_out, D', Lh, Lw//2 + 1]
        if bias is not None:
            grid[..., 0, 0] += (bias * (lh * lw))[:, None]
        return torch.fft.irfft2(grid, s=(lh, lw))
    bins = lh * (lw // 2 + 1)
    # rows (depth, batch) per bin, with the depth zero padding, so that every tap reads a contiguous row block
    rows_in = planes.new_empty(bins, (d + 2 * pd) * b, c_in)
    rows_in[:, :pd * b].zero_()
    rows_in[:, (pd + d) * b:].zero_()
    rows_in[:, pd * b:(pd + d) * b].view(lh, lw // 2 + 1, d, b, c_in).copy_(planes.permute(3, 4, 2, 0, 1))
    rows_out = None
    for dt in range(kd):
        src = rows_in[:, dt * b:(dt + d_out) * b]
        if c_in == 1:  # an outer product per bin: a broadcast multiply(-add) beats a batched matrix product
            rows_out = src * spectrum[:, dt] if rows_out is None else rows_out.addcmul_(src, spectrum[:, dt])
        elif rows_out is None:
            rows_out = torch.bmm(src, spectrum[:, dt])
        else:
            rows_out.baddbmm_(src, spectrum[:, dt])
    if bias is not None:
        rows_out[0].add_(bias * (lh * lw))  # zero-frequency bin: + bias at every grid sample
    grid = rows_out.view(lh, lw // 2 + 1, d_out, b, c_out).permute(3, 4, 2, 0, 1)
    return torch.fft.irfft2(grid, s=(lh, lw))


def fft_conv3d_chain(x: torch.Tensor, layers, x_spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """The FFT path of a chain of "same" convolutions and elementwise maps with f(0) = 0 (PReLU, ReLU), applied in
    order to x [B, C, D, H, W] -> [B, C_last, D, H, W], equal to applying each layer with `functional_conv3d(...,
    impl="fft")` to float32 rounding, with fewer memory passes: between layers the volume stays on the FFT grid,
    its margins set to zero instead of cropping and zero-padding again (the next layer's input is then the same
    zero-padded volume; an f with f(0) = 0 keeps the margins zero). Every convolution must keep the size and have
    the same FFT grid (ValueError otherwise).

    layers: (weight, bias or None, padding (pd, ph, pw)) for a convolution, a callable for an elementwise map;
    x_spectrum: `input_spectrum(x, grid)` when the caller has it. Float32 / float64, no autocast (the caller
    applies the layers one by one under autocast, whose per-layer rounding this chain would skip). Maps after the
    last convolution read the output proper (the crop of the grid: one pass that also crops)."""
    h, w = x.shape[-2:]
    grid = None  # the FFT grid (Lh, Lw), set by the first convolution
    last_conv = max((i for i, layer in enumerate(layers) if not callable(layer)), default=-1)
    volume, planes = x, x_spectrum  # x [..., H, W] up to the first convolution, then [..., Lh, Lw] on the grid
    for index, layer in enumerate(layers):
        if callable(layer):
            volume, planes = layer(volume[..., :h, :w] if grid and index > last_conv else volume), None
            continue
        weight, bias, padding = layer
        geometry = conv_geometry(volume[..., :h, :w], weight, bias, padding)
        if geometry.out_size != geometry.size or grid not in (None, geometry.grid):
            raise ValueError(f"a chain on the FFT grid needs size-keeping convolutions on one grid, got kernel "
                             f"{list(weight.shape[2:])} with padding {list(geometry.padding)} on {list(geometry.size)}")
        compute, _ = _compute_dtypes(volume, weight)
        if planes is None:
            planes = torch.fft.rfft2(volume.to(compute) if grid else _zero_pad(volume.to(compute), *geometry.grid))
        grid = geometry.grid
        spectrum = (_cached_weight_spectrum if _cache_allowed(volume, weight, bias) else weight_spectrum)(
            weight, geometry, compute)
        volume = _spectral_products(planes, spectrum, None if bias is None else bias.to(compute), geometry)
        if index < last_conv:  # the margins: the zeros the next convolution's padding would put there
            volume[..., h:, :] = 0
            volume[..., :h, w:] = 0
        planes = None
    return volume[..., :h, :w].contiguous() if grid else volume


def _zero_pad(x: torch.Tensor, lh: int, lw: int) -> torch.Tensor:
    """x [..., H, W] -> [..., Lh, Lw], zeros after the data; zeroes only the margin (fresh memory is costly to fill)."""
    h, w = x.shape[-2:]
    padded = x.new_empty(*x.shape[:-2], lh, lw)
    padded[..., h:, :].zero_()
    padded[..., :h, w:].zero_()
    padded[..., :h, :w].copy_(x)
    return padded


@dataclass
class _CacheEntry:
    key: tuple
    spectrum: torch.Tensor


_SPECTRUM_CACHE: dict[int, _CacheEntry] = {}


def _cached_weight_spectrum(weight: torch.Tensor, geometry: ConvGeometry, dtype: torch.dtype) -> torch.Tensor:
    """weight_spectrum(weight, geometry, dtype), reused while the weight is unchanged (no-gradient calls only); in
    `spectral_kernel.chunk_layout` where the native kernel takes it (float32 on the CPU, few enough depth taps)."""
    key = (weight.data_ptr(), weight._version, tuple(weight.shape), tuple(weight.stride()), weight.dtype,
           weight.device, geometry.grid, geometry.padding, dtype)
    entry = _SPECTRUM_CACHE.get(id(weight))
    if entry is None or entry.key != key:
        if entry is None:
            weakref.finalize(weight, _SPECTRUM_CACHE.pop, id(weight), None)
        with torch.no_grad():
            spectrum = weight_spectrum(weight, geometry, dtype)
            if _native_kernel_takes(weight, dtype):
                spectrum = spectral_kernel.chunk_layout(spectrum)
            entry = _CacheEntry(key, spectrum)
        _SPECTRUM_CACHE[id(weight)] = entry
    return entry.spectrum


@contextlib.contextmanager
def batched_products():
    """Within this context, weight spectra cached from now on take the batched layout, so that their products run
    as batched matrix products even where the native kernel is available (benchmarks and tests compare the two);
    spectra cached before keep their layout (`clear_spectrum_cache()` drops them)."""
    global _BATCHED_PRODUCTS_ONLY
    previous, _BATCHED_PRODUCTS_ONLY = _BATCHED_PRODUCTS_ONLY, True
    try:
        yield
    finally:
        _BATCHED_PRODUCTS_ONLY = previous


_BATCHED_PRODUCTS_ONLY = False


def _native_kernel_takes(weight: torch.Tensor, dtype: torch.dtype) -> bool:
    return (not _BATCHED_PRODUCTS_ONLY and weight.device.type == "cpu" and dtype == torch.float32
            and weight.shape[2] <= spectral_kernel.max_taps())
