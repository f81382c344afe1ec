"""Checkpoint files (atomic writes, RNG round trip, learned state and its loading checks) and the resumable data
order. Reading every weights layout through the factory: tests/test_factory.py."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from models.checkpoints import FORMAT, CheckpointError
from tests.conftest import PairDataset, tiny_dgl_model
from utils.atomic_file import write_atomic
from utils.engine.training.checkpoint import (
    capture_rng_state,
    non_finite_tensors,
    read_resumable_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
    save_atomic,
)
from utils.engine.training.data_order import ResumableEpochSampler, SeededItems


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "ckpt_last.pt"
    save_atomic({"x": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic({"x": torch.zeros(2), "bad": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_last.pt"]  # no temporary file left behind


def test_rng_state_round_trip_survives_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_atomic({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_learned_state_excludes_frozen_clip_and_loading_checks_names_and_shapes():
    model = tiny_dgl_model()
    state = model.learned_state_dict()
    assert state and not any(k.startswith("clip.") for k in state)
    assert set(state) == {n for n, p in model.named_parameters() if p.requires_grad}
    other = tiny_dgl_model(seed=1)
    other.load_learned_state_dict(state, "test")
    assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items())

    missing = dict(state)
    missing.pop("never_used")
    with pytest.raises(CheckpointError, match=r"test does not match .* 1 missing tensors \(e.g. \['never_used'\]\)"):
        other.load_learned_state_dict(missing, "test")
    wrong = dict(state, never_used=torch.ones(4))
    with pytest.raises(CheckpointError, match=r"shape mismatch for \['never_used'\]"):
        other.load_learned_state_dict(wrong, "test")


def test_unlocked_clip_joins_the_learned_state():
    model = tiny_dgl_model()
    model.unlock_clip()
    state = model.learned_state_dict()
    assert {k for k in state if k.startswith("clip.")} == {n for n, _ in model.clip.named_parameters(prefix="clip")}


def test_resumable_checkpoint_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ckpt_last.pt in folder"):
        read_resumable_checkpoint(tmp_path)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read .*broken.pt as a checkpoint"):
        read_resumable_checkpoint(tmp_path / "broken.pt")
    save_atomic({"format": FORMAT, "model": {}}, tmp_path / "ckpt_best.pt")
    with pytest.raises(CheckpointError, match="not a resumable checkpoint .*use ckpt_last.pt"):
        read_resumable_checkpoint(tmp_path / "ckpt_best.pt")


@pytest.mark.parametrize("world", [1, 2, 4])
def test_global_batches_do_not_depend_on_the_number_of_processes(world):
    n, global_batch = 37, 8
    per_rank = [list(iter(ResumableEpochSampler(n, global_batch // world, r, world, seed=5)))
                for r in range(world)]
    steps = len(per_rank[0]) // (global_batch // world)
    reference = ResumableEpochSampler(n, global_batch, seed=5).epoch_order(0).tolist()
    for s in range(steps):
        got = sorted(i for r in range(world) for _, i in per_rank[r][s * (global_batch // world):
                                                                   (s + 1) * (global_batch // world)])
        assert got == sorted(reference[s * global_batch:(s + 1) * global_batch])
    assert steps == n // global_batch


@pytest.mark.parametrize("world", [1, 2])
def test_grouped_shuffle_keeps_each_group_in_one_global_batch(world):
    n, global_batch, group = 41, 8, 2  # 20 whole pairs, item 40 never used
    per_rank = [list(iter(ResumableEpochSampler(n, global_batch // world, r, world, seed=3, group_size=group)))
                for r in range(world)]
    local = global_batch // world
    batches = [sorted(i for r in range(world) for _, i in per_rank[r][s * local:(s + 1) * local])
               for s in range(len(per_rank[0]) // local)]
    assert len(batches) == 40 // global_batch
    for batch in batches:
        assert all(batch[k] % 2 == 0 and batch[k + 1] == batch[k] + 1 for k in range(0, global_batch, 2))
    used = sorted(i for batch in batches for i in batch)
    assert len(set(used)) == len(used) and max(used) < 40
    orders = [ResumableEpochSampler(n, global_batch, seed=3, group_size=group).epoch_order(e).tolist()[::2]
              for e in (0, 1)]
    assert orders[0] != orders[1] and orders[0] != sorted(orders[0])  # the groups themselves are shuffled
    with pytest.raises(ValueError, match="--train_group_size 3 must be >= 1 and divide the global batch"):
        ResumableEpochSampler(n, 4, 0, 2, group_size=3)


def test_resumed_epoch_skips_exactly_the_consumed_batches():
    sampler = ResumableEpochSampler(20, 3, rank=1, world_size=2, seed=0)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_batch=2)
    assert list(sampler) == full[6:] and len(sampler) == len(full) - 6
    sampler.set_epoch(3)
    assert list(sampler) != full


def test_seeded_items_are_reproducible_with_workers_and_leave_the_caller_rng_alone():
    items = SeededItems(PairDataset(6), seed=11)
    keys = [(0, i) for i in range(6)]
    torch.manual_seed(0)
    before = torch.get_rng_state()
    direct = [items[k]["video"] for k in keys]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(items[(0, 2)]["video"], direct[2])
    assert not torch.equal(items[(1, 2)]["video"], direct[2])  # another epoch, another draw
    with_workers = [b["video"][0] for b in DataLoader(items, sampler=keys, batch_size=1, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(direct, with_workers))


def test_non_finite_tensors_names_every_nan_or_inf_tensor_of_model_and_optimizer():
    payload = {"model": {"a": torch.ones(3), "b": torch.tensor([1.0, float("nan")]), "ids": torch.arange(3)},
               "optimizer": {"state": {0: {"exp_avg": torch.tensor([float("-inf")]), "step": torch.tensor(3.0)}},
                             "param_groups": [{"lr": 1e-3}]},
               "rng": [{"torch": torch.zeros(4, dtype=torch.uint8)}]}
    assert non_finite_tensors(payload) == ["model.b", "optimizer.state.0.exp_avg"]
    assert non_finite_tensors({"model": {"a": torch.ones(2, dtype=torch.float16)}}) == []


def test_stale_temporaries_of_a_killed_write_are_removed_and_nothing_else(tmp_path):
    write_atomic(tmp_path / "ckpt_last.pt", lambda f: f.write(b"good"))
    stale = tmp_path / ".ckpt_last.pt.4242.0123abcd.tmp"  # what write_atomic leaves when killed mid-write
    stale.write_bytes(b"half")
    (tmp_path / ".hparams.json.17.deadbeef.tmp").write_bytes(b"{")
    keep = [".lock", "notes.tmp", ".ckpt_last.pt.tmp", "ckpt_best.pt"]
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [".ckpt_last.pt.4242.0123abcd.tmp", ".hparams.json.17.deadbeef.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["ckpt_last.pt"])
    assert (tmp_path / "ckpt_last.pt").read_bytes() == b"good"
