"""Something-Something v2 from its published files in --data_path: labels.json ({template: "index"}) and
something-something-v2-train.json / -validation.json (lists of {"id", "label", "template", "placeholders"},
the template with "[something]" placeholders). A class is a template; its text is the template without the
brackets ("Pushing something from left to right"), as labels.json spells it. Videos are `<id>.webm`. The test
split is the validation set (the test labels are not published)."""

from __future__ import annotations

import os

from ..annotations import DataFileError, data_file, expect, read_json
from .labelled_videos import LabelledVideos

LIST_FILES = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json",
              "test": "something-something-v2-validation.json"}
FOLDER_FLAG = "--data_path (the Something-Something v2 label folder)"


def read_classes(path: str) -> list[str]:
    """labels.json's templates in index order; its indices must be 0 .. C-1, each once."""
    labels = read_json(path)
    expect(isinstance(labels, dict) and bool(labels), path, "top level", 'expected {"<template>": "<index>", ...}')
    by_index: dict[int, str] = {}
    for template, value in labels.items():
        expect(str(value).isdigit() and int(value) not in by_index, path, repr(template),
               f"index {value!r} is not a new non-negative integer")
        by_index[int(value)] = template
    expect(sorted(by_index) == list(range(len(by_index))), path, "indices",
           f"expected 0 .. {len(by_index) - 1}, some are missing")
    return [by_index[i] for i in range(len(by_index))]


def load_videos(args, split: str) -> LabelledVideos:
    classes_file = data_file(os.path.join(args.data_path or "", "labels.json"), FOLDER_FLAG)
    names = read_classes(classes_file)
    index = {name: position for position, name in enumerate(names)}
    list_file = data_file(os.path.join(args.data_path, LIST_FILES[split]), FOLDER_FLAG)
    entries = read_json(list_file)
    if not isinstance(entries, list) or not entries:
        raise DataFileError(f"{list_file}: top level: expected a non-empty list of {{\"id\", \"template\", ...}}")
    video_ids, labels = [], []
    for position, entry in enumerate(entries):
        where = f"entry {position}"
        expect(isinstance(entry, dict) and isinstance(entry.get("id"), (str, int))
               and isinstance(entry.get("template"), str), list_file, where, "needs an 'id' and a 'template'")
        name = entry["template"].replace("[", "").replace("]", "")
        expect(name in index, list_file, f"{where} (id {entry['id']})",
               f"unknown class {name!r}: not in {classes_file}")
        video_ids.append(str(entry["id"]))
        labels.append(index[name])
    return LabelledVideos(video_ids, labels, names, class_texts=names)
