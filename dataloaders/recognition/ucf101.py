"""UCF101 from its published split files (ucfTrainTestlist/): classInd.txt (`1 ApplyEyeMakeup`),
trainlistNN.txt (`ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`, 1-based class index) and testlistNN.txt (the
path only), NN = --split 01..03, lines ending in CRLF. A video's class is its folder; the trainlist's index must
agree with it."""

from __future__ import annotations

import os

from ..annotations import data_file, expect, numbered_lines
from .labelled_videos import LabelledVideos, class_index

LIST_PREFIX = {"train": "trainlist", "val": "testlist", "test": "testlist"}  # UCF101 has no val split
FOLDER_FLAG = "--data_path (the UCF101 split folder, ucfTrainTestlist)"


def read_class_list(path: str) -> list[str]:
    """The class names of classInd.txt in index order (line i must be `i Name`)."""
    names: list[str] = []
    for line, text in numbered_lines(path):
        parts = text.split()
        expect(len(parts) == 2 and parts[0] == str(len(names) + 1), path, f"line {line}",
               f"expected '{len(names) + 1} <ClassName>', got {text!r}")
        names.append(parts[1])
    expect(bool(names), path, "line 1", "no class listed")
    return names


def load_videos(args, split: str) -> LabelledVideos:
    class_file = data_file(os.path.join(args.data_path or "", "classInd.txt"), FOLDER_FLAG)
    names = read_class_list(class_file)
    index = class_index(names, class_file)
    # The release spells some folders differently in case only (HandstandPushups / v_HandStandPushups_...).
    by_lower = {name.lower(): position for name, position in index.items()}
    list_file = data_file(os.path.join(args.data_path, f"{LIST_PREFIX[split]}{args.split:02d}.txt"), FOLDER_FLAG)
    video_ids, labels = [], []
    for line, text in numbered_lines(list_file):
        parts = text.split()
        where = f"line {line}"
        expect(len(parts) in (1, 2) and "/" in parts[0], list_file, where,
               f"expected 'Class/v_Class_gXX_cYY.avi' (and a class index in a trainlist), got {text!r}")
        folder = parts[0].split("/")[0]
        label = index.get(folder, by_lower.get(folder.lower()))
        expect(label is not None, list_file, where, f"unknown class {folder!r}: not in {class_file}")
        if len(parts) == 2:
            expect(parts[1] == str(label + 1), list_file, where,
                   f"class index {parts[1]} but the folder {folder!r} is class {label + 1} in {class_file}")
        video_ids.append(parts[0])
        labels.append(label)
    return LabelledVideos(video_ids, labels, names)
