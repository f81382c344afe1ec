"""STOP against its frozen backbone: video encoding, text encoding and a training step, in one process and one run.

    python benchmarks/bench_model.py --threads 2 --output benchmarks/results/bench_model_cpu.json
    python benchmarks/bench_model.py --device cuda --output benchmarks/results/bench_model_h100.json

Workloads on the same random B x T frames (a CLIP of the given size with random weights, default ViT-B/32 shapes),
interleaved in every repeat so that all see the same machine load, medians after warm-up:
* clip_image: plain CLIP image encoding of the B*T frames (`clip.encode_image`, no gradient) - the baseline;
* stop_video: STOP video encoding of the B videos (`model.encode_video`, no gradient, evaluation mode);
* stop_text: STOP text encoding of B captions of `--words` tokens;
* train_step: one STOP training step on B (caption, video) pairs: forward (loss), backward, AdamW step (its own
  copy of the trainable modules on the same frozen CLIP, so the optimizer never touches the evaluation model's
  weights and their cached FFT spectra);
* paper_video, paper_train_step: the same two for the paper's STOP (`--temporal_prompt paper`, token-space
  prompts: models/paper_prompt.py), its own evaluation and training models on the same frozen CLIP.
Reported per workload: videos/s, the ratio to clip_image's videos/s (the median over repeats of the ratio within
each repeat), FLOPs per call counted by
`torch.utils.flop_counter.FlopCounterMode` - as executed (counted in untimed warm-up calls; it does not count
FFTs, so an FFT convolution shows only its per-bin complex matrix products) and as the same function computed with
direct convolutions (`--conv_impl direct`, counted on the meta device: the effective work) - the FLOP/s both
give, against the device's measured matmul peak (a 2048^3 matmul in the run's dtype, timed in every repeat along
with the workloads); peak memory (CUDA: max_memory_allocated per workload; CPU: the process's peak resident set
size, one figure for the whole run). Defaults: CPU float32, B = 2; CUDA bfloat16 autocast, B = 32; T = 12.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from benchmarks.bench_conv import load_average, machine
from models import ContrastiveLoss, ModelConfig, VideoTextModel, create_model
from models.clip import CLIP, CLIPConfig
from models.conv3d import CONV_IMPLS
from models.model_config import str_to_bool
from utils.engine.runtime.allocator import add_retain_freed_memory_flag, retain_freed_memory
from utils.engine.runtime.distributed import DEVICE_HELP, resolve_device
from utils.engine.runtime.precision import PRECISIONS, Precision, resolve_precision
from utils.engine.training.gradient_cache import gradient_cached_backward, surrogate_loss

CLIP_SIZES = {"vit_b_32": CLIPConfig.vit_b_32, "vit_b_16": CLIPConfig.vit_b_16, "tiny": CLIPConfig.tiny}
WORKLOADS = ("clip_image", "stop_video", "stop_text", "train_step", "paper_video", "paper_train_step")
PAPER_WORKLOADS = {"paper_video": "stop_video", "paper_train_step": "train_step"}  # -> the released one's name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", choices=sorted(CLIP_SIZES), default="vit_b_32", help="CLIP shapes (random weights)")
    parser.add_argument("--batch", type=int, default=None, help="videos per call (default: 2 on CPU, 32 on CUDA)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--words", type=int, default=32, help="caption length in tokens")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="as in training (utils/engine/runtime/precision.py); default fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--conv_impl", choices=CONV_IMPLS, default="auto", help="the model flag --conv_impl")
    parser.add_argument("--checkpoint_activations", action="store_true",
                        help="the model flag: recompute the visual blocks in the backward pass (training memory)")
    parser.add_argument("--fft_chain", type=str_to_bool, default=True, metavar="{true,false}",
                        help="the model flag: the prompts' FFT convolution chains on the FFT grid")
    parser.add_argument("--micro_batch_size", type=int, default=0,
                        help="train_step by gradient caching in micro-batches of this many pairs (0: unsplit)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the CLIP and the STOP model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed repeats after the two FLOP-counting calls (themselves untimed warm-ups)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_retain_freed_memory_flag(parser)
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    try:
        args.device = str(resolve_device(args.device))
    except ValueError as error:
        parser.error(str(error))
    cuda = torch.device(args.device).type == "cuda"
    args.batch = args.batch or (32 if cuda else 2)
    args.precision = args.precision or ("bf16" if cuda else "fp32")
    if "clip_image" not in args.workloads:
        parser.error("--workloads must include clip_image (the baseline of the ratios)")
    if args.micro_batch_size < 0 or (args.micro_batch_size and args.batch % args.micro_batch_size):
        parser.error(f"--micro_batch_size {args.micro_batch_size} must divide --batch {args.batch} (or be 0)")
    return args


def build_models(config: CLIPConfig, frames: int, conv_impl: str, device: torch.device | str,
                 checkpoint_activations: bool = False, fft_chain: bool = True, clip: CLIP | None = None,
                 temporal_prompt: str = "stop") -> tuple[CLIP, VideoTextModel, VideoTextModel]:
    """(CLIP, evaluation model, training model): both STOP models (`temporal_prompt` stop: released, paper: the
    paper's) on the one frozen CLIP (a new one unless given), same initial weights. The evaluation model is frozen
    too (FlopCounterMode's module tracker fails on no-grad views of trainable leaves)."""
    clip = clip or CLIP(config).to(device)
    options = ModelConfig(max_frames=frames, conv_impl=conv_impl, checkpoint_activations=checkpoint_activations,
                          fft_chain=fft_chain, temporal_prompt=temporal_prompt)
    eval_model = create_model(options, clip).to(device).eval()
    train_model = create_model(options, clip).to(device)
    train_model.load_state_dict(eval_model.state_dict())
    eval_model.requires_grad_(False)
    return clip, eval_model, train_model


def variant_models(config: CLIPConfig, args: argparse.Namespace, device: torch.device | str, conv_impl: str
                   ) -> dict[str, tuple[CLIP, VideoTextModel, VideoTextModel]]:
    """build_models of the released STOP ("stop") and, where a paper workload is asked for, of the paper's
    ("paper") on the same frozen CLIP."""
    models = {"stop": build_models(config, args.frames, conv_impl, device, args.checkpoint_activations,
                                   args.fft_chain)}
    if any(name in PAPER_WORKLOADS for name in args.workloads):
        models["paper"] = build_models(config, args.frames, conv_impl, device, args.checkpoint_activations,
                                       args.fft_chain, clip=models["stop"][0], temporal_prompt="paper")
    return models


def selected_runs(models: dict[str, tuple[CLIP, VideoTextModel, VideoTextModel]], inputs: dict,
                  workloads: list[str], precision: Precision, compile_models: bool, micro_batch_size: int = 0
                  ) -> dict[str, Callable[[], None]]:
    """workload_runs of the released STOP, plus the paper's video encoding and training step under their
    PAPER_WORKLOADS names, restricted to `workloads` (in that order)."""
    runs = workload_runs(*models["stop"], inputs, precision, compile_models, micro_batch_size)
    if "paper" in models:
        paper = workload_runs(*models["paper"], inputs, precision, compile_models, micro_batch_size)
        runs.update({name: paper[released] for name, released in PAPER_WORKLOADS.items()})
    return {name: runs[name] for name in workloads}


def random_inputs(config: CLIPConfig, batch: int, frames: int, words: int, device) -> dict[str, torch.Tensor]:
    """Normalised-looking frames [B, T, 3, H, W], an all-ones video mask and captions [SOT, words, EOT]."""
    size = config.image_resolution
    ids = torch.randint(1, config.vocab_size - 2, (batch, words))
    ids[:, 0], ids[:, -1] = config.vocab_size - 2, config.vocab_size - 1
    return {"video": torch.randn(batch, frames, 3, size, size, device=device),
            "video_mask": torch.ones(batch, frames, dtype=torch.long, device=device), "ids": ids.to(device)}


def workload_runs(clip: CLIP, eval_model: VideoTextModel, train_model: VideoTextModel, inputs: dict,
                  precision: Precision, compile_models: bool, micro_batch_size: int = 0
                  ) -> dict[str, Callable[[], None]]:
    """One callable per workload (see the module docstring)."""
    video, video_mask, ids = inputs["video"], inputs["video_mask"], inputs["ids"]
    encode_image, encode_video, encode_text = clip.encode_image, eval_model.encode_video, eval_model.encode_text
    train_forward = train_model
    if compile_models:
        encode_image, encode_video, encode_text, train_forward = (
            torch.compile(f) for f in (encode_image, encode_video, encode_text, train_model))
    optimizer = torch.optim.AdamW([p for _, p in train_model.named_trainable_parameters()], lr=1e-4)
    loss_fn = ContrastiveLoss()

    def evaluation(fn):
        def run():
            with torch.no_grad(), precision.autocast():
                fn()
        return run

    def features(text, frames, mask):
        with precision.autocast():
            text_features, video_features, logit_scale = train_forward(text, frames, mask)
        return text_features.float(), video_features.float(), logit_scale

    def train_step():
        train_model.train()
        if micro_batch_size:
            gradient_cached_backward(features, loss_fn, lambda *batch: surrogate_loss(*features(*batch[:3]), batch[3]),
                                     ids, video, video_mask, micro_batch_size, 1.0, lambda x: x.backward())
        else:
            loss_fn(*features(ids, video, video_mask)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        eval_model.eval()

    return {"clip_image": evaluation(lambda: encode_image(video.flatten(0, 1))),
            "stop_video": evaluation(lambda: encode_video(video, video_mask)),
            "stop_text": evaluation(lambda: encode_text(ids)),
            "train_step": train_step}


def count_flops(runs: dict[str, Callable[[], None]], uncounted: tuple[str, ...] = ()) -> dict[str, float | None]:
    """FLOPs per call of each workload as FlopCounterMode counts them, on the second of two untimed calls (the
    first generates the evaluation model's cached prompts and FFT weight spectra; both are warm-ups). Workloads
    in `uncounted` run twice uncounted (None): FlopCounterMode's module tracker fails on a gradient-cached step,
    whose first pass runs the trainable modules without a graph."""
    flops = {}
    for name, run in runs.items():
        run()
        with FlopCounterMode(display=False) if name not in uncounted else contextlib.nullcontext() as counter:
            run()
        flops[name] = float(counter.get_total_flops()) if name not in uncounted else None
    return flops


def direct_flops(config: CLIPConfig, args: argparse.Namespace) -> dict[str, float]:
    """FLOPs per call of the same workloads with direct convolutions, counted on meta tensors (no compute)."""
    models = variant_models(config, args, "meta", "direct")
    inputs = random_inputs(config, args.batch, args.frames, args.words, "cpu")
    inputs = {k: torch.empty_like(v, device="meta") for k, v in inputs.items()}
    return count_flops(selected_runs(models, inputs, args.workloads, Precision("fp32", "meta", None), False))  # unsplit


def matmul_run(device: torch.device, dtype: torch.dtype, size: int = 2048) -> Callable[[], None]:
    """A size^3 matmul (2 size^3 FLOPs): the device's practical peak, timed along with the workloads."""
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    return lambda: a @ b


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_workloads(runs: dict[str, Callable[[], None]], args: argparse.Namespace, device: torch.device
                   ) -> tuple[dict[str, list[float]], dict[str, int]]:
    """(seconds of every timed repeat, peak CUDA bytes) per workload; the workloads alternate within every
    repeat."""
    times = {name: [] for name in runs}
    peak = {}
    for repeat in tqdm(range(args.warmup + args.repeats), desc="repeats"):
        for name, run in runs.items():
            synchronize(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            if repeat >= args.warmup:
                times[name].append(time.perf_counter() - start)
            if device.type == "cuda":
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated(device))
    return times, peak


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device)
    config = CLIP_SIZES[args.clip]()
    torch.manual_seed(0)
    results = {"config": vars(args), "machine": machine(), "load_average_before": load_average(),
               "allocator": retain_freed_memory(args.retain_freed_memory)}
    if device.type == "cuda":
        results["machine"]["gpu"] = torch.cuda.get_device_name(device)
    direct = direct_flops(config, args)

    models = variant_models(config, args, device, args.conv_impl)
    inputs = random_inputs(config, args.batch, args.frames, args.words, device)
    flops = count_flops(selected_runs(models, inputs, args.workloads, precision, False, args.micro_batch_size),
                        uncounted=("train_step", "paper_train_step") if args.micro_batch_size else ())
    runs = selected_runs(models, inputs, args.workloads, precision, args.compile, args.micro_batch_size)
    runs["matmul_2048"] = matmul_run(device, precision.dtype or torch.float32)
    repeats, peak = time_workloads(runs, args, device)
    times = {name: statistics.median(t) for name, t in repeats.items()}
    results["matmul_peak_flops"] = 2 * 2048 ** 3 / times.pop("matmul_2048")

    rows = {}
    for name in args.workloads:
        videos_per_s = args.batch / times[name]
        # the load on a shared machine drifts: the ratio to CLIP is taken within each repeat, then the median
        ratios = [clip_s / s for clip_s, s in zip(repeats["clip_image"], repeats[name])]
        rows[name] = {"seconds": times[name], "seconds_per_repeat": repeats[name], "videos_per_s": videos_per_s,
                      "ratio_to_clip_image": statistics.median(ratios),
                      "counted_gflop": flops[name] and flops[name] / 1e9, "direct_gflop": direct[name] / 1e9,
                      "counted_flops_per_s": flops[name] and flops[name] / times[name],
                      "effective_flops_per_s": direct[name] / times[name],
                      "effective_mfu": direct[name] / times[name] / results["matmul_peak_flops"],
                      "peak_memory_bytes": peak.get(name)}
    results["workloads"] = rows
    results["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results["load_average_after"] = load_average()
    print_table(results)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as file:
            json.dump(results, file, indent=1)
    return results


def print_table(results: dict) -> None:
    config = results["config"]
    print(f"\n{config['clip']}, B = {config['batch']}, T = {config['frames']}, {config['device']} "
          f"{config['precision']}, conv_impl {config['conv_impl']}; matmul peak "
          f"{results['matmul_peak_flops'] / 1e9:.1f} GFLOP/s; load average {results['load_average_before']} -> "
          f"{results['load_average_after']}; {results['allocator']}")
    print(f"{'workload':<17}{'s/call':>9}{'videos/s':>10}{'x CLIP':>8}{'GFLOP':>9}{'GFLOP dir':>11}"
          f"{'GFLOP/s':>9}{'eff.':>9}{'MFU':>7}{'peak MiB':>10}")
    for name, row in results["workloads"].items():
        memory = f"{row['peak_memory_bytes'] / 2 ** 20:.0f}" if row["peak_memory_bytes"] else "-"
        counted = (f"{row['counted_gflop']:>9.1f}" if row["counted_gflop"] is not None else f"{'-':>9}")
        counted_rate = (f"{row['counted_flops_per_s'] / 1e9:>9.1f}" if row["counted_gflop"] is not None
                        else f"{'-':>9}")
        print(f"{name:<17}{row['seconds']:>9.3f}{row['videos_per_s']:>10.2f}{row['ratio_to_clip_image']:>8.3f}"
              f"{counted}{row['direct_gflop']:>11.1f}{counted_rate}"
              f"{row['effective_flops_per_s'] / 1e9:>9.1f}{row['effective_mfu']:>7.2f}{memory:>10}")
    print(f"peak resident set size of the process: {results['peak_rss_bytes'] / 2 ** 30:.2f} GiB")


if __name__ == "__main__":
    main()
