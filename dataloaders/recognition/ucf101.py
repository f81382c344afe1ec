"""UCF101 from its published split files (ucfTrainTestlist/): classInd.txt (`1 ApplyEyeMakeup`),
trainlistNN.txt (`ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`, 1-based class index) and testlistNN.txt (the
path only), NN = --split 01..03, lines ending in CRLF. A video's class is its folder; the trainlist's index must
agree with it."""

from __future__ import annotations

import os

from ..annotations import DataFileError, data_file, expect, numbered_lines
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


def listed_videos(list_file: str) -> dict[str, int]:
    """{video path: its line} of a trainlist or testlist (the first word of each line); a video listed twice
    is a DataFileError naming both lines (it would count twice in training or in the accuracy)."""
    lines: dict[str, int] = {}
    for line, text in numbered_lines(list_file):
        video = text.split()[0]
        expect(video not in lines, list_file, f"line {line}",
               f"{video} is listed again (first on line {lines.get(video)}): remove one of the lines")
        lines[video] = line
    return lines


def check_disjoint(list_file: str, other_file: str) -> None:
    """Each video of `list_file` listed once, and none also in `other_file` (the other list of the split,
    checked when present): a DataFileError names the video, the file(s) and the lines (a test video trained on
    makes the accuracy a training accuracy)."""
    ours = listed_videos(list_file)
    theirs = listed_videos(other_file) if os.path.isfile(other_file) else {}
    shared = [video for video in ours if video in theirs]
    if shared:
        raise DataFileError(f"{list_file}: line {ours[shared[0]]}: {shared[0]} is also in {other_file} (line "
                            f"{theirs[shared[0]]}): {len(shared)} video(s) are in both the training and the test "
                            f"list of this split; remove them from one")


def load_videos(args, split: str) -> LabelledVideos:
    class_file = data_file(os.path.join(args.data_path or "", "classInd.txt"), FOLDER_FLAG)
    names = read_class_list(class_file)
    index = class_index(names, class_file)
    # The release spells some folders differently in case only (HandstandPushups / v_HandStandPushups_...).
    by_lower = {name.lower(): position for name, position in index.items()}
    list_file = data_file(os.path.join(args.data_path, f"{LIST_PREFIX[split]}{args.split:02d}.txt"), FOLDER_FLAG)
    other = "testlist" if LIST_PREFIX[split] == "trainlist" else "trainlist"
    check_disjoint(list_file, os.path.join(args.data_path, f"{other}{args.split:02d}.txt"))
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
