"""Re-encode videos to the frame rate and size training reads: 3 fps, short side 224, aspect ratio kept.

    python -m preprocess.compress_video --input_root raw_videos --output_root videos_compressed

Walks --input_root recursively and writes `<stem>.mp4` (H.264, video stream only) flat into --output_root, or
mirrors the input folders with --mirror. Outputs that exist are skipped, so a run can be repeated after an
interruption (each output is written to a temporary name and renamed when complete). Landscape and portrait
videos alike get their SHORT side scaled to --size and the long side to the nearest even number that keeps
the aspect ratio (the released script squeezed portrait videos). Files ffmpeg fails on are listed on stderr and
in <output_root>/compress_failures.csv, and the exit status is 1.

The ffmpeg binary: --ffmpeg, else `ffmpeg` on PATH, else the one in the imageio-ffmpeg wheel.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from dataloaders.sources import list_video_files

FAILURES_FILE = "compress_failures.csv"


def find_ffmpeg(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def scale_filter(size: int) -> str:
    """ffmpeg filter scaling the short side to `size` and the other to the aspect-keeping even number (-2)."""
    return f"scale='if(gte(iw,ih),-2,{size})':'if(gte(iw,ih),{size},-2)':flags=bicubic"


def ffmpeg_command(ffmpeg: str, source: str, target: str, fps: float, size: int) -> list[str]:
    return [ffmpeg, "-nostdin", "-y", "-loglevel", "error", "-i", source, "-map", "0:v:0", "-an", "-sn", "-dn",
            "-vf", f"fps={fps},{scale_filter(size)}", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-threads", "1",
            "-f", "mp4", target]


def plan(input_root: str, output_root: str, mirror: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(source, target) pairs for every video under input_root, and (source, reason) for inputs that cannot be
    given an output of their own (two inputs with the same stem in flat mode)."""
    jobs, clashes, taken = [], [], {}
    for source in list_video_files(input_root):
        stem = os.path.splitext(os.path.basename(source))[0]
        relative = os.path.relpath(os.path.dirname(source), input_root) if mirror else ""
        target = os.path.normpath(os.path.join(output_root, relative, stem + ".mp4"))
        if target in taken:
            clashes.append((source, f"same output {target} as {taken[target]}"))
        else:
            taken[target] = source
            jobs.append((source, target))
    return jobs, clashes


def compress(ffmpeg: str, source: str, target: str, fps: float, size: int) -> str | None:
    """Encode one video; returns None on success (or if the output exists), else ffmpeg's error message."""
    if os.path.exists(target):
        return None
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    partial = target + ".part"
    result = subprocess.run(ffmpeg_command(ffmpeg, source, partial, fps, size), capture_output=True, text=True)
    if result.returncode != 0 or not os.path.exists(partial) or os.path.getsize(partial) == 0:
        if os.path.exists(partial):
            os.remove(partial)
        message = result.stderr.strip().splitlines()
        return message[-1] if message else f"ffmpeg exited with status {result.returncode} and no output"
    os.replace(partial, target)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_root", required=True, help="folder of raw videos (searched recursively)")
    parser.add_argument("--output_root", required=True, help="folder for the compressed videos")
    parser.add_argument("--fps", type=float, default=3, help="output frame rate")
    parser.add_argument("--size", type=int, default=224, help="output short side in pixels")
    parser.add_argument("--mirror", action="store_true", help="mirror the input folders instead of a flat output")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1,
                        help="ffmpeg processes run at once (each single-threaded)")
    parser.add_argument("--ffmpeg", default=None, help="ffmpeg binary (default: PATH, then imageio-ffmpeg's)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.input_root):
        print(f"error: {args.input_root} is not a folder", file=sys.stderr)
        return 2
    ffmpeg = find_ffmpeg(args.ffmpeg)
    jobs, failures = plan(args.input_root, args.output_root, args.mirror)
    todo = [(source, target) for source, target in jobs if not os.path.exists(target)]
    print(f"{len(jobs)} videos, {len(jobs) - len(todo)} already compressed, {len(todo)} to do (ffmpeg: {ffmpeg})")
    os.makedirs(args.output_root, exist_ok=True)
    # Threads are enough to keep one ffmpeg process per worker busy: the work happens in the subprocesses.
    with ThreadPoolExecutor(max_workers=max(1, args.num_workers)) as pool:
        errors = pool.map(lambda job: compress(ffmpeg, *job, args.fps, args.size), todo)
        for (source, _), error in tqdm(zip(todo, errors), total=len(todo), desc="compressing"):
            if error is not None:
                failures.append((source, error))
    failures_path = os.path.join(args.output_root, FAILURES_FILE)
    if failures:
        with open(failures_path, "w", newline="") as file:
            csv.writer(file).writerows([("video", "error"), *failures])
        print(f"{len(failures)} video(s) failed (listed in {failures_path}):", file=sys.stderr)
        for source, error in failures:
            print(f"  {source}: {error}", file=sys.stderr)
        return 1
    if os.path.exists(failures_path):
        os.remove(failures_path)
    print(f"done: {len(jobs)} videos in {args.output_root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
