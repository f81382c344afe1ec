"""models.fast_conv: the FFT path equals F.conv3d (values and gradients), the impl flag, the `auto` rule, the
weight-spectrum cache and its invalidation, half precision, bad input; a chain on the FFT grid and a shared input
transform equal the layers applied one by one (models/conv3d.py)."""

import gc

import pytest
import torch
import torch.nn.functional as F

from models import conv3d, fast_conv
from models.fast_conv import ConvGeometry, fft_is_cheaper, fft_size, functional_conv3d

# (x shape [B, C_in, D, H, W], weight shape [C_out, C_in, kd, kh, kw], padding (pd, ph, pw))
SHAPES = [
    ((2, 3, 5, 23, 30), (9, 3, 3, 11, 11), (1, 5, 5)),  # the spatial prompter's first layer, odd and even sizes
    ((1, 9, 4, 17, 16), (16, 9, 3, 11, 11), (1, 5, 5)),  # 9 -> 16, batch 1
    ((2, 1, 6, 7, 49), (9, 1, 3, 15, 25), (1, 7, 12)),  # the temporal prompt's kernel, larger than the 7-row axis
    ((2, 9, 3, 12, 20), (1, 9, 3, 15, 25), (1, 7, 12)),  # 9 -> 1, depth kernel as deep as the input
    ((1, 3, 4, 8, 9), (1, 3, 5, 11, 11), (2, 5, 5)),  # the score conv: depth kernel deeper than D, kernel > H, W
    ((2, 2, 3, 10, 11), (3, 2, 3, 3, 5), (0, 1, 0)),  # not "same": valid along D and W, padded along H
    ((1, 2, 3, 6, 5), (2, 2, 1, 3, 3), (2, 4, 3)),  # padding larger than the kernel
]


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def random_conv(x_shape, w_shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=gen, dtype=dtype)
    weight = torch.randn(w_shape, generator=gen, dtype=dtype)
    bias = torch.randn(w_shape[0], generator=gen, dtype=dtype)
    return x, weight, bias


@pytest.mark.parametrize("x_shape,w_shape,padding", SHAPES)
def test_fft_forward_matches_conv3d(x_shape, w_shape, padding):
    x, weight, bias = random_conv(x_shape, w_shape)
    ref = F.conv3d(x, weight, bias, padding=padding)
    out = functional_conv3d(x, weight, bias, padding, impl="fft")
    assert out.shape == ref.shape and out.dtype == torch.float32 and out.is_contiguous()
    assert relative_error(out, ref) < 1e-4
    out_no_bias = functional_conv3d(x, weight, None, padding, impl="fft")
    assert relative_error(out_no_bias, F.conv3d(x, weight, None, padding=padding)) < 1e-4


@pytest.mark.parametrize("x_shape,w_shape,padding", SHAPES[:5])
def test_fft_gradients_match_conv3d(x_shape, w_shape, padding):
    x, weight, bias = random_conv(x_shape, w_shape, seed=1)
    grad_out = torch.randn(F.conv3d(x, weight, bias, padding=padding).shape, generator=torch.Generator().manual_seed(2))
    inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    ref = torch.autograd.grad(F.conv3d(*inputs, padding=padding), inputs, grad_out)
    inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    out = torch.autograd.grad(functional_conv3d(*inputs, padding, impl="fft"), inputs, grad_out)
    for name, o, r in zip(("input", "weight", "bias"), out, ref):
        assert relative_error(o, r) < 1e-4, name


def test_float64_is_exact_to_double_rounding():
    x, weight, bias = random_conv(*SHAPES[2][:2], dtype=torch.float64)
    out = functional_conv3d(x, weight, bias, SHAPES[2][2], impl="fft")
    assert out.dtype == torch.float64
    assert relative_error(out, F.conv3d(x, weight, bias, padding=SHAPES[2][2])) < 1e-12


def test_fft_path_through_an_nn_module_trains_like_direct():
    """A Conv3d -> PReLU -> Conv3d stack: the same loss and parameter gradients with either method."""
    torch.manual_seed(0)
    convs = [torch.nn.Conv3d(3, 4, (3, 5, 5), padding=(1, 2, 2)), torch.nn.Conv3d(4, 2, (3, 5, 5), padding=(1, 2, 2))]
    act = torch.nn.PReLU()
    video = torch.randn(2, 3, 4, 12, 10)
    grads = {}
    for impl in ("direct", "fft"):
        y = functional_conv3d(video, convs[0].weight, convs[0].bias, convs[0].padding, impl)
        y = functional_conv3d(act(y), convs[1].weight, convs[1].bias, convs[1].padding, impl)
        params = [p for c in convs for p in c.parameters()] + [act.weight]
        grads[impl] = torch.autograd.grad(y.square().mean(), params)
    for g_direct, g_fft in zip(grads["direct"], grads["fft"]):
        assert relative_error(g_fft, g_direct) < 1e-4


