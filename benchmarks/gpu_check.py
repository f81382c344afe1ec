"""The GPU check: does every CUDA path of this repository work on this machine, and how fast is it?

    bash scripts/gpu_check.sh                                # the GPU, ViT-B/32 shapes, < 8 minutes on one GPU
    bash scripts/gpu_check.sh --device cpu --tiny --output /tmp/check    # the same checks small (the test suite's)

Every check reports passed, failed or not_applicable (with the reason) and its figures, in OUTPUT/gpu_check.json and
a readable OUTPUT/gpu_check.md; a check that raises is reported as failed with its error, and the others still run.
Models have random weights (ViT-B/32 shapes, 12 frames, 32 words; --tiny: CLIPConfig.tiny(), 4 frames, 8 words).
* features: the fp32 text and video features of DGL, the released STOP and the paper's STOP on the device against
  the CPU's, same weights and inputs (TF32 off): max |device - cpu| / max |cpu| <= FEATURE_TOLERANCE;
* amp: 20 training steps of STOP (the Trainer, the contrastive step) on one fixed generated batch under fp16
  (with the loss scaler) and bf16 autocast: every loss finite, the last 5 lower than the first 5 on average;
* ddp: the same 3 training steps (fp32, STOP without dropout) in 1 process and in a torchrun process group over
  every GPU (NCCL; on the CPU 2 gloo processes), same global batch: losses, gradient norms and learned tensors
  within DDP_TOLERANCE;
* conv_impl: STOP's prompt Conv3d layers direct against FFT (models/fast_conv.py) on the device, forward without
  gradient per layer and the two chains forward + backward, under the training precision; what `auto` picks per
  layer, what was faster, and the DIRECT_EFFICIENCY that would make the rule agree (`auto` = FFT where direct
  FLOPs > DIRECT_EFFICIENCY x the FFT cost-model FLOPs, calibrated on a CPU);
* throughput: STOP encode and train videos/s and peak memory (CUDA max_memory_allocated; CPU the process's peak
  RSS) at global batch 32 / 64 / 128 (--tiny 2 / 4) on one device, the training step unsplit and by gradient
  caching (--micro_batch_size, micro-batches of at most PER_GPU_BATCH); out of memory is a figure;
* data_loader: DataLoader videos/s over generated MSR-VTT-style videos with 0 / 1 / 2 / 4 workers against the
  training step's videos/s at PER_GPU_BATCH: how many workers a step needs;
* index: exact search (utils/inference/ann_index.exact_top_k; on the CPU, as `infer.py search` runs it) queries/s,
  and with FAISS installed the vectors/s a flat and an IVF index take in (`build_ann`: normalisation, IVF training,
  adding, its recall@10 check and the write, as `infer.py build-ann`) and their queries/s.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

from benchmarks.bench_conv import (
    forward_backward,
    machine,
    model_layers,
    no_grad,
    spatial_chain,
    temporal_chain,
    time_methods,
)
from benchmarks.bench_data import time_loader, write_msrvtt_videos
from benchmarks.bench_model import random_inputs, synchronize
from benchmarks.bench_search import synthetic
from dataloaders import add_data_args, build_dataset
from models import ModelConfig, VideoTextModel, add_model_args, create_model
from models.clip import CLIP, CLIPConfig
from models.fast_conv import (
    DIRECT_EFFICIENCY,
    DIRECT_EFFICIENCY_SINGLE_OUTPUT,
    conv_geometry,
    fft_is_cheaper,
    functional_conv3d,
)
from utils.atomic_file import write_atomic
from utils.engine.retrieval.step import ContrastiveStep
from utils.engine.runtime.distributed import DistContext, cleanup_distributed, init_distributed, resolve_device
from utils.engine.runtime.log import JsonLines, peak_memory_mb, write_json
from utils.engine.runtime.precision import resolve_precision
from utils.engine.training.trainer import TrainConfig, Trainer
from utils.inference.ann_index import AnnError, build_ann, exact_top_k, import_faiss, load_ann

STATUSES = ("passed", "failed", "not_applicable")
FEATURE_TOLERANCE = 1e-4  # fp32 features, device vs CPU: max abs difference / max abs CPU value
DDP_TOLERANCE = 1e-4      # 1 process vs the process group: relative difference of every loss and gradient norm
DDP_LEARNED_TOLERANCE = 1e-5  # ... and max abs difference of the learned tensors (Adam's steps are ~lr = 1e-3)
CONV_TOLERANCE = 1e-3     # FFT vs direct convolution on the device, fp32: max abs difference / max abs direct
VARIANTS = {"dgl": {"temporal_prompt": "none"}, "stop_released": {}, "stop_paper": {"temporal_prompt": "paper"}}
LOADER_WORKERS = (0, 1, 2, 4)


class NotApplicable(Exception):
    """The check cannot run here; the message says why (e.g. "needs >= 2 GPUs")."""


class CheckFailed(Exception):
    """The check ran and its criterion failed: the reason and the figures measured."""

    def __init__(self, reason: str, figures: dict):
        super().__init__(reason)
        self.figures = figures


@dataclasses.dataclass(frozen=True)
class Setup:
    """The sizes of one run of the check: full (ViT-B/32 shapes) or tiny."""
    device: torch.device
    tiny: bool
    clip: CLIPConfig
    frames: int
    words: int
    global_batches: tuple[int, ...]  # throughput
    per_gpu_batch: int               # the most pairs encoded at once (micro-batches; the data-loader step)
    amp_batch: int
    amp_steps: int
    ddp_batch: int                   # per process
    loader_videos: int
    loader_video_size: tuple[int, int, int]  # frames, height, width of the generated videos
    index_size: int
    scratch: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def train_precision(self) -> str:
        """The recipes' `--precision amp` on CUDA (float16 + scaler); fp32 on the CPU (amp there is bfloat16)."""
        return "amp" if self.cuda else "fp32"


