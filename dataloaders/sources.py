"""Where the videos of a dataset are: a folder of files, or an LMDB of file bytes keyed by basename."""

from __future__ import annotations

import os

import lmdb

from .annotations import DataFileError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp",
                    ".ogv")


def name_candidates(name: str) -> list[str]:
    """Names a video id may be stored under: itself, without a video extension (DiDeMo ids such as
    `x.mov` whose compressed file is `x.mp4`), and without ActivityNet's `v_` prefix."""
    candidates = [name]
    stem, extension = os.path.splitext(name)
    if extension.lower() in VIDEO_EXTENSIONS:
        candidates.append(stem)
    if name.startswith("v_"):
        candidates.append(name[2:])
    return candidates


def list_video_files(root: str) -> list[str]:
    """Paths of the files with a video extension under `root` (recursively, following links), sorted."""
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(root, followlinks=True)
                  for name in names if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS)


def _stem_index(names) -> dict[str, str]:
    """Video file name (or relative path) -> {name without extension: name}; the first of equal stems wins."""
    index: dict[str, str] = {}
    for name in names:
        stem, extension = os.path.splitext(os.path.basename(name))
        if extension.lower() in VIDEO_EXTENSIONS:
            index.setdefault(stem, name)
            index.setdefault(os.path.basename(name), name)
    return index


class FolderSource:
    """Videos as files under `root`, found by relative path, or by name with or without extension anywhere
    below `root` (the folder is indexed once, on the first lookup that needs it)."""

    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise DataFileError(f"video folder {root} does not exist (set --features_path)")
        self.location = root
        self._index: dict[str, str] | None = None

    def _indexed(self) -> dict[str, str]:
        if self._index is None:
            self._index = _stem_index(list_video_files(self.location))
        return self._index

    def locate(self, name: str) -> str | None:
        """The file of the video called `name` (a relative/absolute path, a file name or an id), or None."""
        path = os.path.join(self.location, name)
        if os.path.isfile(path):
            return path
        index = self._indexed()
        return next((index[c] for c in name_candidates(os.path.basename(name)) if c in index), None)

    def read(self, key: str) -> str:
        """What the decoder opens for a located video: its path."""
        return key

    def describe(self, key: str) -> str:
        return key


class LMDBSource:
    """Videos as whole-file bytes in an LMDB (written by preprocess/folder_to_lmdb.py) keyed by file basename.
    The environment is opened lazily in each process that reads (LMDB handles do not survive a fork)."""

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise DataFileError(f"LMDB {path} does not exist (set --lmdb_dataset, or write one with "
                                    f"python -m preprocess.folder_to_lmdb)")
        self.location = path
        with self._open_env() as env, env.begin() as txn:
            keys = [key.decode() for key in txn.cursor().iternext(keys=True, values=False)]
        self._index = _stem_index(keys)
        self._env = None
        self._pid = None

    def _open_env(self) -> lmdb.Environment:
        return lmdb.open(self.location, readonly=True, lock=False, readahead=False, meminit=False,
                         subdir=os.path.isdir(self.location))

    def __getstate__(self):
        return {**self.__dict__, "_env": None, "_pid": None}

    def locate(self, name: str) -> str | None:
        return next((self._index[c] for c in name_candidates(os.path.basename(name)) if c in self._index), None)

    def read(self, key: str) -> bytes:
        if self._pid != os.getpid():
            if self._env is not None:  # inherited through a fork: let go of the parent's handle first
                self._env.close()
            self._env, self._pid = self._open_env(), os.getpid()
        with self._env.begin() as txn:
            value = txn.get(key.encode())
        return b"" if value is None else bytes(value)

    def describe(self, key: str) -> str:
        return f"{self.location}[{key}]"


def video_source(args) -> FolderSource | LMDBSource:
    """Where the videos of the flags are: --lmdb_dataset, else the folder --features_path."""
    if args.lmdb_dataset:
        return LMDBSource(args.lmdb_dataset)
    if not args.features_path:
        raise DataFileError("no video folder given: set --features_path (or --lmdb_dataset)")
    return FolderSource(args.features_path)
