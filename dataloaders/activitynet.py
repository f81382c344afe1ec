"""ActivityNet Captions, paragraph retrieval: every sentence of a video joined into one text."""

from __future__ import annotations

import os

from .annotations import Annotations, check_caption, data_file, expect, read_json

SPLIT_FILES = {"train": "train.json", "val": "val_1.json", "test": "val_1.json"}


def load_annotations(args, split: str) -> Annotations:
    """--data_path/train.json for training, val_1.json for val and test, each
    `{video_id: {"duration", "timestamps", "sentences"}}`."""
    path = data_file(os.path.join(args.data_path or "", SPLIT_FILES[split]), "--data_path (ActivityNet folder)")
    data = read_json(path)
    expect(isinstance(data, dict) and bool(data), path, "top level",
           "expected a non-empty object {video_id: {..., 'sentences'}}")
    pairs = []
    for video_id, entry in data.items():
        sentences = entry.get("sentences") if isinstance(entry, dict) else None
        expect(isinstance(sentences, list) and bool(sentences) and all(isinstance(s, str) for s in sentences),
               path, video_id, "needs a non-empty 'sentences' list of strings")
        pairs.append((video_id, check_caption(" ".join(s.strip() for s in sentences), path, video_id)))
    return Annotations.from_pairs(pairs)
