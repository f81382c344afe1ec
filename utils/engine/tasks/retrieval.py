"""--task retrieval: text-video retrieval (the default). Contrastive training on caption-video pairs
(retrieval.step.ContrastiveStep), R@k / MdR / MnR in both directions (retrieval.evaluation), the best epoch by
the val t2v R@1; the re-normalisations, the rank report, the saved similarity matrix and the counterfactual
pairs' scores (--pairs_json, retrieval.pair_metrics) of the test evaluation."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import torch

from dataloaders import DATASETS, build_dataset
from models.config_fields import resume_free
from utils.engine.retrieval.evaluation import evaluate
from utils.engine.retrieval.metrics import METRICS
from utils.engine.retrieval.renormalisation import add_renormalisation_args, methods_from_args
from utils.engine.retrieval.step import ContrastiveStep
from utils.engine.runtime.precision import Precision
from utils.engine.tasks.base import EvaluationRun, Selection, Task


class RetrievalTask(Task):
    name = "retrieval"
    help = "text-video retrieval"
    datatypes = tuple(DATASETS)
    selection = Selection("t2v R@1", "best_val_t2v_R1", lambda results: results["t2v"]["R1"])
    curves = ("t2v/R1", "v2t/R1")
    gradient_cache = ContrastiveStep.GRADIENT_CACHE

    def add_args(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("retrieval (--task retrieval)")
        resume_free(group.add_argument("--save_similarity", action="store_true",
                                       help="also write the test text x video similarity matrix "
                                            "(similarity_test.pt)"),
                    "whether the test similarity matrix is written")
        resume_free(group.add_argument("--retrieval_report", action=argparse.BooleanOptionalAction, default=True,
                                       help="after the test evaluation also write rank_histogram_test.png and "
                                            "worst_queries_test.json (the worst-ranked queries with their top "
                                            "videos' names) beside eval_results.json"),
                    "whether the test rank histogram and worst queries are written")
        resume_free(group.add_argument("--pairs_json", default=None, metavar="PATH",
                                       help="also score the test evaluation's counterfactual pairs listed in this "
                                            "pairs.json (the temporal benchmark, dataloaders/counterfactual.py): "
                                            "Winoground's text / video / group scores per task under \"pairs\" in "
                                            "eval_results.json, over the pairs whose videos are evaluated"),
                    "an extra score of the test evaluation, reported beside its metrics")
        add_renormalisation_args(parser)

    def check_args(self, args: argparse.Namespace) -> None:
        post_process = methods_from_args(args)
        if post_process and not args.do_eval:
            raise ValueError(f"--{' / --'.join(post_process)} post-process the test evaluation: add --do_eval")
        if args.pairs_json and not args.do_eval:
            raise ValueError("--pairs_json scores the test evaluation: add --do_eval")
        if args.pairs_json and not Path(args.pairs_json).is_file():
            raise ValueError(f"--pairs_json: file not found: {args.pairs_json}")

    def extra_splits(self, args: argparse.Namespace) -> Tuple[str, ...]:
        return ("train",) if args.do_eval and "qb_norm" in methods_from_args(args) else ()  # QB-Norm's query bank

    def build_dataset(self, args: argparse.Namespace, split: str, resolution: int):
        return build_dataset(args, split, resolution)

    def training_step(self, model: torch.nn.Module, precision: Precision, train_set, device: torch.device
                      ) -> torch.nn.Module:
        return ContrastiveStep(model, precision)

    def evaluate(self, run: EvaluationRun, dataset, split: str, final: bool) -> Dict[str, Any]:
        args, out = run.args, run.output_dir
        post_process = methods_from_args(args) if final else None
        pairs = json.loads(Path(args.pairs_json).read_text()) if final and args.pairs_json else None
        return evaluate(run.model, dataset, run.ctx, args.batch_size_val, args.num_thread_reader, run.precision, split,
                        save_similarity=str(out / f"similarity_{split}.pt") if final and args.save_similarity else None,
                        post_process=post_process, query_bank=run.datasets.get("train") if post_process else None,
                        report_dir=str(out) if final and args.retrieval_report else None, pairs=pairs)

    def scalars(self, results: Dict[str, Any]) -> Iterator[Tuple[str, float]]:
        """<direction>/<metric> of t2v, v2t, v2t_group, and post_processed/<method>/<direction>/<metric>."""
        yield from _direction_scalars("", results)
        for method, post in (results.get("post_processed") or {}).items():
            yield from _direction_scalars(f"post_processed/{method}/", post)

    def split_identity(self, dataset) -> Any:
        return tuple(dataset.video_ids), tuple(dataset.captions)


def _direction_scalars(prefix: str, results: Dict[str, Any]) -> Iterator[Tuple[str, float]]:
    """(prefix + direction/metric, value) of every direction's metrics (the dicts with an R1) in ``results``."""
    for direction, metrics in results.items():
        if isinstance(metrics, dict) and "R1" in metrics:
            yield from ((f"{prefix}{direction}/{m}", metrics[m]) for m in METRICS)
