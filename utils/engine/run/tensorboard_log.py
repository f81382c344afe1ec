"""TensorBoard scalars of a run (main.py --tensorboard), written beside metrics.jsonl from the same records.

    tensorboard --logdir runs/            # every run folder's tensorboard/ subfolder

Tags (x axis: the optimizer step): train/loss, train/grad_norm, train/samples_per_s, train/data_time,
train/step_time, train/lr/<group> (one per AdamW parameter group: new_decay, new_no_decay, clip_...),
epoch/train_loss, and val/<name>, test/<name> for the scalars the task names in an evaluation's results
(utils.engine.tasks: retrieval's t2v/R1, v2t/MdR, post_processed/<method>/t2v/R1 ...; recognition's top1 ...).
"""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Tuple

TENSORBOARD_DIR = "tensorboard"
TRAIN_SCALARS = ("loss", "grad_norm", "samples_per_s", "data_time", "step_time")
# results of an evaluation -> its (name, value) scalars: a Task's ``scalars``
EvaluationScalars = Callable[[Dict[str, Any]], Iterable[Tuple[str, float]]]


def scalars(record: Dict[str, Any], evaluation: EvaluationScalars) -> Iterator[Tuple[str, float]]:
    """The (tag, value) pairs of one metrics.jsonl record (see the module docstring for the tags)."""
    kind = record.get("kind")
    if kind == "train":
        yield from ((f"train/{name}", record[name]) for name in TRAIN_SCALARS if name in record)
        yield from ((f"train/lr/{group}", lr) for group, lr in (record.get("lr_groups") or {}).items())
    elif kind == "epoch":
        if record.get("train_loss") is not None:
            yield "epoch/train_loss", record["train_loss"]
        if "eval" in record:
            yield from ((f"val/{name}", value) for name, value in evaluation(record["eval"]))
    elif kind == "test":
        yield from ((f"test/{name}", value) for name, value in evaluation(record))


class TensorBoardLog:
    """A SummaryWriter in ``<run>/tensorboard/``; ``write(record)`` logs a metrics.jsonl record's scalars at its
    step, an evaluation's by ``evaluation`` (the task's ``scalars``). ``purge_step`` (a resume's first step)
    drops the events a killed run logged from that step on."""

    def __init__(self, run_dir: str | Path, evaluation: EvaluationScalars, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # here: only --tensorboard needs the package

        folder = Path(run_dir) / TENSORBOARD_DIR
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder, where --tensorboard writes its events: move it "
                                     "away or leave out --tensorboard", str(folder))
        self.writer = SummaryWriter(str(folder), purge_step=purge_step)
        self.evaluation = evaluation

    def write(self, record: Dict[str, Any]) -> None:
        step = int(record.get("step", 0))
        for tag, value in scalars(record, self.evaluation):
            self.writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        self.writer.close()