def make_setup(device: torch.device, tiny: bool, scratch: Path) -> Setup:
    if tiny:
        return Setup(device, True, CLIPConfig.tiny(), frames=4, words=8, global_batches=(2, 4), per_gpu_batch=2,
                     amp_batch=4, amp_steps=20, ddp_batch=2, loader_videos=12, loader_video_size=(8, 48, 64),
                     index_size=2000, scratch=scratch)
    return Setup(device, False, CLIPConfig.vit_b_32(), frames=12, words=32, global_batches=(32, 64, 128),
                 per_gpu_batch=32, amp_batch=8, amp_steps=20, ddp_batch=4, loader_videos=32,
                 loader_video_size=(30, 224, 398), index_size=100_000, scratch=scratch)


def build_model(setup: Setup, variant: str, **options) -> VideoTextModel:
    """A model of `variant` (VARIANTS) on a random CLIP of the setup's shapes, seed 0, on the CPU."""
    torch.manual_seed(0)
    config = ModelConfig(max_frames=setup.frames, max_words=setup.words, **{**VARIANTS[variant], **options})
    return create_model(config, CLIP(setup.clip))


def on_device(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of `model` on `device` (the original stays where it is)."""
    return copy.deepcopy(model).to(device)


class RandomPairs(Dataset):
    """`n` training items {"text" [W], "video" [T, 3, R, R], "video_mask" [T]}: random captions, and videos drawn
    from `distinct` random ones (item i has video i mod distinct; all different by default)."""

    def __init__(self, setup: Setup, n: int, distinct: int | None = None, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        size, vocab = setup.clip.image_resolution, setup.clip.vocab_size
        self.ids = torch.randint(1, vocab - 2, (n, setup.words), generator=generator)
        self.ids[:, 0], self.ids[:, -1] = vocab - 2, vocab - 1
        self.videos = torch.randn(min(distinct or n, n), setup.frames, 3, size, size, generator=generator)
        self.mask = torch.ones(setup.frames, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"text": self.ids[index], "video": self.videos[index % len(self.videos)], "video_mask": self.mask}


def train(setup: Setup, model: VideoTextModel, precision_name: str, dataset: Dataset, batch: int, epochs: int,
          ctx: DistContext | None = None, micro_batch_size: int = 0) -> list[dict]:
    """Train `model` (already on the device) with the Trainer on `dataset` for `epochs` (steps = epochs x
    len(dataset) / (batch x processes)); every step's metrics record (loss, grad_norm, step_time, data_time,
    peak_memory_mb) as the Trainer logs it."""
    ctx = ctx or DistContext(device=setup.device)
    precision = resolve_precision(precision_name, ctx.device)
    records: list[dict] = []
    config = TrainConfig(epochs=epochs, batch_size=batch, micro_batch_size=micro_batch_size, num_thread_reader=0,
                         n_display=1, seed=0)
    trainer = Trainer(ContrastiveStep(model, precision), dataset, ctx, config, precision, output_dir=None,
                      metrics=JsonLines(os.devnull, enabled=ctx.is_main, listeners=[records.append]))
    with contextlib.redirect_stderr(io.StringIO()):  # the Trainer's progress bars
        trainer.train()
    return [r for r in records if r["kind"] == "train"]


@contextlib.contextmanager
def exact_float32():
    """TF32 off for CUDA matrix products and cuDNN convolutions (restored after): fp32 that is fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    """max |got - reference| / max |reference|, both compared in float32 on the CPU."""
    got, reference = got.detach().float().cpu(), reference.detach().float().cpu()
    return float((got - reference).abs().max() / reference.abs().max().clamp_min(1e-30))


