"""Direct versus FFT convolution (models/fast_conv.py) on STOP's real Conv3d shapes, each layer and the two chains.

    python benchmarks/bench_conv.py --threads 2 --batch 2 --frames 12 --output benchmarks/results/bench_conv.json

The layers are those of the model's own SpatialPrompt (pixel volume [B, 3, T, H, W]) and TemporalPrompt (token
volume [B, 1, T, N, W]) at the given CLIP sizes (default ViT-B/32: 224 px, 32 px patches, width 768), random
weights, float32. For each layer and each chain it times, interleaving the two methods in every repeat and taking
medians after warm-up:
* forward: under `torch.no_grad()` (evaluation; the FFT path reuses its cached weight spectrum);
* forward+backward: weights requiring gradients (the FFT path transforms them afresh), input requiring one except
  for the pixels, backward of the output's sum.
Chains as the model runs them: spatial = score conv (no gradient) + conv1 -> conv2 -> PReLU -> conv3 -> PReLU ->
conv4; temporal = frame-weight conv + conv1 -> PReLU -> conv2 (input from attention: it requires a gradient).
Prompts: the model's SpatialPrompt and TemporalPrompt forward in evaluation (no gradient, `--conv_impl auto`, the
FFT chain), their per-bin products by the native CPU kernel (models/spectral_kernel.py) against the batched matrix
products (`fast_conv.batched_products()`), two copies of each module with the same weights, interleaved in every
repeat. `--sections` picks what to run (the direct layers take minutes).
Also reported: max |fft - direct| / max |direct| per layer, the cost-model FLOPs and the `auto` choice, the load
average before and after (other processes on the machine slow both methods), the machine and any glibc MALLOC_*
environment variables (they decide whether large temporaries are page-faulted afresh on every call:
docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from models import spectral_kernel
from models.fast_conv import ConvGeometry, batched_products, fft_is_cheaper, functional_conv3d
from models.model_config import ModelConfig
from models.spatial_prompt import SpatialPrompt
from models.temporal_prompt import TemporalPrompt
from utils.engine.runtime.allocator import add_retain_freed_memory_flag, retain_freed_memory

METHODS = ("direct", "fft")
SECTIONS = ("layers", "chains", "prompts")


@dataclass
class Layer:
    """One Conv3d of the model and the shape [B, C_in, D, H, W] of the volume it convolves."""

    name: str
    conv: nn.Conv3d
    input_shape: tuple[int, ...]
    input_requires_grad: bool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2, help="videos per call")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--image_resolution", type=int, default=224)
    parser.add_argument("--patch_size", type=int, default=32)
    parser.add_argument("--width", type=int, default=768, help="CLIP vision width (token volume's last axis)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per method (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="layers (each Conv3d, direct vs fft), chains (the prompts' convolutions one by one), "
                             "prompts (native kernel vs batched products)")
    add_retain_freed_memory_flag(parser)
    parser.add_argument("--output", default="benchmarks/results/bench_conv.json")
    return parser.parse_args(argv)


def model_layers(args: argparse.Namespace) -> tuple[SpatialPrompt, TemporalPrompt, list[Layer]]:
    grid = args.image_resolution // args.patch_size
    spatial = SpatialPrompt(args.patch_size, grid, ModelConfig())
    temporal = TemporalPrompt(args.width, grid * grid, ModelConfig())
    b, t, size = args.batch, args.frames, args.image_resolution
    pixels, hidden = (b, 3, t, size, size), (b, spatial.conv1.out_channels, t, size, size)
    tokens, token_hidden = (b, 1, t, grid * grid, args.width), (b, temporal.conv1.out_channels, t, grid * grid,
                                                                 args.width)
    layers = [Layer("spatial conv1", spatial.conv1, pixels, False),
              Layer("spatial conv2", spatial.conv2, hidden, True),
              Layer("spatial conv3", spatial.conv3, hidden, True),
              Layer("spatial conv4", spatial.conv4, hidden, True),
              Layer("spatial score_conv", spatial.score_conv, pixels, False),
              Layer("temporal weight_conv", temporal.weight_conv, tokens, True),
              Layer("temporal conv1", temporal.conv1, tokens, True),
              Layer("temporal conv2", temporal.conv2, token_hidden, True)]
    return spatial, temporal, layers


def apply(conv: nn.Conv3d, x: torch.Tensor, method: str) -> torch.Tensor:
    return functional_conv3d(x, conv.weight, conv.bias, conv.padding, method)


def spatial_chain(spatial: SpatialPrompt, pixels: torch.Tensor, method: str) -> torch.Tensor:
    """The spatial prompt's convolutions as the model runs them -> a scalar."""
    with torch.no_grad():
        score = apply(spatial.score_conv, pixels, method)
    x = apply(spatial.conv2, apply(spatial.conv1, pixels, method), method)
    x = apply(spatial.conv3, spatial.act2(x), method)
    x = apply(spatial.conv4, spatial.act3(x), method)
    return x.sum() + score.sum()


