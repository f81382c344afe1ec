"""`infer.py index` throughput, videos/s, in 1 process and sharded over torchrun processes.

    python benchmarks/bench_index.py --num_videos 16 --clip vit_b_32 --processes 1 2 \
        --output benchmarks/results/bench_index.json

Videos: MSR-VTT-like 398x224, 3 fps, 30 frames, H.264 (benchmarks/bench_data.py); 12 frames a video. Model: the
frozen CLIP with meanP (`--prompt none`) on random weights of the chosen size (the cost does not depend on the
weights; STOP's prompts add a little to it). N processes share the machine's cores (torch threads = cores / N);
each index is a fresh store. Reported: videos/s over the encoding loop (decoding included, model loading not:
the summary's `seconds`) and over the whole command.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

from benchmarks.bench_data import write_msrvtt_videos
from benchmarks.report import finish
from models.clip import CLIP, CLIPConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def index_once(processes: int, argv: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    run = [__file__, "--index_argv", json.dumps(argv)]
    command = ([sys.executable, *run] if processes == 1 else
               [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node", str(processes),
                "--master_port", "29531", *run])
    start = time.time()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    wall = time.time() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return {"processes": processes, "threads_each": threads, "videos": summary["encoded"],
            "encode_s": summary["seconds"], "wall_s": round(wall, 1),
            "videos_per_s": round(summary["encoded"] / summary["seconds"], 2),
            "videos_per_s_wall": round(summary["encoded"] / wall, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_videos", type=int, default=16)
    parser.add_argument("--clip", choices=("vit_b_32", "tiny"), default="vit_b_32")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--output", default=None, help="JSON file for the results")
    parser.add_argument("--index_argv", default=None, help=argparse.SUPPRESS)  # one infer.py index (a torchrun worker)
    args = parser.parse_args(argv)
    if args.index_argv:
        import infer
        summary = infer.main(json.loads(args.index_argv))
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(summary))
        return 0
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        write_msrvtt_videos(scratch, args.num_videos, num_frames=30, height=224, width=398, fps=3)
        clip = os.path.join(scratch, "clip.pt")
        torch.manual_seed(0)
        torch.save(CLIP(getattr(CLIPConfig, args.clip)()).state_dict(), clip)
        rows = []
        for processes in args.processes:
            index_argv = ["index", "--prompt", "none", "--pretrained_clip_name", clip, "--max_frames", "12",
                          "--videos", os.path.join(scratch, "videos"), "--output",
                          os.path.join(scratch, f"store{processes}"), "--num_workers", "0", "--batch_size",
                          str(args.batch_size), "--device", "cpu"]
            rows.append(index_once(processes, index_argv, max(1, cores // processes)))
            print(json.dumps(rows[-1]), flush=True)
    result = {"machine": f"{platform.processor() or platform.machine()}, {cores} CPUs (shared with other jobs), "
                         f"torch {torch.__version__}", "clip": args.clip, "max_frames": 12,
              "videos": f"{args.num_videos} x 398x224, 3 fps, 30 frames, H.264", "rows": rows}
    return finish(result, ["| CLIP | processes x threads | videos/s (encoding) | videos/s (whole command) |",
                           "|---|---|---|---|"] + [
        f"| {args.clip} | {r['processes']} x {r['threads_each']} | {r['videos_per_s']} | {r['videos_per_s_wall']} |"
        for r in rows], args.output)

if __name__ == "__main__":
    raise SystemExit(main())
