"""VATEX: id lists and `ref_captions.json` {video_id: [captions]}; multi-caption evaluation."""

from __future__ import annotations

import os

from .annotations import Annotations, data_file, multi_caption_annotations, read_json, split_list_file


def load_annotations(args, split: str) -> Annotations:
    """--data_path/{train,val,test}_list.txt (val falls back to test) with --data_path/ref_captions.json;
    one training item per caption."""
    list_path = split_list_file(args.data_path, split, "--data_path (VATEX folder)")
    captions_path = data_file(os.path.join(args.data_path, "ref_captions.json"), "--data_path (VATEX folder)")
    return multi_caption_annotations(list_path, read_json(captions_path), captions_path)
