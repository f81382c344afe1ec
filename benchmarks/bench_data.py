"""Data-loading throughput: videos/s for 12-frame MSR-VTT-style training clips with 0, 1, 2, ... workers, per
video decoder (--video_backend), and how each decoder's frames differ from PyAV's.

    python benchmarks/bench_data.py --num_videos 64 --workers 0 1 2 --output bench_data.json
    python benchmarks/bench_data.py --backends pyav opencv --workers 0 1 --output bench_data_backends.json

Generates MSR-VTT-style videos as `preprocess/compress_video.py` leaves them (short side 224, 398x224, 3 fps,
10 s = 30 frames, H.264) with textured, panning content so they compress like real footage, writes the MSR-VTT
annotation files, and times a DataLoader over the training split (random segment sampling, 224x224 crops,
CLIP normalisation, tokenised captions) for each decoder and worker count, the decoders interleaved per epoch.
Reported: videos/s after the first batch (steady state) and including it (with worker start-up); per decoder
other than PyAV, the frames it returns for every video's evaluation sample against PyAV's (same shape, mean and
largest absolute difference in uint8 levels).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from benchmarks.report import finish
from dataloaders import add_data_args, build_dataset
from dataloaders.synthetic import render_frame, write_video
from dataloaders.video_backends import READERS, VIDEO_BACKENDS, check_backend
from dataloaders.video_reader import read_frames
from models import add_model_args


def textured_frames(rng: np.random.Generator, num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 [T, H, W, 3]: a smooth random texture panning across the frame, with a shape moving over it and
    a little sensor-like noise."""
    pan = 12  # pixels per frame
    coarse = rng.integers(0, 256, (height // 8 + 2, (width + pan * num_frames) // 8 + 2, 3), dtype=np.uint8)
    texture = np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8)).astype(np.float32)
    kernel = np.ones(9, dtype=np.float32) / 9
    for axis in (0, 1):
        texture = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="same"), axis, texture)
    frames = []
    for t in range(num_frames):
        frame = texture[:height, pan * t:pan * t + width] + rng.normal(0, 4, (height, width, 3))
        frame = frame.clip(0, 255).astype(np.uint8)
        shape = render_frame("red", "circle", (20 + t * (width - 40) / num_frames, height / 2), 20, (height, width))
        mask = shape.any(axis=-1, keepdims=True)
        frames.append(np.where(mask, shape, frame))
    return np.stack(frames)


def write_msrvtt_videos(root: str, num_videos: int, num_frames: int, height: int, width: int, fps: int) -> None:
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    rng = np.random.default_rng(0)
    ids = [f"video{i}" for i in range(num_videos)]
    for video_id in ids:
        write_video(os.path.join(root, "videos", f"{video_id}.mp4"), textured_frames(rng, num_frames, height, width),
                    fps)
    pd.DataFrame({"video_id": ids}).to_csv(os.path.join(root, "MSRVTT_train.9k.csv"), index=False)
    sentences = [{"video_id": v, "caption": f"a red circle moves from left to right in clip {i}", "sen_id": i}
                 for i, v in enumerate(ids)]
    with open(os.path.join(root, "MSRVTT_data.json"), "w") as file:
        json.dump({"videos": [{"video_id": v} for v in ids], "sentences": sentences}, file)


