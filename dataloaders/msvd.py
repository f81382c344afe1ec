"""MSVD: id lists and a caption file {video_id: [captions]}; multi-caption evaluation."""

from __future__ import annotations

import os

from .annotations import (
    Annotations,
    DataFileError,
    multi_caption_annotations,
    read_caption_pickle,
    read_json,
    split_list_file,
)

CAPTION_FILES = ("raw-captions.json", "raw-captions.pkl")


def load_annotations(args, split: str) -> Annotations:
    """--data_path/{train,val,test}_list.txt with --data_path/raw-captions.json, or CLIP4Clip's
    raw-captions.pkl (captions as lists of words); one training item per caption."""
    list_path = split_list_file(args.data_path, split, "--data_path (MSVD folder)")
    paths = [os.path.join(args.data_path, name) for name in CAPTION_FILES]
    captions_path = next((path for path in paths if os.path.isfile(path)), None)
    if captions_path is None:
        raise DataFileError(f"no MSVD caption file: expected one of {paths} (set --data_path)")
    if captions_path.endswith(".json"):
        captions = read_json(captions_path)
    else:  # CLIP4Clip's release: a pickle, read without admitting any class (no code can run)
        captions = read_caption_pickle(captions_path)
    return multi_caption_annotations(list_path, captions, captions_path)
