"""Writing an embedding store (infer.py index): open a store for one model and one source of videos, encode the
videos it does not hold yet in parts (an interruption loses at most one part), and consolidate it.

The caller holds the store's writer lock (EmbeddingStore(path).writer_lock()) around open_store_for_writing and
index_videos: one process writes a store at a time. A sharded index (torchrun) runs index_videos on every rank,
rank 0 holding the lock: each rank encodes its own contiguous shard of the pending videos into its own part
folder, and rank 0 merges them once all finished.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dataloaders.video_files import Failure, UserVideo, VideoFileDataset, collate_videos, printable
from utils.engine.run.folder_lock import LOCK_FILES
from utils.engine.runtime.distributed import all_gather_object, barrier, raise_if_any_failed, shard_bounds
from utils.inference.embedding_store import FORMAT, EmbeddingStore
from utils.inference.inference_model import InferenceModel

log = logging.getLogger(__name__)
BATCH_SIZE = {"cpu": 8, "cuda": 64}  # videos per forward when no batch size is given, by device type
CHUNK_SIZE = 512  # videos per part written to the store


class StoreConflictError(ValueError):
    """A folder that cannot take these embeddings: not an embedding store, a store of another format, or one
    written by another model or from another source of videos."""


def check_output_folder(path: str | Path) -> None:
    """Return if `path` is new, empty (lock files aside) or an embedding store; StoreConflictError otherwise."""
    root = Path(path)
    if root.is_file() or (root.is_dir() and any(p.name not in LOCK_FILES for p in root.iterdir())
                          and not (root / "metadata.json").is_file()):
        raise StoreConflictError(f"--output {root} exists and is not an embedding store; choose a new folder")


def open_store_for_writing(path: str | Path, trained: InferenceModel, source: dict[str, Any]) -> EmbeddingStore:
    """The store at `path`, recovered from an interrupted write: a new one (its metadata written for `trained`
    and `source`), or one written by the same model from the same source. Raises StoreConflictError for anything
    else. The caller holds the store's writer lock."""
    root = Path(path)
    check_output_folder(path)
    store = EmbeddingStore(root)
    store.recover()
    metadata = store.metadata
    if metadata is None:
        store.write_metadata({"dtype": "float16", "model": trained.description, "source": source, "count": 0,
                              "failed": 0})
        return store
    if metadata.get("format") != FORMAT:
        raise StoreConflictError(f"{root}: not a store of format {FORMAT} (found {metadata.get('format')!r})")
    differences = trained.differences_from(metadata["model"])
    if differences:
        raise StoreConflictError(f"{root} holds embeddings of another model (it differs in "
                                 f"{', '.join(differences)}); index into a new --output folder")
    if metadata["source"] != source:
        raise StoreConflictError(f"{root} indexes {metadata['source']}, not {source}; index these videos into a "
                                 "new --output folder")
    return store