# ------------------------------------------------------------------------------------------------ the checks
def check_features(setup: Setup) -> dict:
    figures, errors_seen = {"tolerance": FEATURE_TOLERANCE, "tf32": False, "batch": 2}, []
    with exact_float32(), torch.no_grad():
        for variant in VARIANTS:
            model = build_model(setup, variant).eval()
            inputs = random_inputs(setup.clip, 2, setup.frames, setup.words, "cpu")
            reference = (model.encode_text(inputs["ids"]), model.encode_video(inputs["video"], inputs["video_mask"]))
            device_model = on_device(model, setup.device).eval()
            moved = {k: v.to(setup.device) for k, v in inputs.items()}
            got = (device_model.encode_text(moved["ids"]), device_model.encode_video(moved["video"],
                                                                                     moved["video_mask"]))
            errors = {f"{name}_max_relative_error": relative_error(g, r)
                      for name, g, r in zip(("text", "video"), got, reference)}
            if not all(torch.isfinite(g).all() for g in got):
                raise CheckFailed(f"{variant}: non-finite features on {setup.device}", figures)
            figures[variant] = errors
            errors_seen += [(e, f"{variant} {k.split('_')[0]}") for k, e in errors.items()]
    worst = max(errors_seen, key=lambda seen: seen[0])
    figures["summary"] = f"worst relative error {worst[0]:.1e} ({worst[1]}), tolerance {FEATURE_TOLERANCE:.0e}"
    if worst[0] > FEATURE_TOLERANCE:
        raise CheckFailed(f"{worst[1]} features on {setup.device} differ from the CPU's by {worst[0]:.2e} relative "
                          f"(tolerance {FEATURE_TOLERANCE:.0e})", figures)
    return figures


def amp_not_applicable(setup: Setup, name: str) -> str | None:
    if name == "fp16" and not setup.cuda:
        return ("float16 autocast is a CUDA path: on the CPU `--precision amp` is bfloat16 "
                "(utils/engine/runtime/precision.py), and float16 Conv3d there is tens of times slower than fp32")
    if name == "bf16" and setup.cuda and not torch.cuda.is_bf16_supported():
        return "this GPU has no bfloat16 support"
    return None


def check_amp(setup: Setup) -> dict:
    figures, failures = {"steps": setup.amp_steps, "batch": setup.amp_batch, "model": "stop_released"}, []
    for name in ("fp16", "bf16"):
        reason = amp_not_applicable(setup, name)
        if reason:
            figures[name] = {"status": "not_applicable", "reason": reason}
            continue
        model = build_model(setup, "stop_released").to(setup.device)
        dataset = RandomPairs(setup, setup.amp_batch)  # one fixed batch, seen every step
        losses = [r["loss"] for r in train(setup, model, name, dataset, setup.amp_batch, setup.amp_steps)]
        finite = all(math.isfinite(x) for x in losses)
        first, last = statistics.mean(losses[:5]), statistics.mean(losses[-5:])
        passed = finite and last < first
        figures[name] = {"status": "passed" if passed else "failed", "losses": losses, "first_5_mean": first,
                         "last_5_mean": last, "finite": finite}
        if not passed:
            failures.append(f"{name}: losses {'not finite' if not finite else f'{first:.4f} -> {last:.4f}'}")
    measured = [n for n in ("fp16", "bf16") if figures[n]["status"] != "not_applicable"]
    if not measured:
        raise NotApplicable("; ".join(figures[n]["reason"] for n in ("fp16", "bf16")))
    figures["summary"] = "; ".join(
        f"{n}: loss {figures[n]['first_5_mean']:.3f} -> {figures[n]['last_5_mean']:.3f}" if n in measured
        else f"{n}: not applicable" for n in ("fp16", "bf16"))
    if failures:
        raise CheckFailed("; ".join(failures), figures)
    return figures