def time_loader(dataset, num_workers: int, batch_size: int, epochs: int) -> dict:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         persistent_workers=num_workers > 0)
    start = time.perf_counter()
    first_batch_end, videos, steady_videos = None, 0, 0
    for _ in range(epochs):
        for batch in loader:
            videos += len(batch["video"])
            if first_batch_end is None:
                first_batch_end = time.perf_counter()
            else:
                steady_videos += len(batch["video"])
    end = time.perf_counter()
    return {"workers": num_workers, "videos": videos, "seconds": round(end - start, 3),
            "videos_per_s": round(videos / (end - start), 2),
            "steady_videos_per_s": round(steady_videos / (end - first_batch_end), 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_videos", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backends", nargs="+", choices=VIDEO_BACKENDS, default=["pyav"],
                        help="the --video_backend decoders to time (each must load here)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max_frames", type=int, default=12)
    parser.add_argument("--torch_threads", type=int, default=None,
                        help="torch intra-op threads of the main process (workers always use 1)")
    parser.add_argument("--video_root", default=None, help="where to write the videos (default: a temp folder)")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.video_root or scratch
        if not os.path.exists(os.path.join(root, "MSRVTT_data.json")):
            write_msrvtt_videos(root, args.num_videos, num_frames=30, height=224, width=398, fps=3)
        datasets = {}
        for backend in args.backends:
            data_args = add_data_args(add_model_args(argparse.ArgumentParser())).parse_args([
                "--data_path", os.path.join(root, "MSRVTT_data.json"), "--features_path", os.path.join(root, "videos"),
                "--train_csv", os.path.join(root, "MSRVTT_train.9k.csv"), "--max_frames", str(args.max_frames),
                "--video_backend", check_backend(backend)])
            datasets[backend] = build_dataset(data_args, "train", 224)
        files = sorted(os.path.join(root, "videos", f) for f in os.listdir(os.path.join(root, "videos")))
        mean_kb = np.mean([os.path.getsize(f) for f in files]) / 1024
        rows = []
        for workers in args.workers:
            for epoch in range(args.epochs):  # the decoders alternate, so that each meets the same load
                for backend, dataset in datasets.items():
                    row = time_loader(dataset, workers, args.batch_size, 1)
                    rows.append({"backend": backend, "epoch": epoch, **row})
        rows = [{"backend": backend, "workers": workers, **{key: float(np.median([
            r[key] for r in rows if (r["backend"], r["workers"]) == (backend, workers)])) for key in (
            "steady_videos_per_s", "videos_per_s")}} for workers in args.workers for backend in datasets]
        differences = {backend: frame_differences(files, backend, args.max_frames) for backend in datasets
                       if backend != "pyav"}
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                         f"torch {torch.__version__}, torch threads {torch.get_num_threads()}",
              "videos": f"{args.num_videos} x 398x224, 3 fps, 30 frames, H.264, mean {mean_kb:.0f} KiB",
              "max_frames": args.max_frames, "batch_size": args.batch_size, "epochs": args.epochs, "rows": rows,
              "differences_to_pyav": differences, "load_average": list(os.getloadavg())}
    print(json.dumps(result, indent=1))
    table = ["| decoder | workers | videos/s (steady, median of epochs) | videos/s (incl. start-up) |",
             "|---|---|---|---|"] + [f"| {row['backend']} | {row['workers']} | {row['steady_videos_per_s']} | "
                                     f"{row['videos_per_s']} |" for row in rows]
    table += ["", "| decoder | videos | same shape | mean abs. difference to PyAV | largest |", "|---|---|---|---|---|"]
    table += [f"| {backend} | {d['videos']} | {d['same_shape']} | {d['mean_abs_difference']:.4f} | "
              f"{d['max_abs_difference']} |" for backend, d in differences.items()]
    return finish(result, table, args.output)


def frame_differences(files: list[str], backend: str, max_frames: int) -> dict:
    """`backend`'s evaluation-sample frames of every file against PyAV's: uint8 levels."""
    same, total, largest, pixels = True, 0.0, 0, 0
    for path in files:
        reference, frames = read_frames(path, max_frames), READERS[backend](path, max_frames)
        same = same and frames.shape == reference.shape
        if frames.shape == reference.shape:
            difference = np.abs(frames.astype(np.int16) - reference.astype(np.int16))
            total, largest, pixels = total + float(difference.sum()), max(largest, int(difference.max())), \
                pixels + difference.size
    return {"videos": len(files), "same_shape": same, "mean_abs_difference": total / max(pixels, 1),
            "max_abs_difference": largest}


if __name__ == "__main__":
    raise SystemExit(main())
