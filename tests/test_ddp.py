"""Two gloo processes give the same losses and parameter updates as one process on the same global batch,
with and without gradient accumulation and with gradient caching (--micro_batch_size, against one unsplit
process), for retrieval's contrastive step and recognition's classification step; sharded evaluation (retrieval
and recognition) gathers every item once, in order."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import (
    LabelledPairDataset,
    PairDataset,
    classification_trainer,
    free_port,
    learned,
    make_trainer,
    step_logs,
)
from utils.engine.recognition.evaluation import evaluate_recognition
from utils.engine.retrieval.evaluation import evaluate
from utils.engine.runtime.distributed import (
    DistContext,
    cleanup_distributed,
    gather_uneven,
    init_distributed,
    shard_bounds,
)
from utils.engine.runtime.precision import resolve_precision
from utils.engine.training.trainer import TrainingError

# (name, per-process batch with 2 processes, accumulation, micro-batch size, CLIP's logit scale trained); the
# 1-process run uses twice the batch, unsplit.
CASES = [("plain", 2, 1, 0, False), ("accumulated", 1, 2, 0, False), ("micro_batches", 2, 1, 1, False),
         ("logit_scale", 2, 1, 0, True), ("logit_scale_micro_batches", 2, 1, 1, True)]
EVAL_ITEMS = 5  # uneven over 2 ranks: shards of 3 and 2


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        for name, batch, accum, micro, logit_scale in CASES:
            trainer = make_trainer(Path(root) / f"ddp_{name}", ctx, n=8, batch_size=batch,
                                   gradient_accumulation_steps=accum, stop_after_steps=2, micro_batch_size=micro,
                                   train_logit_scale=logit_scale)
            trainer.train()
            torch.save(learned(trainer), Path(root) / f"ddp_{name}_rank{rank}.pt")
        dataset = PairDataset(EVAL_ITEMS)
        dataset.valid[3] = False
        results = evaluate(trainer.model, dataset, ctx, batch_size=2, num_workers=0,
                           precision=resolve_precision("fp32", ctx.device), split="test")
        local = torch.arange(10, 10 + len(shard_bounds(EVAL_ITEMS, rank, world)), dtype=torch.float)
        torch.save({"results": results, "gathered": gather_uneven(local[:, None])},
                   Path(root) / f"eval_rank{rank}.pt")
        # Recognition: cross-entropy over the classes (the class texts on every rank), then its evaluation.
        recognition = classification_trainer(Path(root) / "ddp_recognition", ctx, batch_size=2, stop_after_steps=2)
        recognition.train()
        torch.save(learned(recognition), Path(root) / f"ddp_recognition_rank{rank}.pt")
        labelled = LabelledPairDataset(EVAL_ITEMS)
        labelled.valid[3] = False
        torch.save(evaluate_recognition(recognition.model, labelled, ctx, batch_size=2, num_workers=0,
                                        precision=resolve_precision("fp32", ctx.device), split="test"),
                   Path(root) / f"recognition_eval_rank{rank}.pt")
        # A NaN loss at step 2: the loss of the global batch is the same on both ranks, so both stop (no hang).
        diverging = make_trainer(Path(root) / "ddp_nan", ctx, n=8, batch_size=2, n_display=100)
        forward, calls = diverging.step_module.module.forward, []

        def poisoned(*inputs):
            calls.append(1)
            return forward(*inputs) * (float("nan") if len(calls) == 2 else 1.0)

        diverging.step_module.module.forward = poisoned
        try:
            diverging.train()
            outcome = "finished"
        except TrainingError as error:
            outcome = str(error)
        (Path(root) / f"nan_rank{rank}.txt").write_text(outcome)
    finally:
        cleanup_distributed()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, free_port(), str(root)), nprocs=2, join=True)
    return root


@pytest.mark.parametrize("name,batch,accum,micro,logit_scale", CASES)
def test_two_processes_match_one_on_the_same_global_batch(ddp_run, tmp_path, name, batch, accum, micro, logit_scale):
    single = make_trainer(tmp_path, DistContext(), n=8, batch_size=2 * batch, gradient_accumulation_steps=accum,
                          stop_after_steps=2, train_logit_scale=logit_scale)
    single.train()
    assert step_logs(ddp_run / f"ddp_{name}") == pytest.approx(step_logs(tmp_path), abs=1e-5)
    # the gradient itself (before clipping), not only the Adam update, which hides a wrong scale
    assert step_logs(ddp_run / f"ddp_{name}", "grad_norm") == pytest.approx(step_logs(tmp_path, "grad_norm"),
                                                                             rel=1e-5)
    expected = learned(single)
    before = learned(make_trainer(tmp_path / "init", n=8, train_logit_scale=logit_scale))
    for rank in (0, 1):
        got = torch.load(ddp_run / f"ddp_{name}_rank{rank}.pt", weights_only=True)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-5, msg=f"rank {rank} {key}")
    assert any(not torch.allclose(before[k], expected[k]) for k in expected), "the steps changed nothing"


def test_recognition_two_processes_match_one_on_the_same_global_batch(ddp_run, tmp_path):
    """The class texts' gradient counts once (models.loss.shared_across_processes), the videos' through each
    rank's slice; the sharded recognition evaluation gives one process's metrics on every rank."""
    single = classification_trainer(tmp_path, DistContext(), batch_size=4, stop_after_steps=2)
    before = learned(single)
    single.train()
    assert step_logs(ddp_run / "ddp_recognition") == pytest.approx(step_logs(tmp_path), abs=1e-5)
    assert step_logs(ddp_run / "ddp_recognition", "grad_norm") == pytest.approx(step_logs(tmp_path, "grad_norm"),
                                                                                 rel=1e-5)
    expected = learned(single)
    assert not torch.equal(before["prompt_generator.embedding.weight"], expected["prompt_generator.embedding.weight"])
    for rank in (0, 1):
        got = torch.load(ddp_run / f"ddp_recognition_rank{rank}.pt", weights_only=True)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-5, msg=f"rank {rank} {key}")
    labelled = LabelledPairDataset(EVAL_ITEMS)
    labelled.valid[3] = False
    one = evaluate_recognition(single.model, labelled, DistContext(), batch_size=2, num_workers=0,
                               precision=resolve_precision("fp32", torch.device("cpu")), split="test")
    for rank in (0, 1):
        got = torch.load(ddp_run / f"recognition_eval_rank{rank}.pt", weights_only=False)
        assert got.pop("total_seconds") >= 0 and got == {k: v for k, v in one.items() if k != "total_seconds"}
    assert one["count"] == 4 and one["invalid_videos"] == 1 and one["invalid_video_ids"] == ["video3"]


def test_sharded_evaluation_gathers_each_item_once(ddp_run):
    r0 = torch.load(ddp_run / "eval_rank0.pt", weights_only=False)
    r1 = torch.load(ddp_run / "eval_rank1.pt", weights_only=False)
    assert r0["gathered"].flatten().tolist() == [10.0, 11.0, 12.0, 10.0, 11.0]   # shards of 3 and 2, no padding
    assert torch.equal(r0["gathered"], r1["gathered"])
    timing = ("encode_seconds", "total_seconds")
    assert {k: v for k, v in r0["results"].items() if k not in timing} == \
        {k: v for k, v in r1["results"].items() if k not in timing}
    res = r0["results"]
    assert res["num_videos"] == 4 and res["num_captions"] == 4 and res["invalid_videos"] == 1
    assert res["invalid_video_ids"] == ["video3"] and res["dropped_captions"] == 1
    assert res["t2v"]["count"] == 4 and res["v2t"]["count"] == 4


def test_shard_bounds_cover_everything_once():
    for n in (0, 1, 5, 7, 16):
        for world in (1, 2, 3, 8):
            parts = [list(shard_bounds(n, r, world)) for r in range(world)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_non_finite_loss_stops_every_process_at_the_same_step(ddp_run):
    for rank in (0, 1):
        assert (ddp_run / f"nan_rank{rank}.txt").read_text().startswith(
            "training step 2 (epoch 1): the loss is nan, the gradient norm is nan; stopped before the update. "
            "No checkpoint of this run was written."), rank
