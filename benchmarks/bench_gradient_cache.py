"""Peak memory and time of one training step (forward, loss, backward) with and without gradient caching.

    python benchmarks/bench_gradient_cache.py --model stop --batch 4 --frames 4 --micro 0 2 1 \
        --output benchmarks/results/bench_gradient_cache_cpu.json

Each case runs in a fresh process (a peak resident set size is per process): a model of random weights on a CLIP
of the given shapes (default ViT-B/32), the Trainer's ContrastiveStep, B random (caption, video) pairs, one
untimed step, then one timed step; `--micro 0` is the unsplit step, `--micro m` gradient caching in micro-batches
of m (utils/engine/training/gradient_cache.py). Reported: seconds per step; the peak above the process's memory just
before the first step (CPU: resident set size, which glibc's reuse of freed memory blurs; CUDA:
max_memory_allocated); the activation memory, the bytes of the tensors autograd saves for the backward of the
largest graph alive at once (the whole batch's, or one micro-batch's; parameters not counted), exact on any
device; and the gradient norm, which agrees across cases for a model without dropout (DGL; STOP's micro-batches
draw their own dropout masks).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from benchmarks.bench_conv import load_average, machine
from benchmarks.bench_model import CLIP_SIZES, random_inputs
from benchmarks.report import finish
from models import ModelConfig, create_model
from models.clip import CLIP
from utils.engine.retrieval.step import ContrastiveStep
from utils.engine.runtime.precision import PRECISIONS, resolve_precision
from utils.engine.training.gradient_cache import gradient_cached_backward

MODELS = {"stop": {}, "dgl": {"temporal_prompt": "none"}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", choices=sorted(CLIP_SIZES), default="vit_b_32", help="CLIP shapes (random weights)")
    parser.add_argument("--model", choices=sorted(MODELS), default="stop")
    parser.add_argument("--batch", type=int, default=4, help="pairs per step")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--micro", type=int, nargs="+", default=[0, 2, 1], help="micro-batch sizes (0: unsplit)")
    parser.add_argument("--checkpoint_activations", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", type=int, default=None, help=argparse.SUPPRESS)  # run one case, print JSON
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    for m in args.micro:
        if m < 0 or (m and args.batch % m):
            parser.error(f"--micro {m} must be 0 or divide --batch {args.batch}")
    return args


def resident_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(args: argparse.Namespace, micro: int) -> dict:
    """One process, one case: the step twice (warm-up, timed); memory above the state before the first step."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = CLIP_SIZES[args.clip]()
    options = ModelConfig(max_frames=args.frames, checkpoint_activations=args.checkpoint_activations,
                          **MODELS[args.model])
    model = create_model(options, CLIP(config)).to(device).train()
    step = ContrastiveStep(model, resolve_precision(args.precision, device))
    inputs = random_inputs(config, args.batch, args.frames, 32, device)
    batch = (inputs["ids"], inputs["video"], inputs["video_mask"])
    before = resident_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved, graph_bytes = {}, []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    def backward(loss: torch.Tensor) -> None:
        graph_bytes.append(sum(saved.values()))
        saved.clear()
        loss.backward()

    seconds = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            if micro:
                gradient_cached_backward(step.features, step.loss, step, *batch, micro, 1.0, backward)
            else:
                backward(step(*batch))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return {"micro_batch_size": micro, "seconds": seconds[-1], "memory_before_bytes": before,
            "peak_above_before_bytes": peak - before, "activation_bytes": max(graph_bytes),
            "grad_norm": float(torch.nn.utils.get_total_norm(grads))}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.case is not None:
        print(json.dumps(run_case(args, args.case)))
        return 0
    result = {"config": vars(args), "machine": machine(), "load_average_before": load_average(), "cases": []}
    for micro in args.micro:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--case", str(micro)], check=True,
                             capture_output=True, text=True).stdout
        result["cases"].append(json.loads(out.strip().splitlines()[-1]))
    result["load_average_after"] = load_average()
    unsplit = next((c for c in result["cases"] if c["micro_batch_size"] == 0), result["cases"][0])
    table = [f"{args.model}, {args.clip}, B = {args.batch}, T = {args.frames}, {args.device} {args.precision}, "
             f"{args.threads} threads, load {result['load_average_before']} -> {result['load_average_after']}",
             "", "| micro-batch | s / step | peak above start, MiB | x unsplit | activations, MiB | x unsplit | "
                 "grad norm |", "|---|---|---|---|---|---|---|"]
    for case in result["cases"]:
        table.append(f"| {case['micro_batch_size'] or 'unsplit'} | {case['seconds']:.2f} | "
                     f"{case['peak_above_before_bytes'] / 2 ** 20:.0f} | "
                     f"{case['peak_above_before_bytes'] / unsplit['peak_above_before_bytes']:.2f} | "
                     f"{case['activation_bytes'] / 2 ** 20:.0f} | "
                     f"{case['activation_bytes'] / unsplit['activation_bytes']:.2f} | "
                     f"{case['grad_norm']:.6g} |")
    return finish(result, table, args.output)


if __name__ == "__main__":
    sys.exit(main())
