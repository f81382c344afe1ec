"""DiDeMo, paragraph retrieval: the descriptions of all moments of a video joined into one text."""

from __future__ import annotations

import os

from .annotations import Annotations, check_caption, data_file, expect, read_json


def load_annotations(args, split: str) -> Annotations:
    """--data_path/{train,val,test}_data.json: a list of moments `{"video": id, "description": text or list
    of texts, ...}`; a video's moments are joined in file order."""
    path = data_file(os.path.join(args.data_path or "", f"{split}_data.json"), "--data_path (DiDeMo folder)")
    data = read_json(path)
    expect(isinstance(data, list) and bool(data), path, "top level",
           "expected a non-empty list of {'video', 'description'} entries")
    paragraphs: dict[str, list[str]] = {}
    for row, entry in enumerate(data):
        description = entry.get("description") if isinstance(entry, dict) else None
        if isinstance(description, str):
            description = [description]
        expect(isinstance(entry, dict) and isinstance(entry.get("video"), str) and isinstance(description, list)
               and all(isinstance(d, str) for d in description), path, f"entry {row}",
               "needs a string 'video' and a 'description' string or list of strings")
        paragraphs.setdefault(entry["video"], []).extend(d.strip() for d in description)
    return Annotations.from_pairs((video, check_caption(" ".join(texts), path, f"video {video}"))
                                  for video, texts in paragraphs.items())
