"""Kinetics-400 from its published CSV files (`label,youtube_id,time_start,time_end,split`): train.csv,
validate.csv (or val.csv), test.csv in --data_path, or the files --train_csv / --val_csv / --test_csv name.
A video file is named `<youtube_id>_<time_start:06d>_<time_end:06d>` (any video extension), anywhere under
--features_path (flat, or in one folder per class). The classes are the training CSV's labels, sorted (the
usual 0-399 order); without a training CSV, the evaluated CSV's."""

from __future__ import annotations

import os

from ..annotations import DataFileError, data_file, expect, read_csv
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


def _time(value: str, path: str, line: int, column: str) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise DataFileError(f"{path}: line {line}: {column} {value!r} is not a number of seconds") from None


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
        video_ids.append(f"{youtube_id}_{_time(start, path, line, 'time_start'):06d}_"
                         f"{_time(end, path, line, 'time_end'):06d}")
        labels.append(index[label])
    return LabelledVideos(video_ids, labels, names)