def temporal_chain(temporal: TemporalPrompt, volume: torch.Tensor, method: str) -> torch.Tensor:
    """The temporal prompt's convolutions as the model runs them -> a scalar."""
    weights = apply(temporal.weight_conv, volume, method)
    prompt = apply(temporal.conv2, temporal.act1(apply(temporal.conv1, volume, method)), method)
    return prompt.sum() + weights.sum()


def forward_backward(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def run():
        out = fn()
        (out if out.dim() == 0 else out.sum()).backward()
    return run


def no_grad(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def run():
        with torch.no_grad():
            fn()
    return run


def time_methods(runs: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per method; the methods alternate within every repeat so that both see the same load."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def timing_entry(times: dict[str, float]) -> dict:
    return {"direct_s": times["direct"], "fft_s": times["fft"], "speedup": times["direct"] / times["fft"]}


def bench_layer(layer: Layer, args: argparse.Namespace) -> dict:
    conv = layer.conv
    x = torch.randn(layer.input_shape)
    geometry = ConvGeometry(x.shape[0], conv.in_channels, conv.out_channels, tuple(x.shape[2:]),
                            tuple(conv.kernel_size), tuple(conv.padding))
    with torch.no_grad():
        ref = apply(conv, x, "direct")
        err = ((apply(conv, x, "fft") - ref).abs().max() / ref.abs().max()).item()
    forward = time_methods({m: no_grad(lambda m=m: apply(conv, x, m)) for m in METHODS}, args.repeats, args.warmup)
    x_grad = x.clone().requires_grad_(layer.input_requires_grad)
    train = time_methods({m: forward_backward(lambda m=m: apply(conv, x_grad, m)) for m in METHODS},
                         args.repeats, args.warmup)
    return {"layer": layer.name, "input_shape": list(layer.input_shape), "weight_shape": list(conv.weight.shape),
            "padding": list(conv.padding), "fft_grid": list(geometry.grid),
            "direct_gflop": geometry.direct_flops() / 1e9,
            "fft_model_gflop_cached": geometry.fft_flops(weight_cached=True) / 1e9,
            "fft_model_gflop_uncached": geometry.fft_flops(weight_cached=False) / 1e9,
            "auto_picks_fft": fft_is_cheaper(geometry, weight_cached=True),
            "max_relative_error": err, "forward": timing_entry(forward), "forward_backward": timing_entry(train)}


def bench_chain(name: str, chain: Callable[[torch.Tensor, str], torch.Tensor], x: torch.Tensor,
                args: argparse.Namespace) -> dict:
    forward = time_methods({m: no_grad(lambda m=m: chain(x, m)) for m in METHODS}, args.repeats, args.warmup)
    train = time_methods({m: forward_backward(lambda m=m: chain(x, m)) for m in METHODS}, args.repeats, args.warmup)
    return {"chain": name, "input_shape": list(x.shape), "forward": timing_entry(forward),
            "forward_backward": timing_entry(train)}


def machine() -> dict:
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
            "native_spectral_kernel": spectral_kernel.available()}


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def print_table(results: dict) -> None:
    print(f"\n{'layer / chain':<24}{'GFLOP':>8}{'fwd direct':>12}{'fwd fft':>10}{'x':>6}"
          f"{'f+b direct':>12}{'f+b fft':>10}{'x':>6}{'rel err':>10}")
    for row in results.get("layers", []) + results.get("chains", []):
        name = row.get("layer") or row.get("chain") + " chain"
        gflop = f"{row['direct_gflop']:.1f}" if "direct_gflop" in row else ""
        err = f"{row['max_relative_error']:.1e}" if "max_relative_error" in row else ""
        f, fb = row["forward"], row["forward_backward"]
        print(f"{name:<24}{gflop:>8}{f['direct_s']:>11.3f}s{f['fft_s']:>9.3f}s{f['speedup']:>6.1f}"
              f"{fb['direct_s']:>11.3f}s{fb['fft_s']:>9.3f}s{fb['speedup']:>6.1f}{err:>10}")
    for row in results.get("prompts", []):
        print(f"{row['prompt']:<24} evaluation: native kernel {row['native_s']:.3f}s, batched products "
              f"{row['batched_s']:.3f}s, x{row['speedup']:.2f} (outputs differ by "
              f"{row['max_relative_difference']:.1e})")


def bench_prompts(spatial: SpatialPrompt, temporal: TemporalPrompt, args: argparse.Namespace) -> list[dict]:
    """Each prompt's evaluation forward with the native kernel's products against the batched ones."""
    grid = args.image_resolution // args.patch_size
    b, t, size = args.batch, args.frames, args.image_resolution
    video = torch.randn(b, t, 3, size, size)
    tokens, cells = torch.randn(b, t, 1 + grid * grid, args.width), torch.rand(b, t, grid, grid) > 0.8
    rows = []
    for name, module, inputs in (("spatial prompt", spatial, (video,)), ("temporal prompt", temporal, (tokens, cells))):
        native, batched = module.eval(), copy.deepcopy(module).eval()
        with torch.no_grad():
            out_native = native(*inputs)[0]
            with batched_products():  # its weight spectra are cached in the batched layout
                out_batched = batched(*inputs)[0]
        err = ((out_native - out_batched).abs().max() / out_batched.abs().max()).item()
        times = time_methods({"native": no_grad(functools.partial(native, *inputs)),
                              "batched": no_grad(functools.partial(batched, *inputs))}, args.repeats, args.warmup)
        rows.append({"prompt": name, "native_s": times["native"], "batched_s": times["batched"],
                     "speedup": times["batched"] / times["native"], "max_relative_difference": err})
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {"config": vars(args), "machine": machine(), "load_average_before": load_average(),
               "allocator": retain_freed_memory(args.retain_freed_memory)}
    spatial, temporal, layers = model_layers(args)
    if "layers" in args.sections:
        results["layers"] = [bench_layer(layer, args) for layer in tqdm(layers, desc="layers")]
    if "chains" in args.sections:
        pixels = torch.randn(layers[0].input_shape)
        volume = torch.randn(layers[5].input_shape, requires_grad=True)
        chains = [("spatial", lambda x, m: spatial_chain(spatial, x, m), pixels),
                  ("temporal", lambda x, m: temporal_chain(temporal, x, m), volume)]
        results["chains"] = [bench_chain(name, fn, x, args) for name, fn, x in tqdm(chains, desc="chains")]
    if "prompts" in args.sections:
        results["prompts"] = bench_prompts(spatial, temporal, args)
    results["load_average_after"] = load_average()
    print_table(results)
    print(f"load average before {results['load_average_before']}, after {results['load_average_after']}")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
