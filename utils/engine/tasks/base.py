"""The Task interface: what differs between the things main.py trains and evaluates (text-video retrieval,
action recognition, ...). main.py, the Trainer, the training curves and the TensorBoard log ask the task and
hold no branch on it; a new task is a Task subclass registered in utils.engine.tasks.TASKS."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Tuple

import torch

from utils.engine.runtime.distributed import DistContext
from utils.engine.runtime.precision import Precision


@dataclass(frozen=True)
class Selection:
    """The val metric that selects the best epoch: its name in the log ("t2v R@1"), its key in the results
    ("best_val_t2v_R1") and ``value(results) -> float`` (higher is better)."""
    label: str
    key: str
    value: Callable[[Dict[str, Any]], float]


@dataclass
class EvaluationRun:
    """What an evaluation of a run may read: the flags, the model on its device, the processes, the precision,
    the run folder and every split the run built ({split: dataset})."""
    args: argparse.Namespace
    model: torch.nn.Module
    ctx: DistContext
    precision: Precision
    output_dir: Path
    datasets: Dict[str, Any] = field(default_factory=dict)


class Task:
    """One task of main.py (``--task NAME``). Subclasses set the class attributes and implement
    ``build_dataset``, ``training_step``, ``evaluate`` and ``scalars``; the flag hooks are optional."""

    name: str = ""
    help: str = ""
    datatypes: Tuple[str, ...] = ()  # the --datatype values it reads (empty: it reads no --datatype)
    selection: Selection
    curves: Tuple[str, ...] = ()  # the ``scalars`` names drawn in the training curves' validation panel
    gradient_cache: bool = False  # whether its training step supports --micro_batch_size

    def add_args(self, parser: argparse.ArgumentParser) -> None:
        """Register the task's own flags (main.py refuses them, at a non-default value, with another task)."""

    def check_args(self, args: argparse.Namespace) -> None:
        """ValueError naming the flag for a task flag out of range (called at parse time, before any work)."""

    def extra_splits(self, args: argparse.Namespace) -> Tuple[str, ...]:
        """Splits the evaluation reads besides the train / val / test of --do_train / --do_eval."""
        return ()

    def build_dataset(self, args: argparse.Namespace, split: str, resolution: int):
        """The dataset of ``split`` ("train", "val", "test") of frames of ``resolution`` px."""
        raise NotImplementedError

    def training_step(self, model: torch.nn.Module, precision: Precision, train_set, device: torch.device
                      ) -> torch.nn.Module:
        """The module the Trainer wraps in DDP (utils.engine.training.trainer.Trainer's ``step_module``)."""
        raise NotImplementedError

    def evaluate(self, run: EvaluationRun, dataset, split: str, final: bool) -> Dict[str, Any]:
        """The metrics of ``run.model`` on ``dataset`` (the same dict on every rank). ``final``: the test
        evaluation of the run (reports, saved matrices), not a per-epoch val one."""
        raise NotImplementedError

    def scalars(self, results: Dict[str, Any]) -> Iterator[Tuple[str, float]]:
        """(name, value) of the scalars of an evaluation's results (TensorBoard's val/<name>, test/<name>)."""
        raise NotImplementedError

    def split_identity(self, dataset) -> Any:
        """What makes two splits the same data (the val split being the test split is reported), or None."""
        return None
