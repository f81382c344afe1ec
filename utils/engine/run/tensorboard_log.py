"""TensorBoard scalars of a run (main.py --tensorboard), written beside metrics.jsonl from the same records.

    tensorboard --logdir runs/            # every run folder's tensorboard/ subfolder

Tags (x axis: the optimizer step): train/loss, train/grad_norm, train/samples_per_s, train/data_time,
train/step_time, train/lr/<group> (one per AdamW parameter group: new_decay, new_no_decay, clip_...),
epoch/train_loss, val/<direction>/<metric> (t2v/R1, v2t/MdR, ...), test/<direction>/<metric>, and
test_post_processed/<method>/<direction>/<metric> for the re-normalisations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

TENSORBOARD_DIR = "tensorboard"
TRAIN_SCALARS = ("loss", "grad_norm", "samples_per_s", "data_time", "step_time")
METRICS = ("R1", "R5", "R10", "MdR", "MnR")


def _direction_scalars(prefix: str, results: Dict[str, Any]) -> Iterator[Tuple[str, float]]:
    """(tag, value) of every direction's metrics (t2v, v2t, v2t_group: the dicts with an R1) in ``results``."""
    for direction, metrics in results.items():
        if isinstance(metrics, dict) and "R1" in metrics:
            yield from ((f"{prefix}/{direction}/{m}", metrics[m]) for m in METRICS)


def _retrieval_scalars(prefix: str, results: Dict[str, Any]) -> Iterator[Tuple[str, float]]:
    """The direction scalars of an evaluation's results and of each of its re-normalisations."""
    yield from _direction_scalars(prefix, results)
    for method, post in (results.get("post_processed") or {}).items():
        yield from _direction_scalars(f"{prefix}_post_processed/{method}", post)


def scalars(record: Dict[str, Any]) -> Iterator[Tuple[str, float]]:
    """The (tag, value) pairs of one metrics.jsonl record (see the module docstring for the tags)."""
    kind = record.get("kind")
    if kind == "train":
        yield from ((f"train/{name}", record[name]) for name in TRAIN_SCALARS if name in record)
        yield from ((f"train/lr/{group}", lr) for group, lr in (record.get("lr_groups") or {}).items())
    elif kind == "epoch":
        if record.get("train_loss") is not None:
            yield "epoch/train_loss", record["train_loss"]
        if "eval" in record:
            yield from _retrieval_scalars("val", record["eval"])
    elif kind == "test":
        yield from _retrieval_scalars("test", record)


class TensorBoardLog:
    """A SummaryWriter in ``<run>/tensorboard/``; ``write(record)`` logs a metrics.jsonl record's scalars at its
    step. ``purge_step`` (a resume's first step) drops the events a killed run logged from that step on."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # here: only --tensorboard needs the package

        self.writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge_step)

    def write(self, record: Dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for tag, value in scalars(record):
            self.writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        self.writer.close()