def test_direct_method_is_exactly_conv3d():
    x, weight, bias = random_conv(*SHAPES[0][:2])
    assert torch.equal(functional_conv3d(x, weight, bias, SHAPES[0][2], impl="direct"),
                       F.conv3d(x, weight, bias, padding=SHAPES[0][2]))


def test_auto_rule_prefers_fft_for_large_kernels_and_direct_for_small_ones():
    prompter = ConvGeometry(2, 9, 9, (12, 224, 224), (3, 11, 11), (1, 5, 5))
    temporal = ConvGeometry(2, 1, 9, (12, 49, 768), (3, 15, 25), (1, 7, 12))
    small = ConvGeometry(2, 16, 16, (12, 224, 224), (3, 3, 3), (1, 1, 1))
    assert fft_is_cheaper(prompter) and fft_is_cheaper(temporal)
    assert not fft_is_cheaper(small)
    # one output channel: direct convolution is slow there, so FFT wins at a smaller FLOP ratio
    two_out, one_out = (ConvGeometry(1, 2, c, (3, 40, 40), (3, 11, 11), (1, 5, 5)) for c in (2, 1))
    ratio = one_out.direct_flops() / one_out.fft_flops(weight_cached=True)
    assert fast_conv.DIRECT_EFFICIENCY_SINGLE_OUTPUT < ratio < fast_conv.DIRECT_EFFICIENCY
    assert fft_is_cheaper(one_out, weight_cached=True) and not fft_is_cheaper(two_out, weight_cached=True)
    assert prompter.direct_flops() == 2 * 2 * 9 * 9 * 3 * 11 * 11 * 12 * 224 * 224
    assert prompter.grid == (240, 240) and temporal.grid == (56, 784)


def test_auto_method_follows_the_rule():
    x, weight, bias = random_conv((1, 4, 3, 48, 48), (4, 4, 3, 11, 11))
    assert fft_is_cheaper(ConvGeometry(1, 4, 4, (3, 48, 48), (3, 11, 11), (1, 5, 5)), weight_cached=True)
    assert torch.equal(functional_conv3d(x, weight, bias, (1, 5, 5), impl="auto"),
                       functional_conv3d(x, weight, bias, (1, 5, 5), impl="fft"))
    x, weight, bias = random_conv((1, 2, 3, 40, 40), (2, 2, 1, 1, 1))
    assert not fft_is_cheaper(ConvGeometry(1, 2, 2, (3, 40, 40), (1, 1, 1), (0, 0, 0)), weight_cached=True)
    assert torch.equal(functional_conv3d(x, weight, bias, 0, impl="auto"), F.conv3d(x, weight, bias))


def test_fft_size_is_the_smallest_smooth_length():
    def smooth(n):
        for p in (2, 3, 5, 7):
            while n % p == 0:
                n //= p
        return n == 1

    for n in range(1, 300):
        size = fft_size(n)
        assert size >= n and smooth(size) and not any(smooth(m) for m in range(n, size))
    assert fft_size(229) == 240 and fft_size(780) == 784


def count_spectra(monkeypatch):
    calls = []
    original = fast_conv.weight_spectrum
    monkeypatch.setattr(fast_conv, "weight_spectrum", lambda *args: calls.append(1) or original(*args))
    return calls


def test_cache_reused_without_grad_and_invalidated_by_in_place_updates(monkeypatch):
    calls = count_spectra(monkeypatch)
    conv = torch.nn.Conv3d(3, 4, (3, 7, 7), padding=(1, 3, 3))
    x = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad():
        first = functional_conv3d(x, conv.weight, conv.bias, conv.padding, impl="fft")
        second = functional_conv3d(x, conv.weight, conv.bias, conv.padding, impl="fft")
        assert len(calls) == 1 and torch.equal(first, second)
        conv.weight.mul_(-2.0)  # in-place update: version counter bumps
        updated = functional_conv3d(x, conv.weight, conv.bias, conv.padding, impl="fft")
    assert len(calls) == 2
    assert relative_error(updated, F.conv3d(x, conv.weight, conv.bias, padding=conv.padding)) < 1e-4

    optimizer = torch.optim.SGD(conv.parameters(), lr=0.5)
    functional_conv3d(x, conv.weight, conv.bias, conv.padding, impl="fft").sum().backward()
    assert len(calls) == 3  # gradient required: computed afresh, not cached
    optimizer.step()
    with torch.no_grad():
        stepped = functional_conv3d(x, conv.weight, conv.bias, conv.padding, impl="fft")
    assert len(calls) == 4
    assert relative_error(stepped, F.conv3d(x, conv.weight, conv.bias, padding=conv.padding)) < 1e-4


