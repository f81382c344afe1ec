"""The recognition layout of the temporal benchmark's videos (`main.py --task recognition --datatype csv`,
docs/RECOGNITION.md): each video's class is what its counterfactual pair's claim says, so the two videos of a
test pair have different classes while a single frame of either is drawn from the same distribution.

    which_moves  the class is the moving object: "red_circle_moves" (12 classes, COLOURS x SHAPES), with
                 --class_template CLASS_TEMPLATE "the red circle moves". The two videos of a pair show the same
                 objects at the same places in frame 0; the red circle moves in one, the blue square in the other.
    direction    the class is the heading: "object_moves_right" (4 classes: right, left, down, up), "the object
                 moves right". A pair is a clip and its reversal (the same frames, in opposite orders).

write_recognition_layout(root, class_set) reads root/pairs.json and root/metadata.json (what
counterfactual.write_split wrote) and writes, for every split written there, root/recognition_<class_set>_<split>.csv
(`path,label`; path relative to root/videos; the two videos of a pair on consecutive lines, so main.py
--train_group_size 2 puts them in one batch) and root/recognition_<class_set>_classes.txt (--class_list).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .counterfactual import OBJECT_KINDS, SPLITS, PairVideo

CLASS_SETS = ("which_moves", "direction")
HEADINGS = ("right", "left", "down", "up")
CLASS_TEMPLATE = "the {name}"


def class_names(class_set: str) -> list[str]:
    """Every class of `class_set`, in --class_list order."""
    if class_set == "which_moves":
        return [f"{colour}_{shape}_moves" for colour, shape in OBJECT_KINDS]
    if class_set == "direction":
        return [f"object_moves_{heading}" for heading in HEADINGS]
    raise ValueError(f"unknown recognition class set {class_set!r}; expected one of {CLASS_SETS}")


def recognition_label(video: PairVideo) -> str:
    """The class of a which_moves or direction video, from its claim (task, object, value)."""
    task, name, value = video.claim
    if task == "which_moves":
        return f"{name.replace(' ', '_')}_moves"
    if task == "direction":
        return f"object_moves_{value}"
    raise ValueError(f"video {video.video_id}: task {task!r} has no recognition class set ({CLASS_SETS})")


def layout_paths(root: str | os.PathLike, class_set: str) -> dict[str, Path]:
    """{split: its CSV, "classes": the class list} of `class_set` under `root`."""
    root = Path(root)
    return {**{split: root / f"recognition_{class_set}_{split}.csv" for split in SPLITS},
            "classes": root / f"recognition_{class_set}_classes.txt"}


def write_recognition_layout(root: str | os.PathLike, class_set: str) -> dict[str, Path]:
    """Write `class_set`'s recognition CSVs of every split of `root` that holds pairs of that task, and its class
    list; returns the paths written ({split: CSV, "classes": list}). ValueError naming the folder when it has no
    such pairs."""
    names = class_names(class_set)
    root = Path(root)
    metadata = json.loads((root / "metadata.json").read_text())
    pairs = [p for p in json.loads((root / "pairs.json").read_text()) if p["task"] == class_set]
    if not pairs:
        raise ValueError(f"{root}/pairs.json has no {class_set} pairs: write them with python -m "
                         f"dataloaders.synthetic --task {class_set} --output_root {root}")
    paths, written = layout_paths(root, class_set), {}
    for split in dict.fromkeys(p["split"] for p in pairs):
        ids = [video_id for p in pairs if p["split"] == split for video_id in p["videos"]]
        labels = [recognition_label(PairVideo.from_metadata(video_id, metadata[video_id])) for video_id in ids]
        part = paths[split].with_suffix(".csv.part")
        pd.DataFrame({"path": [f"{video_id}.mp4" for video_id in ids], "label": labels}).to_csv(part, index=False)
        os.replace(part, paths[split])
        written[split] = paths[split]
    paths["classes"].write_text("".join(f"{name}\n" for name in names))
    written["classes"] = paths["classes"]
    return written
