"""Kinetics-400 from its published CSV files (`label,youtube_id,time_start,time_end,split`): train.csv,
validate.csv (or val.csv), test.csv in --data_path, or the files --train_csv / --val_csv / --test_csv name.
A video file is named `<youtube_id>_<time_start:06d>_<time_end:06d>` (any video extension), anywhere under
--features_path (flat, or in one folder per class). The classes are the training CSV's labels, sorted (the
usual 0-399 order); without a training CSV, the evaluated CSV's."""

from __future__ import annotations

import math
import os

from ..annotations import data_file, expect, read_csv
from .labelled_videos import LabelledVideos, class_index

COLUMNS = ["label", "youtube_id", "time_start", "time_end"]
DEFAULT_FILES = {"train": ("train.csv",), "val": ("validate.csv", "val.csv"),
                 "test": ("test.csv", "validate.csv", "val.csv")}
SPLIT_FLAGS = {"train": ("train_csv",), "val": ("val_csv",), "test": ("test_csv", "val_csv")}


def csv_path(args, split: str) -> str | None:
    """The CSV of `split`: the first of its flags that is set, else the first default file in --data_path."""
    given = next((getattr(args, flag) for flag in SPLIT_FLAGS[split] if getattr(args, flag)), None)
    if given:
        return given
    candidates = [os.path.join(args.data_path or "", name) for name in DEFAULT_FILES[split]]
    return next((path for path in candidates if os.path.isfile(path)), None)


def _times(start: str, end: str, path: str, line: int) -> tuple[int, int]:
    """(time_start, time_end) of a CSV row in whole seconds, as the video file names spell them; a value that
    is not a finite number of seconds >= 0, or a start not before its end, is a DataFileError naming the file,
    the line and the column."""
    seconds = {}
    for column, value in (("time_start", start), ("time_end", end)):
        try:
            seconds[column] = float(value)
        except ValueError:
            seconds[column] = math.nan
        expect(math.isfinite(seconds[column]) and seconds[column] >= 0, path, f"line {line}, column {column}",
               f"{value!r} is not a finite number of seconds >= 0")
    expect(seconds["time_start"] < seconds["time_end"], path, f"line {line}, columns time_start, time_end",
           f"the clip starts at {start!r}, not before its end {end!r}")
    return int(seconds["time_start"]), int(seconds["time_end"])


def load_videos(args, split: str) -> LabelledVideos:
    flags = " or ".join(f"--{flag}" for flag in SPLIT_FLAGS[split])
    path = data_file(csv_path(args, split), f"{flags}, or --data_path (the Kinetics-400 CSV folder)")
    table = read_csv(path, COLUMNS)
    names_from = csv_path(args, "train") or path
    reference = table if names_from == path else read_csv(data_file(names_from, "--train_csv"), COLUMNS)
    names = sorted(set(reference["label"]))
    index = class_index(names, names_from)
    video_ids, labels = [], []
    for row, (label, youtube_id, start, end) in enumerate(table[COLUMNS].itertuples(index=False)):
        line = row + 2  # the header is line 1
        expect(label in index, path, f"line {line}", f"unknown class {label!r}: not among the {len(names)} "
               f"classes of {names_from}")
        first, last = _times(start, end, path, line)
        video_ids.append(f"{youtube_id}_{first:06d}_{last:06d}")
        labels.append(index[label])
    return LabelledVideos(video_ids, labels, names)
