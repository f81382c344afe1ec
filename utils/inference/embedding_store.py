"""A folder of video embeddings on disk, written incrementally and crash-safely.

Layout of a store folder:
  embeddings.npy   float16 [N, E] raw video features (`model.encode_video`; normalise before dot products)
  ids.json         the N video ids (paths relative to the indexed folder, or CSV entries), in row order
  metadata.json    format, count, dim, and what wrote them (model, frames, source); see infer.py
  failed.csv       id, kind, reason of every video whose last attempt failed and that is not indexed (UTF-8; the
                   bytes of a file name that are not UTF-8 as the file system has them)
  parts/           present only while (or after an interrupted) indexing: part-00000.npy + part-00000.json;
                   under torchrun each rank writes its own parts/rank-00001/part-00000.* (no two writers on one file)

Writing: `append` adds a part (its .npy, then its .json, each atomically: the .json commits the part);
`consolidate` merges the parts into embeddings.npy / ids.json / failed.csv. The merge writes those as
`*.new` files, `ids.json.new` last (the commit point), then renames them and deletes the parts. A writer starts
with `recover()`, which finishes a committed merge and removes what was not committed, so an interruption loses
at most the part that was being written. Readers (`load`, `failures`) change nothing and see the last commit,
also while an indexer is writing, and take no lock.

A sharded writer (`EmbeddingStore(root, rank=r)`, infer.py index under torchrun) appends to parts/rank-r/ only;
readers see the parts of every rank, ordered by (rank, number) after the single-process parts; rank 0 alone
recovers and consolidates, while no rank writes.

One writer per store at a time: a writer holds `writer_lock()` (an OS file lock on `.lock`,
utils.engine.run.folder_lock,
released when its process ends, however it ends) for its whole session; a second writer gets FolderBusyError
at once, naming the store and the first writer's pid, host and command (`.lock.owner`). Two unlocked writers
would number their parts alike and merge each other's parts twice (duplicate ids).
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from filelock import FileLock, Timeout

from dataloaders.video_files import Failure
from utils.atomic_file import write_atomic
from utils.engine.run.folder_lock import LOCK_NAME, FolderLock
from utils.inference.ann_index import ANN_INDEX, ANN_RECORD

FORMAT = "stop-video-embeddings/1"
EMBEDDINGS, IDS, METADATA, FAILED, PARTS = "embeddings.npy", "ids.json", "metadata.json", "failed.csv", "parts"
STORE_NAMES = (EMBEDDINGS, IDS, METADATA, FAILED, PARTS, ANN_INDEX, ANN_RECORD)  # and their *.new, the .lock*
RANK_PREFIX = "rank-"  # parts/rank-00001/: the parts of rank 1 of a sharded (torchrun) index
FAILED_COLUMNS = ("id", "kind", "reason")
READ_ATTEMPTS = 3


def _write_json(path: Path, obj) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def _write_npy(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def _write_failures(path: Path, failures: Iterable[Failure]) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(FAILED_COLUMNS)
    writer.writerows(failures)
    write_atomic(path, lambda f: f.write(text.getvalue().encode("utf-8", "surrogateescape")))


def is_store_file(path: str | os.PathLike) -> bool:
    """Whether `path` is (or would be) a file that the embedding store in its folder reads or writes (a name of
    STORE_NAMES, one of their *.new, a hidden file such as the lock); False in a folder that holds no store."""
    path = Path(path)
    if not any((path.parent / name).is_file() for name in (METADATA, IDS)):
        return False
    return path.name.startswith(".") or path.name.removesuffix(".new") in STORE_NAMES


class EmbeddingStore:
    """The store in folder `root` (created on the first write). Readers see the state of the last commit and
    change nothing; a writer calls `recover()` first (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, rank: int | None = None):
        self.root = Path(root)
        self.parts_dir = self.root / PARTS
        # where `append` writes: parts/ for a single writer, parts/rank-RRRRR/ for rank `rank` of a sharded one
        self.own_parts = self.parts_dir if rank is None else self.parts_dir / f"{RANK_PREFIX}{rank:05d}"

    # ------------------------------------------------------------------------------------------ reading
    @property
    def metadata(self) -> dict | None:
        path = self.root / METADATA
        return json.loads(path.read_text()) if path.is_file() else None

    def _part_folders(self) -> list[Path]:
        """parts/ and its rank folders, parts/ first, then by rank."""
        if not self.parts_dir.is_dir():
            return []
        return [self.parts_dir, *sorted(self.parts_dir.glob(RANK_PREFIX + "*"))]

    def _part_stems(self, folders: list[Path] | None = None) -> list[Path]:
        """Committed parts (their .json exists) of `folders` (default all), in folder then writing order."""
        return [stem for folder in (self._part_folders() if folders is None else folders)
                for stem in sorted((p.with_suffix("") for p in folder.glob("part-*.json")),
                                   key=lambda stem: int(stem.name.split("-")[1]))]

    def _merged(self, name: str, committed: bool) -> Path:
        new = self.root / (name + ".new")
        return new if committed and new.is_file() else self.root / name

    def _snapshot(self) -> tuple[list[str], list[np.ndarray], dict[str, Failure]]:
        """(ids, their arrays, failures) as of the last commit: after a committed but unfinished merge its *.new
        files (which hold the parts), else the merged files plus the committed parts."""
        committed = (self.root / (IDS + ".new")).is_file()
        ids_path, failed_path = self._merged(IDS, committed), self._merged(FAILED, committed)
        ids = json.loads(ids_path.read_text()) if ids_path.is_file() else []
        # a store of failures only has an empty ids.json and no embeddings.npy
        arrays = [np.load(self._merged(EMBEDDINGS, committed), allow_pickle=False)] if ids else []
        failures: dict[str, Failure] = {}
        if failed_path.is_file():
            with open(failed_path, newline="", encoding="utf-8", errors="surrogateescape") as file:
                failures.update((row["id"], Failure(row["id"], row["kind"], row["reason"]))
                                for row in csv.DictReader(file))
        for stem in [] if committed else self._part_stems():
            part = json.loads(stem.with_suffix(".json").read_text())
            ids += part["ids"]
            arrays.append(np.load(stem.with_suffix(".npy"), allow_pickle=False))
            for entry in part["ids"]:  # a later attempt wins
                failures.pop(entry, None)
            failures.update((f[0], Failure(*f)) for f in part["failed"])
        return ids, arrays, failures

    def _read(self) -> tuple[list[str], list[np.ndarray], dict[str, Failure]]:
        for _ in range(READ_ATTEMPTS - 1):
            try:
                return self._snapshot()
            except FileNotFoundError:  # a writer finishing a merge renamed a file between two reads
                continue
        return self._snapshot()

    def load(self) -> tuple[list[str], np.ndarray | None]:
        """(ids, float16 embeddings [N, E]); embeddings None when nothing is indexed yet."""
        ids, arrays, _ = self._read()
        arrays = [a for a in arrays if len(a)]  # a part whose videos all failed has no rows
        embeddings = np.concatenate(arrays) if arrays else None
        if len(ids) != (0 if embeddings is None else len(embeddings)):
            raise ValueError(f"{self.root}: {len(ids)} ids for {0 if embeddings is None else len(embeddings)} "
                             "embedding rows; the store is damaged, index into a new folder")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.root}: duplicate ids; the store is damaged, index into a new folder")
        return ids, embeddings

    def failures(self) -> dict[str, Failure]:
        """id -> Failure of the videos whose last attempt failed and that are not indexed."""
        return self._read()[2]

    # ------------------------------------------------------------------------------------------ writing
    def writer_lock(self) -> FolderLock:
        """`with store.writer_lock():` around a whole writing session (creates the folder); FolderBusyError when
        another process writes the store."""
        return FolderLock(self.root, "the embedding store")

    def writer(self) -> dict | None:
        """The `.lock.owner` record of the process writing the store now, or None when none does. Only a store
        with an owner record is probed (its lock taken and released at once, so a writer starting at that instant
        would be refused): a writer records itself right after taking the lock and deletes the record when it
        releases it, and a record with no lock held is one a killed writer left."""
        owner = self.writer_lock().owner()
        if owner is None:
            return None
        probe = FileLock(str(self.root / LOCK_NAME), timeout=0)
        try:
            probe.acquire()
        except Timeout:
            return owner
        probe.release()
        return None

    def write_metadata(self, metadata: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(self.root / METADATA, {"format": FORMAT, **metadata})

    def append(self, ids: list[str], embeddings: np.ndarray, failures: list[Failure]) -> None:
        """Commit one part: `embeddings` [len(ids), E] (stored as float16) and the failures of its batch."""
        if embeddings.ndim != 2 or len(embeddings) != len(ids):
            raise ValueError(f"expected embeddings [{len(ids)}, E], got shape {embeddings.shape}")
        self.own_parts.mkdir(parents=True, exist_ok=True)
        stems = self._part_stems([self.own_parts])
        number = int(stems[-1].name.split("-")[1]) + 1 if stems else 0
        stem = self.own_parts / f"part-{number:05d}"
        _write_npy(stem.with_suffix(".npy"), embeddings.astype(np.float16))
        _write_json(stem.with_suffix(".json"), {"ids": list(ids), "failed": [list(f) for f in failures]})

    def consolidate(self) -> tuple[int, int]:
        """Merge the committed parts into embeddings.npy / ids.json / failed.csv; returns (videos, failures)."""
        ids, embeddings = self.load()
        failures = self.failures()
        if embeddings is not None:
            _write_npy(self.root / (EMBEDDINGS + ".new"), embeddings)
        _write_failures(self.root / (FAILED + ".new"), failures.values())
        _write_json(self.root / (IDS + ".new"), ids)  # the commit point
        self.recover()
        return len(ids), len(failures)

    def recover(self) -> None:
        """Finish a committed merge (ids.json.new exists): rename the merged files, delete the merged parts, and
        rename ids.json.new last. Drop what was not committed: temporaries, *.new without the commit, part
        arrays without their .json."""
        committed = (self.root / (IDS + ".new")).is_file()
        folders = self._part_folders()
        for tmp in [*self.root.glob(".*.tmp"), *(t for folder in folders for t in folder.glob(".*.tmp"))]:
            tmp.unlink()
        for name in (EMBEDDINGS, FAILED):
            new = self.root / (name + ".new")
            if new.is_file():
                if committed:
                    os.replace(new, self.root / name)
                else:
                    new.unlink()
        for folder in reversed(folders):  # rank folders before parts/ itself
            for array in folder.glob("part-*.npy"):
                if committed or not array.with_suffix(".json").is_file():
                    array.unlink()
            if committed:
                for part in folder.glob("part-*.json"):
                    part.unlink()
                folder.rmdir()
        if committed:
            os.replace(self.root / (IDS + ".new"), self.root / IDS)
