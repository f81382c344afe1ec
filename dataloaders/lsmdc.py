"""LSMDC: tab-separated `clip_id start end start end sentence` files, one caption per clip."""

from __future__ import annotations

import os

from .annotations import Annotations, data_file, expect, numbered_lines

SPLIT_FILES = {"train": "LSMDC16_annos_training.csv", "val": "LSMDC16_annos_val.csv",
               "test": "LSMDC16_challenge_1000_publictect.csv"}


def load_annotations(args, split: str) -> Annotations:
    """--data_path/<the split's LSMDC16 file>; the clip id names the video file (found anywhere under
    --features_path, e.g. in per-movie folders)."""
    path = data_file(os.path.join(args.data_path or "", SPLIT_FILES[split]), "--data_path (LSMDC folder)")
    pairs = []
    for line_number, line in numbered_lines(path):
        fields = line.split("\t")
        expect(len(fields) == 6 and bool(fields[0].strip()) and bool(fields[5].strip()), path,
               f"line {line_number}", f"expected 6 tab-separated fields (clip_id, 4 times, sentence), "
               f"got {len(fields)}")
        pairs.append((fields[0].strip(), fields[5].strip()))
    return Annotations.from_pairs(pairs)
