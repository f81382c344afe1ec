"""Captions of one dataset split, and reading annotation files with errors that name the file and row."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
from collections.abc import Iterable

import pandas as pd
import torch


class DataFileError(ValueError):
    """An annotation file that is missing or malformed; the message names the file (and row) and the fix."""


def data_file(path: str | None, flag: str) -> str:
    """`path` if it is an existing file, else a DataFileError saying which flag to set."""
    if not path:
        raise DataFileError(f"no annotation file given: set {flag}")
    if not os.path.isfile(path):
        raise DataFileError(f"{path}: file not found (set {flag})")
    return path


def read_text(path: str) -> str:
    """The content of a UTF-8 text file (a leading byte-order mark dropped); a file that is not UTF-8 is a
    DataFileError naming the file, the line and the byte, and how to convert it (the one decoding rule of every
    annotation reader)."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataFileError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[error.start]:02x} at byte "
                            f"{error.start}); save the file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None


def read_csv(path: str, columns: list[str], sep: str = ",") -> pd.DataFrame:
    """The named string columns of a CSV with a header and at least one row; rows with an empty required cell
    are errors."""
    try:
        table = pd.read_csv(io.StringIO(read_text(path)), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataFileError(f"{path}: not a readable CSV ({' '.join(str(error).split())})") from None
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise DataFileError(f"{path}: missing column(s) {missing}; the header has {list(table.columns)}")
    for column in columns:
        empty = table.index[table[column].str.strip() == ""]
        if len(empty):
            raise DataFileError(f"{path}: line {empty[0] + 2} (data row {empty[0] + 1}) has an empty '{column}'")
    if table.empty:
        raise DataFileError(f"{path}: no rows under the header: the split would have no videos (list them, or "
                            f"give the right file)")
    return table[columns]


def read_json(path: str):
    """The parsed content of a UTF-8 JSON file; invalid JSON or text is a DataFileError naming file and line."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataFileError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") \
            from None


class _CaptionUnpickler(pickle.Unpickler):
    """Unpickles plain containers, numbers and strings only: any class or function a pickle names (the way a
    crafted pickle runs code, e.g. os.system through __reduce__) is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refused to load the global {module}.{name}")


def read_caption_pickle(path: str):
    """The content of a caption pickle (e.g. MSVD's raw-captions.pkl, {video_id: [[word, ...], ...]}), read
    without running code: a pickle that names any class or function is a DataFileError saying what was
    refused (plain dicts, lists, tuples, strings and numbers need none)."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        return _CaptionUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as error:
        if str(error).startswith("refused"):
            raise DataFileError(
                f"{path}: {error}: a caption pickle holds only dicts, lists and strings, and loading the objects "
                f"a pickle names can run arbitrary code, so none are loaded. Convert a file you trust to JSON "
                f"({{video_id: [caption, ...]}}, e.g. raw-captions.json next to it).") from None
        raise DataFileError(f"{path}: not a readable pickle ({error})") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, ImportError,
            MemoryError, OverflowError) as error:
        raise DataFileError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None


def check_caption(text, path: str, where: str) -> str:
    """`text` if it is a non-empty string (after stripping whitespace), else a DataFileError naming `path` and
    the entry `where` (the one rule for captions of every format; read_csv applies it to CSV cells)."""
    expect(isinstance(text, str), path, where, f"caption {text!r} is not text")
    expect(bool(text.strip()), path, where, "empty caption (remove it or give it a text)")
    return text


def read_lines(path: str) -> list[str]:
    """Non-empty stripped lines of a text file (a list of video ids); see numbered_lines."""
    return [text for _, text in numbered_lines(path)]


def numbered_lines(path: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-empty lines of a UTF-8 text file (a split or class list);
    CRLF and LF line ends alike (the published UCF101 and HMDB51 split files end their lines with CRLF). A file
    without a non-empty line is a DataFileError naming it."""
    lines = [(number, line.strip()) for number, line in enumerate(read_text(path).splitlines(), 1) if line.strip()]
    if not lines:
        raise DataFileError(f"{path}: the file is empty (no line lists anything): give the right file, or "
                            f"list the split's entries one a line")
    return lines


HOLDOUT_SEED = 0


SPLITS = ("train", "val", "test")


def load_split(load, args, split: str):
    """``load(args, split)`` (a format reader -> Annotations or LabelledVideos: anything with ``video_ids`` and
    ``subset``) for one of SPLITS; --holdout_val_videos > 0 takes a fixed random choice of that many training
    videos out of training as the val split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if args.holdout_val_videos <= 0 or split == "test":
        return load(args, split)
    train = load(args, "train")
    held_out, kept = holdout_indices(len(train.video_ids), args.holdout_val_videos)
    return train.subset(held_out if split == "val" else kept)


def holdout_indices(num_videos: int, count: int) -> tuple[list[int], list[int]]:
    """--holdout_val_videos: (held-out indices, kept indices), both ascending: a fixed random choice of `count`
    of `num_videos` training videos (the same for every run); ValueError when none would be left to train on."""
    if count >= num_videos:
        raise ValueError(f"--holdout_val_videos {count} leaves no training video (the training split has "
                         f"{num_videos})")
    order = torch.randperm(num_videos, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).tolist()
    return sorted(order[:count]), sorted(order[count:])


def expect(condition: bool, path: str, where: str, problem: str) -> None:
    """Raise a DataFileError naming `path` and the entry `where` when `condition` is false."""
    if not condition:
        raise DataFileError(f"{path}: {where}: {problem}")


@dataclasses.dataclass
class Annotations:
    """One split: its videos, its captions and the video of each caption.

    `train_unit` says what one training item is: "caption" (every (caption, video) pair) or "video" (every
    video once, with one of its captions drawn at random each time). A video id is the name the video is
    looked up by in the video folder or LMDB (a file name with or without extension, or a relative path).
    """

    video_ids: list[str]
    captions: list[str]
    caption_to_video: list[int]
    train_unit: str = "caption"

    def __post_init__(self):
        if self.train_unit not in ("caption", "video"):
            raise ValueError(f"train_unit must be 'caption' or 'video', got {self.train_unit!r}")
        if len(self.captions) != len(self.caption_to_video):
            raise ValueError("captions and caption_to_video differ in length")
        if not self.video_ids:
            raise DataFileError("the split has no videos: check the annotation files")

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], train_unit: str = "caption") -> Annotations:
        """From (video id, caption) pairs; videos are numbered in order of first appearance."""
        video_index: dict[str, int] = {}
        captions, caption_to_video = [], []
        for video_id, caption in pairs:
            captions.append(caption)
            caption_to_video.append(video_index.setdefault(video_id, len(video_index)))
        return cls(list(video_index), captions, caption_to_video, train_unit)

    def subset(self, video_indices: Iterable[int]) -> Annotations:
        """The annotations of the given videos only (in the given order), with all their captions."""
        keep = list(video_indices)
        new_index = {old: new for new, old in enumerate(keep)}
        pairs = [(new_index[v], c) for c, v in zip(self.captions, self.caption_to_video) if v in new_index]
        return Annotations([self.video_ids[v] for v in keep], [c for _, c in pairs], [v for v, _ in pairs],
                           self.train_unit)


def split_list_file(folder: str | None, split: str, flag: str) -> str:
    """`<folder>/<split>_list.txt`; val falls back to test_list.txt where a dataset has no val list."""
    path = os.path.join(folder or "", f"{split}_list.txt")
    if split == "val" and not os.path.isfile(path):
        path = os.path.join(folder or "", "test_list.txt")
    return data_file(path, flag)


def multi_caption_annotations(list_path: str, captions: dict, captions_path: str) -> Annotations:
    """The videos listed in `list_path` with all their captions from `captions` ({video_id: [caption, ...]},
    read from `captions_path`); a caption given as a list of words is joined with spaces."""
    expect(isinstance(captions, dict), captions_path, "top level", "expected {video_id: [caption, ...]}")
    pairs = []
    for row, video_id in enumerate(read_lines(list_path)):
        texts = captions.get(video_id)
        expect(isinstance(texts, list) and bool(texts), captions_path, video_id,
               f"no caption list for this video (line {row + 1} of {list_path})")
        for index, text in enumerate(texts):
            if isinstance(text, list):
                text = " ".join(map(str, text))
            pairs.append((video_id, check_caption(text, captions_path, f"{video_id}: caption {index}")))
    return Annotations.from_pairs(pairs)