def test_cache_not_used_when_grad_is_required(monkeypatch):
    calls = count_spectra(monkeypatch)
    fast_conv.clear_spectrum_cache()
    weight = torch.randn(2, 3, 3, 5, 5, requires_grad=True)
    x = torch.randn(1, 3, 3, 9, 9)
    for _ in range(2):
        functional_conv3d(x, weight, None, (1, 2, 2), impl="fft")
    assert len(calls) == 2 and fast_conv.spectrum_cache_size() == 0
    frozen = weight.detach()
    x_grad = x.clone().requires_grad_()
    for _ in range(2):  # frozen weight, but the input needs a gradient: no cache either
        functional_conv3d(x_grad, frozen, None, (1, 2, 2), impl="fft")
    assert len(calls) == 4 and fast_conv.spectrum_cache_size() == 0


def test_cache_entry_dropped_with_its_weight():
    fast_conv.clear_spectrum_cache()
    weight = torch.randn(2, 3, 3, 5, 5)
    with torch.no_grad():
        functional_conv3d(torch.randn(1, 3, 3, 9, 9), weight, None, (1, 2, 2), impl="fft")
    assert fast_conv.spectrum_cache_size() == 1
    del weight
    gc.collect()
    assert fast_conv.spectrum_cache_size() == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_round_trip(dtype):
    x, weight, bias = (t.to(dtype) for t in random_conv(*SHAPES[0][:2]))
    out = functional_conv3d(x, weight, bias, SHAPES[0][2], impl="fft")
    ref = F.conv3d(x.float(), weight.float(), bias.float(), padding=SHAPES[0][2])
    assert out.dtype == dtype
    assert relative_error(out, ref) < 1e-2  # the result's own rounding to 8 (bf16) or 11 (fp16) bits


