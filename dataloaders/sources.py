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


def _name_index(names) -> dict[str, list[str]]:
    """Video file names or relative paths -> {file name, and file name without extension: every such name}."""
    index: dict[str, list[str]] = {}
    for name in names:
        base = os.path.basename(name)
        stem, extension = os.path.splitext(base)
        if extension.lower() in VIDEO_EXTENSIONS:
            for key in dict.fromkeys((stem, base)):
                index.setdefault(key, []).append(name)
    return index


def _shared_folders(video_id: str, name: str) -> int:
    """How many folders, innermost first, the path of `video_id` and the relative path `name` end with alike."""
    id_folders = os.path.normpath(video_id).split(os.sep)[-2::-1]
    name_folders = os.path.normpath(name).split(os.sep)[-2::-1]
    shared = 0
    while shared < min(len(id_folders), len(name_folders)) and id_folders[shared] == name_folders[shared]:
        shared += 1
    return shared


def find_by_name(index: dict[str, list[str]], video_id: str, location: str) -> str | None:
    """The one name of `index` (_name_index) that `video_id` is stored under, found by its file name (with or
    without extension, name_candidates); among names in several folders the one whose folders `video_id` ends
    with. None when no name matches; DataFileError naming the id and the files when several match alike (first
    match never wins: ids that differ only in folder would all read one video)."""
    for candidate in name_candidates(os.path.basename(video_id)):
        matches = index.get(candidate, [])
        if len(matches) > 1:
            shared = [_shared_folders(video_id, match) for match in matches]
            matches = [match for match, count in zip(matches, shared) if count == max(shared)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(matches[:4]) + (f" and {len(matches) - 4} more" if len(matches) > 4 else "")
            raise DataFileError(
                f"video id {video_id!r} matches {len(matches)} files by name under {location} ({listed}): which "
                f"one is meant is ambiguous; write the id as its path relative to {location} (e.g. "
                f"{matches[0]!r}) or give the files distinct names")
    return None


class FolderSource:
    """Videos as files under `root`, found by relative path, or by name with or without extension anywhere
    below `root` (find_by_name: a name in several folders must be told apart by the id's folders; the folder is
    indexed once, on the first lookup that needs it)."""

    def __init__(self, root: str):
        if not os.path.isdir(root):
            raise DataFileError(f"video folder {root} does not exist (set --features_path)")
        self.location = root
        self._index: dict[str, list[str]] | None = None

    def _indexed(self) -> dict[str, list[str]]:
        """_name_index of the video files' paths relative to the folder."""
        if self._index is None:
            self._index = _name_index(os.path.relpath(path, self.location)
                                      for path in list_video_files(self.location))
        return self._index

    def locate(self, name: str) -> str | None:
        """The file of the video called `name` (a relative/absolute path, a file name or an id), or None."""
        path = os.path.join(self.location, name)
        if os.path.isfile(path):
            return path
        found = find_by_name(self._indexed(), name, self.location)
        return None if found is None else os.path.join(self.location, found)

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
        self._index = _name_index(keys)
        self._env = None
        self._pid = None

    def _open_env(self) -> lmdb.Environment:
        return lmdb.open(self.location, readonly=True, lock=False, readahead=False, meminit=False,
                         subdir=os.path.isdir(self.location))

    def __getstate__(self):
        return {**self.__dict__, "_env": None, "_pid": None}

    def locate(self, name: str) -> str | None:
        return find_by_name(self._index, name, self.location)

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