def encode_pending(store: EmbeddingStore, trained: InferenceModel, videos: list[UserVideo],
                   batch_size: int | None = None, num_workers: int = 0, chunk_size: int = CHUNK_SIZE,
                   progress: bool = True) -> int:
    """Encode `videos` (float16) into parts of `store`, `chunk_size` videos a part, with a progress bar (unless
    not `progress`); returns how many failed (unreadable, or a non-finite embedding: listed in the store's
    failed.csv). The work done before an interruption or an error is committed. `batch_size` None: BATCH_SIZE
    of the model's device."""
    batch_size = batch_size or BATCH_SIZE.get(trained.device.type, BATCH_SIZE["cpu"])
    loader = DataLoader(VideoFileDataset(videos, trained.max_frames, trained.resolution), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate_videos, pin_memory=trained.device.type == "cuda")
    ids: list[str] = []
    features: list[np.ndarray] = []
    failures: list[Failure] = []
    num_failed = 0

    def commit():
        store.append(ids, np.concatenate(features) if features else np.zeros((0, 0), np.float16), failures)
        ids.clear()
        features.clear()
        failures.clear()

    with logging_redirect_tqdm(), tqdm(total=len(videos), unit="video", desc="index", dynamic_ncols=True,
                                       disable=not progress) as bar:
        try:
            for batch in loader:
                batch_failures = list(batch["failures"])
                if batch["ids"]:
                    encoded = trained.encode_videos(batch["video"], batch["video_mask"]).numpy().astype(np.float16)
                    finite = np.isfinite(encoded).all(axis=1)
                    ids.extend(i for i, ok in zip(batch["ids"], finite) if ok)
                    features.append(encoded[finite])
                    batch_failures += [Failure(i, "non-finite", "the embedding has NaN or inf entries (float16)")
                                       for i, ok in zip(batch["ids"], finite) if not ok]
                for failure in batch_failures:
                    log.warning(printable(f"skipped {failure.id}: {failure.reason}"))
                failures.extend(batch_failures)
                num_failed += len(batch_failures)
                bar.update(len(batch["ids"]) + len(batch["failures"]))
                bar.set_postfix(failed=num_failed, refresh=False)
                if len(ids) + len(failures) >= chunk_size:
                    commit()
        finally:
            if ids or failures:
                commit()
    return num_failed


def index_videos(output: str | Path, trained: InferenceModel, videos: list[UserVideo], source: dict[str, Any],
                 batch_size: int | None = None, num_workers: int = 0, chunk_size: int = CHUNK_SIZE, rank: int = 0,
                 world_size: int = 1) -> dict[str, Any]:
    """Embed into the store at `output` the `videos` it does not hold yet, then consolidate it and update its
    metadata. `source` names where the videos come from (a store indexes one source). Returns {"total",
    "skipped", "encoded", "failed", "store", "seconds"}. Raises StoreConflictError (open_store_for_writing). The
    caller holds the store's writer lock (rank 0 of a sharded index).

    With `world_size` > 1 every rank of the process group calls it with the same `videos`: rank 0 opens the
    store, each rank encodes its shard (shard_bounds of the pending videos) into parts/rank-R/, rank 0
    consolidates after all finished, and every rank returns the same summary."""
    error = None
    try:
        if rank == 0:
            open_store_for_writing(output, trained, source)
    except StoreConflictError as conflict:
        error = conflict
    raise_if_any_failed(error)  # also: no rank reads the store before rank 0 recovered it
    store = EmbeddingStore(output, rank if world_size > 1 else None)
    done = set(store.load()[0])
    pending = [video for video in videos if video.id not in done]
    shard = [pending[i] for i in shard_bounds(len(pending), rank, world_size)]
    barrier()  # every rank read the same store before any writes to it
    if rank == 0:
        log.info(f"{len(videos)} videos: {len(videos) - len(pending)} already in {output}, {len(pending)} to "
                 f"encode ({trained.max_frames} frames of {trained.resolution} px, device {trained.device}"
                 + (f", {world_size} processes)" if world_size > 1 else ")"))
    start = time.time()
    failed_here = encode_pending(store, trained, shard, batch_size, num_workers, chunk_size,
                                 progress=rank == 0) if shard else 0
    num_failed = sum(all_gather_object(failed_here))  # every rank finished writing
    totals = store.consolidate() if rank == 0 else None
    count, failed_total = all_gather_object(totals)[0]
    if rank == 0:
        store.write_metadata({**store.metadata, "count": count, "failed": failed_total,
                              "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
        log.info(f"encoded {len(pending) - num_failed}, failed {num_failed} (listed in "
                 f"{Path(output) / 'failed.csv'}), {count} videos in the store")
    return {"total": len(videos), "skipped": len(videos) - len(pending), "encoded": len(pending) - num_failed,
            "failed": num_failed, "store": str(output), "seconds": round(time.time() - start, 2)}