def ddp_steps(setup: Setup, ctx: DistContext, batch: int, steps: int = 3) -> dict:
    """`steps` fp32 training steps of STOP without dropout (the processes draw their own masks) on a fixed
    dataset of steps x global batch pairs: every step's loss and gradient norm, and the learned tensors."""
    model = build_model(setup, "stop_released", spatial_dropout=0.0).to(ctx.device)
    dataset = RandomPairs(setup, steps * batch * ctx.world_size)
    with exact_float32():
        records = train(setup, model, "fp32", dataset, batch, 1, ctx)
    return {"loss": [r["loss"] for r in records], "grad_norm": [r["grad_norm"] for r in records],
            "learned": {k: v.detach().cpu() for k, v in model.learned_state_dict().items()}}


def ddp_worker(output: str, device: str, tiny: bool) -> None:
    """One rank of the check's process group (started by torchrun); rank 0 writes its ddp_steps to `output`."""
    ctx = init_distributed(device)
    try:
        setup = make_setup(ctx.device, tiny, Path(output).parent)
        result = ddp_steps(setup, ctx, setup.ddp_batch)
        if ctx.is_main:
            torch.save(result, output)
    finally:
        cleanup_distributed()


def check_ddp(setup: Setup) -> dict:
    if setup.cuda:
        world, backend = torch.cuda.device_count(), "nccl"
        if world < 2:
            raise NotApplicable(f"needs >= 2 GPUs ({world} found): NCCL runs one process per GPU")
    else:
        world, backend = 2, "gloo"
    output = setup.scratch / "ddp_rank0.pt"
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    command = [torchrun, "--standalone", "--nproc_per_node", str(world), "-m", "benchmarks.gpu_check",
               "--ddp_worker", str(output), "--device", setup.device.type] + (["--tiny"] if setup.tiny else [])
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    run = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True,
                         text=True, timeout=300 if setup.tiny else 420)
    group_seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise CheckFailed(f"torchrun exited {run.returncode}: {run.stderr.strip()[-500:]}", {})
    group = torch.load(output, weights_only=True)
    single = ddp_steps(setup, DistContext(device=setup.device), setup.ddp_batch * world)
    errors = {"loss": max(abs(a - b) / abs(b) for a, b in zip(group["loss"], single["loss"])),
              "grad_norm": max(abs(a - b) / abs(b) for a, b in zip(group["grad_norm"], single["grad_norm"]))}
    learned = max(float((group["learned"][k] - v).abs().max()) for k, v in single["learned"].items())
    figures = {"processes": world, "backend": backend, "global_batch": setup.ddp_batch * world,
               "steps": len(single["loss"]), "losses_1_process": single["loss"], "losses_group": group["loss"],
               "max_relative_difference": errors, "tolerance": DDP_TOLERANCE,
               "learned_max_abs_difference": learned, "learned_tolerance": DDP_LEARNED_TOLERANCE,
               "group_seconds_with_start_up": round(group_seconds, 1)}
    worst = max(errors, key=errors.get)
    figures["summary"] = (f"{world} {backend} processes vs 1: losses and gradient norms within {errors[worst]:.1e} "
                          f"relative, learned tensors within {learned:.1e}")
    if len(group["loss"]) != len(single["loss"]) or errors[worst] > DDP_TOLERANCE:
        raise CheckFailed(f"the {world}-process run differs from 1 process: {worst} by {errors[worst]:.2e} relative "
                          f"(tolerance {DDP_TOLERANCE:.0e})", figures)
    if learned > DDP_LEARNED_TOLERANCE:
        raise CheckFailed(f"the {world}-process run's learned tensors differ from 1 process's by {learned:.2e} "
                          f"(tolerance {DDP_LEARNED_TOLERANCE:.0e})", figures)
    return figures


