"""models.spectral_kernel: the native per-bin products equal the batched matrix products they replace (shapes,
depth paddings, bins that do not fill the last chunk, one and several threads), the FFT convolution takes them
for cached CPU spectra and equals F.conv3d either way, bad input, and a build that fails or is cached."""

import contextlib
import logging

import pytest
import torch
import torch.nn.functional as F

from benchmarks import bench_conv
from models import fast_conv, spectral_kernel
from models.fast_conv import functional_conv3d

needs_kernel = pytest.mark.skipif(not spectral_kernel.available(), reason="no C compiler")


def reference_products(planes, spectrum, pad, depth_out):
    """out[b, o, d] = sum_{t, i} planes[b, i, d + t - pad] G[t, i, o] per bin, written out with einsum."""
    b, c_in, depth, *bins = planes.shape
    taps = spectrum.shape[1]
    padded = F.pad(planes.flatten(3), (0, 0, pad, max(0, depth_out + taps - 1 - pad - depth)))
    out = 0
    for t in range(taps):
        out = out + torch.einsum("bidf,fio->bodf", padded[:, :, t:t + depth_out], spectrum[:, t])
    return out.view(b, -1, depth_out, *bins)


@needs_kernel
@pytest.mark.parametrize("batch,c_in,c_out,depth,taps,pad,bins", [
    (2, 9, 9, 12, 3, 1, (240, 121)),  # the spatial prompt's hidden layers
    (2, 3, 16, 12, 5, 2, (6, 7)),  # 42 bins: the last chunk of 8 holds 2
    (1, 1, 9, 5, 3, 1, (3,)),  # one input channel, fewer bins than a chunk
    (3, 9, 1, 4, 3, 1, (13, 5)),  # one output channel
    (1, 2, 5, 3, 5, 2, (9, 9)),  # depth kernel deeper than the input
    (2, 4, 3, 6, 3, 0, (17,)),  # valid along depth: 4 output depths
    (1, 3, 2, 2, 1, 3, (8,)),  # padding larger than the kernel: 8 output depths
])
@pytest.mark.parametrize("threads", [1, 2])
def test_native_products_equal_the_reference(batch, c_in, c_out, depth, taps, pad, bins, threads, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    planes = torch.randn(batch, c_in, depth, *bins, dtype=torch.complex64, generator=gen)
    spectrum = torch.randn(torch.Size(bins).numel(), taps, c_in, c_out, dtype=torch.complex64, generator=gen)
    depth_out = depth + 2 * pad - taps + 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    out = spectral_kernel.spectral_products(planes, spectral_kernel.chunk_layout(spectrum), pad, depth_out)
    ref = reference_products(planes.cdouble(), spectrum.cdouble(), pad, depth_out)
    assert out.shape == (batch, c_out, depth_out, *bins) and out.dtype == torch.complex64
    assert ((out.cdouble() - ref).abs().max() / ref.abs().max()).item() < 1e-6


@needs_kernel
def test_the_fft_convolution_takes_the_kernel_for_cached_cpu_spectra_and_equals_conv3d(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    x, weight, bias = (torch.randn(shape, generator=gen) for shape in ((2, 3, 5, 23, 30), (9, 3, 3, 11, 11), (9,)))
    ref = F.conv3d(x, weight, bias, padding=(1, 5, 5))
    calls = []
    original = spectral_kernel.spectral_products
    monkeypatch.setattr(spectral_kernel, "spectral_products", lambda *a: calls.append(1) or original(*a))
    fast_conv.clear_spectrum_cache()
    with torch.no_grad():
        native = functional_conv3d(x, weight, bias, (1, 5, 5), impl="fft")
    assert calls and fast_conv._SPECTRUM_CACHE[id(weight)].spectrum.dim() == 5
    assert ((native - ref).abs().max() / ref.abs().max()).item() < 1e-5
    calls.clear()  # with gradients: the batched (differentiable) products, the same values
    batched = functional_conv3d(x, weight.requires_grad_(), bias, (1, 5, 5), impl="fft")
    assert not calls and batched.requires_grad
    assert ((batched.detach() - native).abs().max() / ref.abs().max()).item() < 1e-5


@pytest.mark.parametrize("how", ["no kernel", "batched_products()"])
def test_without_the_kernel_the_cache_keeps_the_batched_layout(how, monkeypatch):
    if how == "no kernel":
        monkeypatch.setattr(spectral_kernel, "_library", lambda: None)
    gen = torch.Generator().manual_seed(2)
    x, weight = torch.randn(1, 2, 4, 9, 10, generator=gen), torch.randn(3, 2, 3, 5, 5, generator=gen)
    fast_conv.clear_spectrum_cache()
    with torch.no_grad(), (fast_conv.batched_products() if how != "no kernel" else contextlib.nullcontext()):
        out = functional_conv3d(x, weight, None, (1, 2, 2), impl="fft")
    assert fast_conv._SPECTRUM_CACHE[id(weight)].spectrum.dim() == 4
    ref = F.conv3d(x, weight, padding=(1, 2, 2))
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-5
    fast_conv.clear_spectrum_cache()
    assert not fast_conv._BATCHED_PRODUCTS_ONLY  # the context restores the default


@needs_kernel
def test_bad_input_gets_a_clear_message():
    planes = torch.randn(1, 2, 3, 16, dtype=torch.complex64)
    spectrum = spectral_kernel.chunk_layout(torch.randn(16, 3, 2, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="complex64 CPU"):
        spectral_kernel.spectral_products(planes.cdouble(), spectrum, 1, 3)
    with pytest.raises(ValueError, match="does not fit"):
        spectral_kernel.spectral_products(planes[:, :1], spectrum, 1, 3)
    deep = spectral_kernel.chunk_layout(torch.randn(16, spectral_kernel.max_taps() + 1, 2, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="depth taps"):
        spectral_kernel.spectral_products(planes, deep, 1, 3)
    too_deep = torch.empty(4, 2, spectral_kernel.max_taps() + 1, 3, 3)
    assert not fast_conv._native_kernel_takes(too_deep, torch.float32)
    assert not fast_conv._native_kernel_takes(torch.empty(4, 2, 3, 3, 3), torch.float64)


def test_a_failed_build_falls_back_with_one_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("STOP_KERNEL_CACHE", str(tmp_path / "cache"))
    spectral_kernel._library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="models.spectral_kernel"):
            assert not spectral_kernel.available() and spectral_kernel.max_taps() == 0
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "batched matrix products" in caplog.records[0].getMessage()
        with pytest.raises(RuntimeError, match="not available"):
            spectral_kernel.spectral_products(torch.zeros(1, 1, 1, 8, dtype=torch.complex64),
                                              torch.zeros(1, 1, 1, 1, 8, dtype=torch.complex64), 0, 1)
    finally:
        spectral_kernel._library.cache_clear()


@needs_kernel
def test_the_build_is_cached_per_source_and_written_once(monkeypatch, tmp_path):
    monkeypatch.setenv("STOP_KERNEL_CACHE", str(tmp_path))
    first = spectral_kernel._build()
    stamp = first.stat().st_mtime_ns
    assert spectral_kernel._build() == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind


@needs_kernel
def test_the_benchmark_compares_the_kernel_with_the_batched_products_on_the_prompts(tmp_path):
    results = bench_conv.main(["--sections", "prompts", "--batch", "1", "--frames", "4", "--image_resolution", "32",
                               "--patch_size", "8", "--width", "64", "--repeats", "1", "--warmup", "0",
                               "--output", str(tmp_path / "bench.json")])
    assert "layers" not in results and [row["prompt"] for row in results["prompts"]] == ["spatial prompt",
                                                                                         "temporal prompt"]
    assert results["machine"]["native_spectral_kernel"]
    for row in results["prompts"]:
        assert row["native_s"] > 0 and row["batched_s"] > 0
        assert row["max_relative_difference"] < 1e-5
    assert (tmp_path / "bench.json").exists() and not fast_conv._BATCHED_PRODUCTS_ONLY
