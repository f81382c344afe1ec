"""infer.py index sharded over 2 gloo processes (torchrun's environment, set by mp.spawn workers): the store
equals the 1-process one, a rank killed mid-run leaves only committed parts and a re-run completes the store
without duplicates or losses, and a busy store stops every rank with one line.

The model and videos are conftest's meanp_store (the frozen tiny CLIP with meanP on 18 generated videos);
sharding does not depend on the model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import infer
from tests.conftest import free_port, meanp_index_argv
from utils.inference.embedding_store import EmbeddingStore
from utils.inference.inference_model import InferenceModel

ENCODE_VIDEOS = InferenceModel.encode_videos


def die_on_call(call: int) -> None:
    """Make InferenceModel.encode_videos end this process at once (os._exit: no cleanup, like a SIGKILL) on its
    `call`-th call."""
    calls = []

    def encode(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os._exit(9)
        return ENCODE_VIDEOS(self, *args, **kwargs)

    InferenceModel.encode_videos = encode


def _worker(rank: int, world: int, runs: list[dict]) -> None:
    """Run infer.main(run["argv"]) for each run in its own process group; write the summary (or the one-line
    error) to run["result"] + rank; rank 1 dies on encode call run["rank1_dies_on"] when given."""
    torch.set_num_threads(1)
    for run in runs:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(run["port"]), RANK=str(rank),
                          WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        if rank == 1 and run.get("rank1_dies_on"):
            die_on_call(run["rank1_dies_on"])
        try:
            result = infer.main(run["argv"])
        except SystemExit as stop:
            result = str(stop.code)
        Path(f"{run['result']}{rank}").write_text(json.dumps(result))


def spawn(runs: list[dict]) -> None:
    for run in runs:
        run["port"] = free_port()
    mp.spawn(_worker, args=(2, runs), nprocs=2, join=True)


def results(run: dict) -> list:
    return [json.loads(Path(f"{run['result']}{rank}").read_text()) for rank in range(2)]


def assert_same_videos(store: Path, reference: Path, same_order: bool) -> None:
    ids, embeddings = EmbeddingStore(store).load()  # raises on duplicate ids
    reference_ids, expected = EmbeddingStore(reference).load()
    assert (ids if same_order else sorted(ids)) == (reference_ids if same_order else sorted(reference_ids))
    order = [ids.index(i) for i in reference_ids]
    np.testing.assert_allclose(embeddings[order].astype(np.float32), expected.astype(np.float32), atol=1e-3)
    assert not (store / "parts").exists()


def test_two_processes_equal_one_and_a_killed_rank_resumes_without_duplicates_or_losses(meanp_store, tmp_path):
    clip, videos, reference = meanp_store
    reference_ids = EmbeddingStore(reference).load()[0]
    assert len(reference_ids) == 18
    fresh, busy, killed = tmp_path / "fresh", tmp_path / "busy", tmp_path / "killed"
    runs = [{"argv": meanp_index_argv(clip, videos, fresh, 3, 2), "result": tmp_path / "fresh_rank"},
            {"argv": meanp_index_argv(clip, videos, busy, 2, 2), "result": tmp_path / "busy_rank"},
            {"argv": meanp_index_argv(clip, videos, killed, 1, 1), "result": tmp_path / "killed_rank",
             "rank1_dies_on": 3}]
    with EmbeddingStore(busy).writer_lock(), pytest.raises(mp.ProcessExitedException, match="exit code 9"):
        spawn(runs)  # rank 1 dies in the last run; mp.spawn then terminates rank 0, as torchrun does
    summaries = results(runs[0])
    assert summaries[0] == {**summaries[1], "seconds": summaries[0]["seconds"]}
    assert (summaries[0]["total"], summaries[0]["encoded"], summaries[0]["failed"]) == (18, 18, 0)
    assert_same_videos(fresh, reference, same_order=True)  # contiguous shards merged in rank order

    rank0, rank1 = results(runs[1])
    assert rank0.startswith(f"error: the embedding store {busy} is being written by process {os.getpid()}")
    assert rank1.startswith("error: rank 0 stopped: FolderBusyError: the embedding store")
    assert "\n" not in rank0 + rank1 and not (busy / "metadata.json").exists()

    # Rank 1's shard is videos 9..17; it committed parts of videos 9 and 10 and died encoding video 11.
    rank1 = sorted(p.name for p in (killed / "parts" / "rank-00001").iterdir())
    assert rank1 == ["part-00000.json", "part-00000.npy", "part-00001.json", "part-00001.npy"]
    stored = EmbeddingStore(killed).load()[0]
    assert set(reference_ids[9:11]) <= set(stored) <= set(reference_ids)
    assert not (killed / "embeddings.npy").exists()
    summary = infer.main(meanp_index_argv(clip, videos, killed, 2, 2))  # the re-run (here in one process)
    assert (summary["skipped"], summary["encoded"], summary["failed"]) == (len(stored), 18 - len(stored), 0)
    assert_same_videos(killed, reference, same_order=False)
