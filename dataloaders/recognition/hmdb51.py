"""HMDB51 from its published split files (testTrainMulti_7030_splits/): one `<class>_test_split<N>.txt` per
class and split N = --split 1..3, lines `<video>.avi <id>` with id 1 = training, 2 = test, 0 = not used in
this split. Classes are the files' class names in alphabetical order; videos are `<class>/<video>.avi`."""

from __future__ import annotations

import glob
import os

from ..annotations import DataFileError, expect, numbered_lines
from .labelled_videos import LabelledVideos

SPLIT_ID = {"train": "1", "val": "2", "test": "2"}  # HMDB51 has no val split
SPLIT_NAMES = {"0": "not used", "1": "training", "2": "test"}  # the id of each list in a split file
SPLIT_IDS = tuple(SPLIT_NAMES)


def split_files(folder: str | None, split_number: int) -> dict[str, str]:
    """{class name: its split file} for split `split_number`, classes in alphabetical order."""
    suffix = f"_test_split{split_number}.txt"
    paths = sorted(glob.glob(os.path.join(glob.escape(folder or ""), f"*{suffix}")))
    if not paths:
        raise DataFileError(f"{folder}: no *{suffix} file (set --data_path to the folder of HMDB51's split files, "
                            "testTrainMulti_7030_splits)")
    return {os.path.basename(path)[: -len(suffix)]: path for path in paths}


def load_videos(args, split: str) -> LabelledVideos:
    files = split_files(args.data_path, args.split)
    video_ids, labels = [], []
    for label, (name, path) in enumerate(files.items()):
        first_line: dict[str, tuple[int, str]] = {}
        for line, text in numbered_lines(path):
            parts = text.split()
            expect(len(parts) == 2 and parts[1] in SPLIT_IDS, path, f"line {line}",
                   f"expected '<video>.avi <0|1|2>' (0 unused, 1 training, 2 test), got {text!r}")
            earlier, earlier_id = first_line.setdefault(parts[0], (line, parts[1]))
            expect(earlier == line, path, f"line {line}",
                   f"{parts[0]} is listed again (line {earlier} gives it {earlier_id} = {SPLIT_NAMES[earlier_id]}, "
                   f"this line {parts[1]} = {SPLIT_NAMES[parts[1]]}): a video belongs to one list; remove a line")
            if parts[1] == SPLIT_ID[split]:
                video_ids.append(f"{name}/{parts[0]}")
                labels.append(label)
    return LabelledVideos(video_ids, labels, list(files))