def synchronized(device: torch.device, run: Callable[[], None]) -> Callable[[], None]:
    def timed():
        run()
        synchronize(device)
    return timed


def check_conv_impl(setup: Setup) -> dict:
    clip, device = setup.clip, setup.device
    shapes = argparse.Namespace(batch=2 if setup.tiny else 8, frames=setup.frames,
                                image_resolution=clip.image_resolution, patch_size=clip.vision_patch_size,
                                width=clip.vision_width)
    spatial, temporal, layers = model_layers(shapes)
    spatial, temporal = spatial.to(device), temporal.to(device)
    precision = resolve_precision(setup.train_precision, device)
    repeats, warmup = (2, 1) if setup.tiny else (5, 2)
    rows, worst = [], 0.0
    for layer in layers:
        conv = layer.conv
        x = torch.randn(layer.input_shape, device=device)
        with exact_float32(), torch.no_grad():
            reference = functional_conv3d(x, conv.weight, conv.bias, conv.padding, "direct")
            error = relative_error(functional_conv3d(x, conv.weight, conv.bias, conv.padding, "fft"), reference)
        worst = max(worst, error)

        def forward(method, conv=conv, x=x):
            with precision.autocast():
                functional_conv3d(x, conv.weight, conv.bias, conv.padding, method)
        times = time_methods({m: synchronized(device, no_grad(lambda m=m: forward(m))) for m in ("direct", "fft")},
                             repeats, warmup)
        geometry = conv_geometry(x, conv.weight, conv.bias, conv.padding)
        direct_rate = geometry.direct_flops() / times["direct"]
        fft_rate = geometry.fft_flops(weight_cached=True) / times["fft"]
        rows.append({"layer": layer.name, "input_shape": list(layer.input_shape), "direct_s": times["direct"],
                     "fft_s": times["fft"], "faster": "fft" if times["fft"] < times["direct"] else "direct",
                     "auto_picks": "fft" if fft_is_cheaper(geometry, weight_cached=True) else "direct",
                     "measured_direct_efficiency": direct_rate / fft_rate, "fft_max_relative_error": error})
    chains = {}
    pixels = torch.randn(layers[0].input_shape, device=device)
    volume = torch.randn(layers[5].input_shape, device=device, requires_grad=True)
    for name, chain, x in (("spatial", lambda x, m: spatial_chain(spatial, x, m), pixels),
                           ("temporal", lambda x, m: temporal_chain(temporal, x, m), volume)):
        def step(method, chain=chain, x=x):
            with precision.autocast():
                return chain(x, method)
        times = time_methods({m: synchronized(device, forward_backward(lambda m=m: step(m)))
                              for m in ("direct", "fft")}, repeats, warmup)
        chains[name] = {"direct_s": times["direct"], "fft_s": times["fft"], "speedup_of_fft": times["direct"] /
                        times["fft"]}
    agree = sum(r["faster"] == r["auto_picks"] for r in rows)
    figures = {"precision": precision.name, "batch": shapes.batch, "layers_forward_no_grad": rows,
               "chains_forward_backward": chains, "auto_agrees_with_measurement": f"{agree} of {len(rows)} layers",
               "auto_should_pick": {r["layer"]: r["faster"] for r in rows},
               "direct_efficiency_now": {"several_outputs": DIRECT_EFFICIENCY,
                                         "single_output": DIRECT_EFFICIENCY_SINGLE_OUTPUT},
               "fft_tolerance": CONV_TOLERANCE,
               "summary": f"auto agrees with the measurement on {agree} of {len(rows)} layers; FFT chain speed-up "
                          + ", ".join(f"{n} {c['speedup_of_fft']:.2f}x" for n, c in chains.items())}
    if worst > CONV_TOLERANCE:
        raise CheckFailed(f"FFT and direct convolution differ by {worst:.2e} relative on {device} (tolerance "
                          f"{CONV_TOLERANCE:.0e})", figures)
    return figures


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def train_throughput(setup: Setup, batch: int, micro_batch_size: int, steps: int = 3) -> dict:
    """STOP's training step (the Trainer, the recipes' precision) at `batch`: videos/s of the steps after the
    first (their compute: step time less the batch's collation), peak memory in MiB; {"out_of_memory": True}
    when it does not fit."""
    reset_peak(setup.device)
    try:
        model = build_model(setup, "stop_released").to(setup.device)
        dataset = RandomPairs(setup, steps * batch, distinct=min(batch, 16))
        records = train(setup, model, setup.train_precision, dataset, batch, 1, micro_batch_size=micro_batch_size)
    except torch.OutOfMemoryError:
        return {"out_of_memory": True}
    seconds = statistics.median(r["step_time"] - r["data_time"] for r in records[1:])
    return {"videos_per_s": batch / seconds, "step_s": seconds, "peak_memory_mib": peak_memory_mb(setup.device)}


