"""Videos given by the user (every video file under a folder, or the entries of a CSV) and a Dataset that reads
them for the video encoder with the evaluation frame sampler (dataloaders.video_input.read_video_tensor)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pandas as pd
import torch
from torch.utils.data import Dataset

from dataloaders.annotations import DataFileError
from dataloaders.sources import VIDEO_EXTENSIONS, FolderSource, list_video_files
from dataloaders.video_input import read_video_tensor
from dataloaders.video_reader import VideoReadError

CSV_COLUMNS = ("video_path", "path", "video", "video_id")  # looked up in this order when --csv_column is not given


def printable(name: str) -> str:
    """`name` as text any UTF-8 output takes: the bytes of a file name that are not UTF-8 (which os.fsdecode
    keeps as surrogate escapes, so the name still opens its file) written as \\xNN, e.g. vid\\xff.mp4."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class UserVideo(NamedTuple):
    """A video to embed: `id` (as stored) and its file `path`, None when it could not be found."""

    id: str
    path: str | None


class Failure(NamedTuple):
    """A video that could not be embedded: `kind` is "missing", "empty", "unreadable", "truncated" or
    "non-finite"."""

    id: str
    kind: str
    reason: str


def videos_in_folder(root: str | os.PathLike) -> list[UserVideo]:
    """Every file with a video extension under `root` (recursively), id = path relative to `root` (POSIX)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataFileError(f"video folder not found: {root}")
    files = list_video_files(str(root))
    if not files:
        raise DataFileError(f"no video files under {root} (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return [UserVideo(Path(f).relative_to(root).as_posix(), f) for f in files]


def videos_in_csv(csv_path: str | os.PathLike, column: str | None = None,
                  video_dir: str | os.PathLike | None = None) -> list[UserVideo]:
    """The entries of `column` of a CSV, id = the entry as written. With `video_dir` an entry is found as the
    data loaders find dataset videos (relative path, file name, or name without extension anywhere under it);
    without, it is a path relative to the CSV's folder (or absolute)."""
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise DataFileError(f"--csv: file not found: {csv_path}")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataFileError(f"--csv {csv_path}: not a readable CSV ({' '.join(str(error).split())})") from None
    if column is None:
        column = next((c for c in CSV_COLUMNS if c in table.columns), None)
        if column is None:
            raise DataFileError(f"{csv_path}: no column named {' / '.join(CSV_COLUMNS)} (columns: "
                             f"{list(table.columns)}); name the column of video paths with --csv_column")
    elif column not in table.columns:
        raise DataFileError(f"{csv_path}: no column {column!r} (columns: {list(table.columns)})")
    entries = list(dict.fromkeys(e.strip() for e in table[column] if e.strip()))
    if not entries:
        raise DataFileError(f"{csv_path}: column {column!r} lists no video")
    if video_dir is not None and not Path(video_dir).expanduser().is_dir():
        raise DataFileError(f"--video_dir: video folder not found: {video_dir}")
    locate = csv_locator(csv_path, video_dir)
    return [UserVideo(e, locate(e)) for e in entries]


def csv_locator(csv_path: str | os.PathLike, video_dir: str | os.PathLike | None) -> Callable[[str], str | None]:
    """entry -> its file or None: found under `video_dir` as the data loaders find videos, or (no `video_dir`)
    a path relative to the CSV's folder."""
    if video_dir is not None:
        return FolderSource(str(Path(video_dir).expanduser())).locate
    folder = Path(csv_path).expanduser().parent

    def locate(entry: str) -> str | None:
        path = folder / Path(entry).expanduser()
        return str(path) if path.is_file() else None

    return locate


def stored_video_locator(source: dict[str, Any]) -> Callable[[str], str | None]:
    """id -> file (or None) of the videos of a store, from its metadata's `source` ({"videos": folder} or
    {"csv", "video_dir"}, as infer.py index records it)."""
    if "videos" in source:
        root = Path(source["videos"])
        return lambda video_id: str(root / video_id) if (root / video_id).is_file() else None
    video_dir = source.get("video_dir")
    if video_dir is not None and not Path(video_dir).is_dir():
        return lambda video_id: None
    return csv_locator(source["csv"], video_dir)


class VideoFileDataset(Dataset):
    """Items {"id", "video" float32 [T, 3, R, R], "video_mask" int64 [T]} or, for a video that cannot be read,
    {"id", "failure": Failure}. Frames at segment centres (the evaluation sampler), T = `max_frames`."""

    def __init__(self, videos: list[UserVideo], max_frames: int, resolution: int):
        self.videos, self.max_frames, self.resolution = videos, max_frames, resolution

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> dict[str, Any]:
        video = self.videos[index]
        if video.path is None:
            return {"id": video.id, "failure": Failure(video.id, "missing", "file not found")}
        try:
            frames, mask = read_video_tensor(video.path, self.max_frames, self.resolution)
        except VideoReadError as error:
            return {"id": video.id, "failure": Failure(video.id, error.kind, error.reason)}
        except Exception as error:  # any other decoding failure is a bad video too, never fatal
            return {"id": video.id, "failure": Failure(video.id, "unreadable", f"{type(error).__name__}: {error}")}
        return {"id": video.id, "video": frames, "video_mask": mask}


def collate_videos(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch: {"ids": readable ids, "video" [B, T, 3, R, R] and "video_mask" [B, T] (None when B = 0),
    "failures": [Failure]}."""
    readable = [item for item in items if "failure" not in item]
    stacked = {key: torch.stack([item[key] for item in readable]) if readable else None
               for key in ("video", "video_mask")}
    return {"ids": [item["id"] for item in readable], **stacked,
            "failures": [item["failure"] for item in items if "failure" in item]}
