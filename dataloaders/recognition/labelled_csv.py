"""Your own labelled videos: CSV files with a header `path,label` (a video path relative to --features_path, or
absolute, and its class name) for --train_csv, --val_csv and --test_csv (else --val_csv). The classes are those
of --class_list (one name a line, in its order), else the training CSV's labels, sorted; without either, the
evaluated CSV's."""

from __future__ import annotations

from ..annotations import data_file, expect, numbered_lines, read_csv
from .labelled_videos import LabelledVideos, class_index

SPLIT_FLAGS = {"train": ("train_csv",), "val": ("val_csv",), "test": ("test_csv", "val_csv")}
COLUMNS = ["path", "label"]


def _split_csv(args, split: str) -> str:
    flags = SPLIT_FLAGS[split]
    path = next((getattr(args, flag) for flag in flags if getattr(args, flag)), None)
    return data_file(path, " or ".join(f"--{flag}" for flag in flags))


def load_videos(args, split: str) -> LabelledVideos:
    path = _split_csv(args, split)
    table = read_csv(path, COLUMNS)
    if args.class_list:
        names_from = data_file(args.class_list, "--class_list")
        names = [text for _, text in numbered_lines(names_from)]
    else:
        names_from = _split_csv(args, "train") if args.train_csv else path
        reference = table if names_from == path else read_csv(names_from, COLUMNS)
        names = sorted(set(reference["label"]))
    index = class_index(names, names_from)
    for row, label in enumerate(table["label"]):
        expect(label in index, path, f"line {row + 2}", f"unknown class {label!r}: not among the {len(names)} "
               f"classes of {names_from}")
    return LabelledVideos(list(table["path"]), [index[label] for label in table["label"]], names)