def encode_throughput(setup: Setup, batch: int, repeats: int = 2) -> dict:
    """STOP video encoding (no gradient, evaluation mode, the recipes' precision) of `batch` videos."""
    reset_peak(setup.device)
    precision = resolve_precision(setup.train_precision, setup.device)
    try:
        model = build_model(setup, "stop_released").to(setup.device).eval()
        inputs = random_inputs(setup.clip, batch, setup.frames, setup.words, setup.device)

        def encode():
            with torch.no_grad(), precision.autocast():
                model.encode_video(inputs["video"], inputs["video_mask"])
        seconds = time_methods({"encode": synchronized(setup.device, encode)}, repeats, 1)["encode"]
    except torch.OutOfMemoryError:
        return {"out_of_memory": True}
    return {"videos_per_s": batch / seconds, "seconds": seconds, "peak_memory_mib": peak_memory_mb(setup.device)}


def check_throughput(setup: Setup) -> dict:
    rows = []
    for batch in setup.global_batches:
        micro = min(setup.per_gpu_batch, batch // 2)
        rows.append({"global_batch": batch, "encode": encode_throughput(setup, batch),
                     "train_unsplit": train_throughput(setup, batch, 0),
                     "train_micro_batches": {"micro_batch_size": micro, **train_throughput(setup, batch, micro)}})
    memory = "max_memory_allocated" if setup.cuda else "the process's peak resident set size so far"

    def rate(figures):
        return "out of memory" if figures.get("out_of_memory") else f"{figures['videos_per_s']:.1f}"
    return {"precision": setup.train_precision, "frames": setup.frames, "peak_memory": memory, "rows": rows,
            "summary": "train videos/s unsplit / micro-batched: " + ", ".join(
                f"{r['global_batch']}: {rate(r['train_unsplit'])} / {rate(r['train_micro_batches'])}" for r in rows)}


def check_data_loader(setup: Setup) -> dict:
    root = setup.scratch / "videos"
    frames, height, width = setup.loader_video_size
    write_msrvtt_videos(str(root), setup.loader_videos, num_frames=frames, height=height, width=width, fps=3)
    data_args = add_data_args(add_model_args(argparse.ArgumentParser())).parse_args([
        "--data_path", str(root / "MSRVTT_data.json"), "--features_path", str(root / "videos"),
        "--train_csv", str(root / "MSRVTT_train.9k.csv"), "--max_frames", str(setup.frames),
        "--max_words", str(setup.words)])
    dataset = build_dataset(data_args, "train", setup.clip.image_resolution)
    batch = 2 if setup.tiny else 8
    loaders = [time_loader(dataset, workers, batch, epochs=1) for workers in LOADER_WORKERS]
    for row in loaders:
        if row["videos"] != len(dataset) // batch * batch and row["videos"] != len(dataset):
            raise CheckFailed(f"{row['workers']} workers loaded {row['videos']} of {len(dataset)} videos",
                              {"loaders": loaders})
    step = train_throughput(setup, setup.per_gpu_batch, 0)
    if step.get("out_of_memory"):
        raise CheckFailed(f"the training step at batch {setup.per_gpu_batch} ran out of memory", {"loaders": loaders})
    # 0 workers load in the main process, between the steps: a step needs >= 1 worker to overlap its loading
    enough = [r["workers"] for r in loaders if r["workers"] and r["steady_videos_per_s"] >= step["videos_per_s"]]
    per_worker = next(r["steady_videos_per_s"] for r in loaders if r["workers"] == 1)
    needed = enough[0] if enough else None
    estimate = math.ceil(step["videos_per_s"] / per_worker) if per_worker > 0 else None
    return {"videos": f"{setup.loader_videos} x {width}x{height}, {frames} frames, H.264", "batch": batch,
            "loaders": loaders, "train_step_videos_per_s": step["videos_per_s"],
            "train_step_batch": setup.per_gpu_batch, "workers_needed_measured": needed,
            "workers_needed_estimate": estimate,
            "summary": f"step {step['videos_per_s']:.1f} videos/s; loader " + ", ".join(
                f"{r['workers']}w {r['steady_videos_per_s']:.1f}" for r in loaders) + "; workers needed: " +
                (str(needed) if needed is not None else f"more than {LOADER_WORKERS[-1]} (about {estimate})")}


def check_index(setup: Setup) -> dict:
    ids, embeddings, queries = synthetic(setup.index_size, setup.clip.embed_dim)
    stored = torch.from_numpy(embeddings[:50]).float()
    rows = exact_top_k(stored, embeddings, 1)[1][:, 0]
    if not torch.equal(rows, torch.arange(50)):
        raise CheckFailed("exact search does not find stored vectors as their own nearest neighbour", {})
    seconds = time_methods({"exact": lambda: exact_top_k(queries, embeddings, 10)}, 3, 1)["exact"]
    figures = {"vectors": setup.index_size, "dim": setup.clip.embed_dim, "device": "cpu (as infer.py search)",
               "exact_queries_per_s": len(queries) / seconds}
    try:
        import_faiss()
    except AnnError as error:
        figures["faiss"] = {"status": "not_applicable", "reason": str(error)}
    else:
        for kind in ("flat", "ivf"):
            folder = setup.scratch / f"ann_{kind}"
            folder.mkdir()
            start = time.perf_counter()
            record = build_ann(folder, ids, embeddings, kind, recall_queries=queries.numpy())
            build_s = time.perf_counter() - start
            index = load_ann(folder, ids)
            search_s = time_methods({kind: lambda index=index: index.search(queries, 10)}, 3, 1)[kind]
            figures[f"faiss_{kind}"] = {"vectors_indexed_per_s": setup.index_size / build_s, "build_s": build_s,
                                        "queries_per_s": len(queries) / search_s,
                                        "recall_at_10": record["recall_at_10"]}
    faiss = ", ".join(f"{k[6:]} indexes {v['vectors_indexed_per_s']:.0f} vectors/s, {v['queries_per_s']:.0f} "
                      "queries/s" for k, v in figures.items() if k.startswith("faiss_")) or "FAISS not installed"
    figures["summary"] = (f"exact search over {setup.index_size} vectors: {figures['exact_queries_per_s']:.0f} "
                          f"queries/s; {faiss}")
    return figures


CHECKS: dict[str, tuple[Callable[[Setup], dict], str]] = {
    "features": (check_features, "fp32 features of DGL, STOP released and STOP paper on the device vs the CPU"),
    "amp": (check_amp, "fp16 / bf16 autocast training steps: finite, decreasing losses"),
    "ddp": (check_ddp, "1 process vs a torchrun process group over every GPU (NCCL; CPU: 2 gloo processes)"),
    "conv_impl": (check_conv_impl, "STOP's prompt convolutions, direct vs FFT, and what --conv_impl auto picks"),
    "throughput": (check_throughput, "encode / train videos/s and peak memory per global batch, with and without "
                                     "--micro_batch_size"),
    "data_loader": (check_data_loader, "DataLoader videos/s per worker count against the training step"),
    "index": (check_index, "exact search and FAISS index throughput (utils/inference/ann_index.py)"),
}


# ------------------------------------------------------------------------------------------------ the report
def run_check(name: str, setup: Setup) -> dict:
    """One check -> {"name", "description", "status", "reason", "figures", "seconds"}; never raises an Exception."""
    function, description = CHECKS[name]
    start = time.perf_counter()
    reason, figures = None, {}
    try:
        figures, status = function(setup), "passed"
    except NotApplicable as error:
        status, reason = "not_applicable", str(error)
    except CheckFailed as error:
        status, reason, figures = "failed", str(error), error.figures
    except Exception as error:  # a check that crashes is a failed check; the others still run
        status, reason = "failed", f"{type(error).__name__}: {error}"
        figures = {"traceback": traceback.format_exc(limit=-4)}
    finally:
        reset_peak(setup.device)
    return {"name": name, "description": description, "status": status, "reason": reason, "figures": figures,
            "seconds": round(time.perf_counter() - start, 2)}


def environment(device: torch.device | None) -> dict:
    info = {**machine(), "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if device is not None and device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1))
    return info


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU check: {report['device']}{' (' + env['gpu'] + ')' if 'gpu' in env else ''}, "
             f"{'tiny' if report['tiny'] else 'full'} sizes", "",
             f"{report['started']}, {report['seconds']:.0f} s; {env['cpu']}, {env['logical_cpus']} CPUs, torch "
             f"{env['torch']}, CUDA {env['cuda'] or '(torch built without it)'}", "",
             f"{report['counts']['passed']} passed, {report['counts']['failed']} failed, "
             f"{report['counts']['not_applicable']} not applicable", "",
             "| check | status | result | s |", "|---|---|---|---|"]
    for check in report["checks"]:
        result = check["reason"] if check["status"] != "passed" else check["figures"].get("summary", "")
        lines.append(f"| {check['name']} | {check['status']} | {str(result).replace('|', '/')} | "
                     f"{check['seconds']:.1f} |")
    lines += ["", "Figures: gpu_check.json (every check's \"figures\")."]
    for check in report["checks"]:
        lines += ["", f"## {check['name']}: {check['status']}", "", check["description"] + "."]
        if check["reason"]:
            lines += ["", f"Reason: {check['reason']}"]
        shown = {k: v for k, v in check["figures"].items() if k not in ("summary", "traceback")}
        if shown:
            lines += ["", "```json", json.dumps(shown, indent=1, default=str)[:6000], "```"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny CLIP, tiny videos, small batches (< 1 minute "
                                                            "on a CPU)")
    parser.add_argument("--output", default="gpu_check", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--checks", nargs="+", choices=list(CHECKS), default=list(CHECKS), help="the checks to run")
    parser.add_argument("--ddp_worker", default=None, help=argparse.SUPPRESS)  # one rank of the ddp check
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the checks, write OUTPUT/gpu_check.json and .md; 1 when a check failed, else 0."""
    args = parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args.ddp_worker, args.device, args.tiny)
        return 0
    started, start = time.strftime("%Y-%m-%dT%H:%M:%S"), time.perf_counter()
    try:
        device, unavailable = resolve_device(args.device), None
    except ValueError as error:
        if not args.device.startswith("cuda"):
            print(f"error: {error}", file=sys.stderr)
            return 2
        device, unavailable = None, f"no CUDA device: {error}"
        print(f"every check is not applicable: {unavailable}", file=sys.stderr)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        checks = []
        for name in args.checks:
            if unavailable:
                checks.append({"name": name, "description": CHECKS[name][1], "status": "not_applicable",
                               "reason": unavailable, "figures": {}, "seconds": 0.0})
                continue
            folder = Path(scratch) / name
            folder.mkdir()
            checks.append(run_check(name, make_setup(device, args.tiny, folder)))
            print(f"{name}: {checks[-1]['status']}"
                  f"{' (' + checks[-1]['reason'] + ')' if checks[-1]['reason'] else ''}", flush=True)
    report = {"device": str(device) if device is not None else args.device, "tiny": args.tiny, "started": started,
              "seconds": round(time.perf_counter() - start, 1), "environment": environment(device),
              "counts": {s: sum(c["status"] == s for c in checks) for s in STATUSES}, "checks": checks}
    write_json(output / "gpu_check.json", report)
    summary = markdown(report)
    write_atomic(output / "gpu_check.md", lambda f: f.write(summary.encode()))
    print(f"wrote {output / 'gpu_check.json'} and {output / 'gpu_check.md'}: {report['counts']['passed']} passed, "
          f"{report['counts']['failed']} failed, {report['counts']['not_applicable']} not applicable "
          f"({report['seconds']:.0f} s)")
    return 1 if report["counts"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
