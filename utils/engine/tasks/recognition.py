"""--task recognition: action recognition (docs/RECOGNITION.md). Videos scored against the texts of every class,
trained with cross-entropy over the classes (recognition.step.ClassificationStep); top-1 / top-5 / mean class
accuracy (recognition.evaluation), the best epoch by the val top-1, the confusion matrix and per-class report of
the test evaluation."""
from __future__ import annotations

import argparse
from typing import Any, Dict, Iterator, Tuple

import torch

from dataloaders.recognition import (
    RECOGNITION_DATASETS,
    add_recognition_args,
    build_recognition_dataset,
    check_recognition_args,
)
from utils.engine.recognition.evaluation import evaluate_recognition
from utils.engine.recognition.step import ClassificationStep
from utils.engine.runtime.precision import Precision
from utils.engine.tasks.base import EvaluationRun, Selection, Task

SCALARS = ("top1", "top5", "mean_class_accuracy")


class RecognitionTask(Task):
    name = "recognition"
    help = ("action recognition, videos scored against the texts of every class, trained with cross-entropy over "
            "the classes (docs/RECOGNITION.md)")
    datatypes = tuple(RECOGNITION_DATASETS)
    selection = Selection("top-1", "best_val_top1", lambda results: results["top1"])
    curves = ("top1", "top5")

    def add_args(self, parser: argparse.ArgumentParser) -> None:
        add_recognition_args(parser)

    def check_args(self, args: argparse.Namespace) -> None:
        check_recognition_args(args)

    def build_dataset(self, args: argparse.Namespace, split: str, resolution: int):
        return build_recognition_dataset(args, split, resolution)

    def training_step(self, model: torch.nn.Module, precision: Precision, train_set, device: torch.device
                      ) -> torch.nn.Module:
        return ClassificationStep(model, precision, train_set.class_tokens().to(device))

    def evaluate(self, run: EvaluationRun, dataset, split: str, final: bool) -> Dict[str, Any]:
        args = run.args
        return evaluate_recognition(run.model, dataset, run.ctx, args.batch_size_val, args.num_thread_reader,
                                    run.precision, split, report_dir=str(run.output_dir) if final else None)

    def scalars(self, results: Dict[str, Any]) -> Iterator[Tuple[str, float]]:
        """top1, top5, mean_class_accuracy."""
        yield from ((name, results[name]) for name in SCALARS)

    def split_identity(self, dataset) -> Any:
        return tuple(dataset.video_ids), tuple(dataset.captions)