def test_autocast_output_dtype_like_conv3d():
    x, weight, bias = random_conv(*SHAPES[0][:2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = functional_conv3d(x, weight, bias, SHAPES[0][2], impl="fft")
        ref_dtype = F.conv3d(x, weight, bias, padding=SHAPES[0][2]).dtype
    assert out.dtype == ref_dtype == torch.bfloat16
    assert relative_error(out, F.conv3d(x, weight, bias, padding=SHAPES[0][2])) < 1e-2


@pytest.mark.parametrize("kwargs,message", [
    ({"impl": "winograd"}, "conv_impl"),
    ({"padding": (1, 5)}, "padding"),
    ({"padding": -1}, "padding"),
    ({"weight": torch.randn(4, 2, 3, 3, 3)}, "channels"),
    ({"weight": torch.randn(4, 3, 3, 3)}, "weight"),
    ({"bias": torch.randn(5)}, "bias"),
    ({"weight": torch.randn(4, 3, 3, 20, 3), "padding": 0}, "does not fit"),
    ({"weight": torch.randn(4, 3, 3, 3, 3, dtype=torch.float64)}, "cast"),
])
def test_bad_input_gets_a_clear_message(kwargs, message):
    args = {"x": torch.randn(1, 3, 4, 8, 8), "weight": torch.randn(4, 3, 3, 3, 3), "bias": torch.randn(4),
            "padding": 1, "impl": "fft"}
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        functional_conv3d(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_conv3d():
    x, weight, bias = (t.cuda() for t in random_conv(*SHAPES[0][:2]))
    ref = F.conv3d(x.double(), weight.double(), bias.double(), padding=SHAPES[0][2])
    assert relative_error(functional_conv3d(x, weight, bias, SHAPES[0][2], impl="fft"), ref) < 1e-4
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert functional_conv3d(x, weight, bias, SHAPES[0][2], impl="fft").dtype == torch.bfloat16


def chain_layers(seed: int = 3) -> list[torch.nn.Module]:
    """A spatial-prompt-like chain, odd sizes: conv 3 -> 4, conv 4 -> 4, PReLU, conv 4 -> 5 ("same" kernels)."""
    torch.manual_seed(seed)
    same = lambda i, o, k: torch.nn.Conv3d(i, o, k, padding=tuple(n // 2 for n in k))  # noqa: E731
    prelu = torch.nn.PReLU()
    with torch.no_grad():
        prelu.weight.fill_(-0.3)  # negative slope: the margins must still be exactly zero (PReLU(0) = 0)
    return [same(3, 4, (3, 7, 5)), same(4, 4, (3, 7, 5)), prelu, same(4, 5, (3, 7, 5))]


def one_by_one(layers, x):
    for layer in layers:
        x = layer(x)
    return x


@pytest.mark.parametrize("trailing_map", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_chain_on_the_fft_grid_equals_the_layers_one_by_one(grad, trailing_map):
    layers = chain_layers()
    if trailing_map:  # a map after the last convolution reads the crop of the grid
        layers.append(torch.nn.PReLU(init=-0.2))
    x = torch.randn(2, 3, 5, 13, 18, generator=torch.Generator().manual_seed(4), requires_grad=grad)
    with torch.set_grad_enabled(grad), mock_chain() as chains:
        out = conv3d.apply_conv3d_chain(layers, x, "fft", on_grid=True)
    assert chains.call_count == 1 and out.shape == (2, 5, 5, 13, 18) and out.is_contiguous()
    ref = one_by_one(layers, x)
    assert relative_error(out, ref) < 1e-4
    if grad:
        grad_out = torch.randn(ref.shape, generator=torch.Generator().manual_seed(5))
        params = [x] + [p for layer in layers for p in layer.parameters()]
        for o, r in zip(torch.autograd.grad(out, params, grad_out), torch.autograd.grad(ref, params, grad_out)):
            assert relative_error(o, r) < 1e-4


def test_shared_input_transform_serves_every_convolution_of_that_input():
    layers = chain_layers()
    score = torch.nn.Conv3d(3, 1, (5, 7, 5), padding=(2, 3, 2))  # deeper kernel, same plane grid as conv1
    x = torch.randn(1, 3, 4, 13, 18, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        spectrum = conv3d.shared_input_spectrum([layers[0], score], x, "fft")
        assert spectrum is not None and spectrum.shape == (1, 3, 4, 16, 11)  # grid 16 x 20: 13 + 3, 18 + 2
        assert relative_error(conv3d.apply_conv3d(score, x, "fft", spectrum), score(x)) < 1e-4
        assert relative_error(conv3d.apply_conv3d_chain(layers, x, "fft", True, spectrum), one_by_one(layers, x)) < 1e-4
        assert relative_error(conv3d.apply_conv3d_chain(layers, x, "fft", False, spectrum),
                              one_by_one(layers, x)) < 1e-4
        assert conv3d.shared_input_spectrum([layers[0], score], x, "direct") is None
        other_grid = torch.nn.Conv3d(3, 1, (1, 15, 15), padding=(0, 7, 7))
        assert conv3d.shared_input_spectrum([layers[0], other_grid], x, "fft") is None


def test_chain_falls_back_to_one_by_one_where_it_does_not_apply():
    layers = chain_layers()
    x = torch.randn(1, 3, 4, 13, 18, generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), mock_chain() as chains:
        ref = one_by_one(layers, x)
        assert torch.equal(conv3d.apply_conv3d_chain(layers, x, "direct", True), ref)
        assert relative_error(conv3d.apply_conv3d_chain(layers, x, "fft", False), ref) < 1e-4
        with torch.autocast("cpu", dtype=torch.bfloat16):  # per-layer rounding of autocast: one by one
            conv3d.apply_conv3d_chain(layers, x, "fft", True)
        shrinking = [torch.nn.Conv3d(3, 4, (3, 7, 5), padding=(1, 1, 1))] + layers[1:]
        conv3d.apply_conv3d_chain(shrinking, x, "fft", True)  # not size-keeping
    assert chains.call_count == 0
    with pytest.raises(ValueError, match="size-keeping convolutions on one grid"):
        conv = shrinking[0]
        fast_conv.fft_conv3d_chain(x, [(conv.weight, conv.bias, conv.padding)])


def mock_chain():
    from unittest import mock
    return mock.patch.object(fast_conv, "fft_conv3d_chain", wraps=fast_conv.fft_conv3d_chain)
