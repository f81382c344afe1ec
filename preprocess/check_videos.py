"""Find the videos that training would skip: missing, empty, undecodable or too short. Writes a CSV report.

    python -m preprocess.check_videos --folder videos_compressed --output report.csv
    python -m preprocess.check_videos --datatype msrvtt --split test --val_csv ... --features_path ... \\
        --output report.csv

With --folder every video file under the folder is decoded; with --datatype/--split (and the usual data flags)
every video the split's annotations name is looked up in --features_path or --lmdb_dataset and decoded.
The report has one row per problem (every video with --all): video, path, status (ok, missing, empty,
unreadable, truncated, too_short), frames (that decode), stated_frames (the count the container states, from
its header or duration x frame rate; 0 if it states none), detail. A video is truncated when decoding stops with
an error before the stated count, or ends far short of it (dataloaders.video_reader.truncation_reason): the
training reader skips the same videos (as bad videos) when it meets the error. The exit status is 1 when there
is a problem, 2 when the check cannot run (bad data flags, an --output that exists without --overwrite or is a
checked video or annotation file).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from dataloaders import DataFileError, add_data_args, load_annotations, video_source
from dataloaders.sources import FolderSource, list_video_files
from dataloaders.video_reader import VideoReadError, inspect_video
from models import ModelConfig
from utils.atomic_file import write_atomic
from utils.output_file import OutputFileError, check_output_file

COLUMNS = ("video", "path", "status", "frames", "stated_frames", "detail")
_source = None  # the video source of a worker process


def _init_worker(source) -> None:
    global _source
    _source = source


def check_one(job: tuple[str, str | None, int]) -> dict:
    """The report row of one video: (video id, key in the source or None, minimum frame count)."""
    video_id, key, min_frames = job
    row = {"video": video_id, "path": "", "status": "ok", "frames": 0, "stated_frames": 0, "detail": ""}
    if key is None:
        return {**row, "status": "missing", "detail": f"not found in {_source.location}"}
    row["path"] = _source.describe(key)
    try:
        info = inspect_video(_source.read(key))
    except VideoReadError as error:
        return {**row, "status": error.kind, "detail": error.reason}
    row["frames"], row["stated_frames"] = info.decoded, info.stated
    if row["frames"] == 0:
        return {**row, "status": "unreadable", "detail": "no frame could be decoded"
                + (f" ({info.error})" if info.error else "")}
    if info.truncated is not None:
        return {**row, "status": "truncated", "detail": info.truncated}
    if info.error is not None:  # every stated frame decoded; junk after them
        row["detail"] = f"decoding error after the last stated frame ({info.error})"
    if row["frames"] < min_frames:
        return {**row, "status": "too_short", "detail": f"{row['frames']} frames < --min_frames {min_frames}"}
    return row


def check(jobs: list[tuple[str, str | None, int]], source, num_workers: int) -> list[dict]:
    if num_workers <= 1:
        _init_worker(source)
        return [check_one(job) for job in tqdm(jobs, desc="checking videos")]
    with ProcessPoolExecutor(num_workers, initializer=_init_worker, initargs=(source,)) as pool:
        return list(tqdm(pool.map(check_one, jobs, chunksize=16), total=len(jobs), desc="checking videos"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default=None, help="check every video file under this folder")
    parser.add_argument("--split", default=None, choices=("train", "val", "test"),
                        help="check the videos of this split of --datatype instead")
    parser.add_argument("--min_frames", type=int, default=None,
                        help="videos with fewer decodable frames are too_short (default: --max_frames)")
    parser.add_argument("--output", default="video_report.csv", help="CSV report to write (never a checked video)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--all", action="store_true", help="report every video, not only the problems")
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max_frames", type=int, default=ModelConfig().max_frames,
                        help="frames per clip of the model (the default of --min_frames)")
    add_data_args(parser)
    args = parser.parse_args(argv)
    if (args.folder is None) == (args.split is None):
        parser.error("give either --folder or --split (with --datatype and its data flags)")
    min_frames = args.max_frames if args.min_frames is None else args.min_frames
    try:
        if args.folder:
            source = FolderSource(args.folder)
            names = [os.path.relpath(path, args.folder) for path in list_video_files(args.folder)]
            jobs = [(name, source.locate(name), min_frames) for name in names]
        else:
            source = video_source(args)
            ids = load_annotations(args, args.split).video_ids
            jobs = [(video_id, source.locate(video_id), min_frames) for video_id in ids]
        inputs = [(key, "a video it checks") for _, key, _ in jobs if isinstance(source, FolderSource)] + [
            (getattr(args, flag), f"the --{flag} input")
            for flag in ("train_csv", "val_csv", "test_csv", "data_path", "lmdb_dataset")]
        check_output_file(args.output, "--output", inputs, args.overwrite)
    except (DataFileError, OutputFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = check(jobs, source, args.num_workers)
    report = io.StringIO()
    writer = csv.DictWriter(report, COLUMNS)
    writer.writeheader()
    writer.writerows(row for row in rows if args.all or row["status"] != "ok")
    write_atomic(args.output, lambda file: file.write(report.getvalue().encode()))
    counts = Counter(row["status"] for row in rows)
    print(f"{len(rows)} videos: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
          + f"; report in {args.output}")
    return 0 if counts["ok"] == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
