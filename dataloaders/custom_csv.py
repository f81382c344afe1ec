"""Your own videos: a CSV with a header `video_path,caption`, one row per (video, caption) pair."""

from __future__ import annotations

from .annotations import Annotations, data_file, read_csv

SPLIT_FLAGS = {"train": ("train_csv",), "val": ("val_csv",), "test": ("test_csv", "val_csv")}


def load_annotations(args, split: str) -> Annotations:
    """train: --train_csv, val: --val_csv, test: --test_csv else --val_csv. `video_path` is relative to
    --features_path (or absolute); rows sharing a video_path are captions of one video."""
    flags = SPLIT_FLAGS[split]
    path = next((getattr(args, flag) for flag in flags if getattr(args, flag)), None)
    table = read_csv(data_file(path, " or ".join(f"--{flag}" for flag in flags)), ["video_path", "caption"])
    return Annotations.from_pairs(zip(table["video_path"], table["caption"]))
