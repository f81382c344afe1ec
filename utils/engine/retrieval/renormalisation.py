"""Inference-time re-normalisation of a text x video similarity matrix: dual softmax and QB-Norm.

Both are post-processing that published tables often apply on top of a model's raw cosine similarities; the
metrics they give are always reported BESIDE the raw ones, under "post_processed", never instead of them.

* Dual softmax (CAMoE, EMCL, DiffusionRet): ``sim * softmax(sim / temperature, dim=0)``: each score weighted by
  how strongly its gallery item prefers this query over the other queries. Text-to-video on sim [Nt, Nv] (rows =
  texts), video-to-text on the transpose. It uses the test queries' scores against each other, so it assumes the
  whole test query set is known at once.
* QB-Norm with the dynamic inverted softmax (Bogolin et al., CVPR 2022): a query bank (here: the TRAINING
  captions, encoded by the same model) finds the hubs, gallery items in the top-k of at least theta bank
  queries; a test query whose top-1 is a hub is re-scored as exp(beta * s) over the column sums of
  exp(beta * bank scores), the others keep their scores. Text-to-video only (a video bank would be needed for
  video-to-text).

The parameters are fixed by flags (defaults from the literature: temperature 0.01, i.e. 100 x cosine as in
CAMoE / EMCL; k 1, beta 20 and theta 1 as in QB-Norm's released search); they are never tuned on the test split.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Dict

import torch

from models.config_fields import resume_free
from utils.engine.retrieval.metrics import format_metrics, metrics_from_similarity
from utils.engine.runtime.sharded_encoding import EvaluationError

METHODS = ("dual_softmax", "qb_norm")
# parameter -> (the rule in words, the check); the flag of method m's parameter p is --m_p. A temperature below the
# smallest normal float64 (a subnormal one) makes sim / temperature overflow to inf, and the dual softmax NaN.
_RULES = {"temperature": (f"a finite number >= {sys.float_info.min} (the smallest normal float64; below it sim / "
                          f"temperature overflows)", lambda v: math.isfinite(v) and v >= sys.float_info.min),
          "beta": ("a finite number > 0", lambda v: math.isfinite(v) and v > 0),
          "k": (">= 1", lambda v: v >= 1), "theta": (">= 1", lambda v: v >= 1)}


def check_params(method: str, params: Dict[str, Any]) -> None:
    """ValueError naming the parameter and its flag when a value of ``params`` is out of range."""
    for name, value in params.items():
        rule, ok = _RULES[name]
        if not ok(value):
            raise ValueError(f"{method}'s {name} must be {rule}, got {value} (--{method}_{name})")


def _check_similarity(sim: torch.Tensor, what: str) -> None:
    if sim.dim() != 2:
        raise ValueError(f"{what} must be a matrix [queries, gallery], got shape {tuple(sim.shape)}")
    if not bool(torch.isfinite(sim).all()):
        raise ValueError(f"{what} has NaN or infinite entries")


def dual_softmax(sim: torch.Tensor, temperature: float) -> torch.Tensor:
    """sim [Nq, Ng] (rows = queries) -> sim * softmax(sim / temperature, dim=0), [Nq, Ng], same dtype."""
    _check_similarity(sim, "the similarity matrix")
    check_params("dual_softmax", {"temperature": temperature})
    return sim * torch.softmax(sim.double() / temperature, dim=0).to(sim.dtype)


def qb_norm(train_test: torch.Tensor, test_test: torch.Tensor, k: int = 1, beta: float = 20.0,
            theta: int = 1) -> torch.Tensor:
    """QB-Norm with the dynamic inverted softmax.

    train_test [Nb, Ng]: the bank queries' scores against the gallery; test_test [Nq, Ng]: the test queries'.
    Hubs: gallery items among the top-``k`` (ties to the lower index) of at least ``theta`` bank queries. A test
    row whose top-1 (argmax, ties to the lower index) is a hub becomes exp(beta * s) / sum_b exp(beta *
    train_test[b]) column by column (computed in float64 as exp(beta * s - logsumexp), so nothing overflows);
    the other rows are returned unchanged. Returns [Nq, Ng] in test_test's dtype.
    """
    _check_similarity(train_test, "the query bank's similarity matrix")
    _check_similarity(test_test, "the test similarity matrix")
    num_gallery = test_test.shape[1]
    if train_test.shape[1] != num_gallery:
        raise ValueError(f"the query bank scores {train_test.shape[1]} gallery items, the test queries "
                         f"{num_gallery}: they must score the same gallery")
    check_params("qb_norm", {"k": k, "beta": beta, "theta": theta})
    if k > num_gallery:
        raise ValueError(f"qb_norm's k must be at most the gallery size {num_gallery}, got {k} (--qb_norm_k)")
    bank, test = train_test.double(), test_test.double()
    top_k = torch.sort(bank, dim=1, descending=True, stable=True).indices[:, :k]
    hubs = torch.bincount(top_k.flatten(), minlength=num_gallery) >= theta
    rescored = hubs[test.argmax(dim=1)]
    normalised = torch.exp(beta * test - torch.logsumexp(beta * bank, dim=0))
    return torch.where(rescored[:, None], normalised, test).to(test_test.dtype)


def _check_scores(scores: torch.Tensor, method: str, params: Dict[str, Any]) -> torch.Tensor:
    """``scores`` (the matrix ``method`` gave with ``params``), or EvaluationError naming the method's flags when
    any is NaN or inf: such scores would rank last and report R@1 0 instead of what the model does."""
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        flags = ", ".join(f"--{method}_{name} {value}" for name, value in params.items())
        raise EvaluationError(f"{method} gave {bad} of {scores.numel()} similarity scores that are NaN or infinite "
                              f"with {flags}; no metrics are computed from them: choose other values of these flags "
                              f"(the defaults are the literature's)")
    return scores


def post_processed_metrics(sim: torch.Tensor, caption_to_video: torch.Tensor, methods: Dict[str, Dict[str, Any]],
                           bank_similarity: torch.Tensor | None = None) -> Dict[str, Dict[str, Any]]:
    """The metrics of ``sim`` [Nt, Nv] after each method of ``methods`` ({"dual_softmax": {"temperature": T},
    "qb_norm": {"k": k, "beta": b, "theta": t}}, as ``methods_from_args`` gives), for ``caption_to_video`` [Nt].
    Returns {method: {**its parameters, "post_processed": True, "t2v": ..., [v2t, v2t_group for dual softmax],
    [query_bank_size, rescored_queries for QB-Norm]}}. QB-Norm needs ``bank_similarity`` [Nb, Nv]. EvaluationError
    when a method gives a NaN or infinite score (naming its flags)."""
    out: Dict[str, Dict[str, Any]] = {}
    for method, params in methods.items():
        if method == "dual_softmax":
            t2v = metrics_from_similarity(_check_scores(dual_softmax(sim, params["temperature"]), method, params),
                                          caption_to_video)
            v2t = metrics_from_similarity(
                _check_scores(dual_softmax(sim.t(), params["temperature"]).t(), method, params), caption_to_video)
            metrics = {"t2v": t2v["t2v"], "v2t": v2t["v2t"], "v2t_group": v2t["v2t_group"]}
        elif method == "qb_norm":
            if bank_similarity is None:
                raise ValueError("QB-Norm needs the query bank's similarities (the training captions against the "
                                 "test videos)")
            normalised = _check_scores(qb_norm(bank_similarity, sim, params["k"], params["beta"], params["theta"]),
                                       method, params)
            metrics = {"t2v": metrics_from_similarity(normalised, caption_to_video)["t2v"],
                       "query_bank_size": int(len(bank_similarity)),
                       "rescored_queries": int((normalised != sim).any(dim=1).sum())}
        else:
            raise ValueError(f"unknown re-normalisation {method!r} (one of {list(METHODS)})")
        out[method] = {**params, "post_processed": True, **metrics}
    return out


def describe(post_processed: Dict[str, Dict[str, Any]]) -> str:
    """Log lines: each method's parameters and metrics, marked as post-processed."""
    lines = []
    for method, result in post_processed.items():
        params = {k: v for k, v in result.items() if not isinstance(v, dict) and k != "post_processed"}
        metrics = {k: v for k, v in result.items() if isinstance(v, dict)}
        lines.append(f"post-processed by {method} ({', '.join(f'{k} {v}' for k, v in params.items())}):\n"
                     + format_metrics(metrics))
    return "\n".join(lines)


POST_PROCESSING = "a post-processing of the test evaluation, reported beside its raw metrics"  # free on --resume


def add_renormalisation_args(parser: argparse.ArgumentParser) -> None:
    """The flags of the re-normalisations (main.py's test evaluation and scripts/renormalise.py)."""
    group = parser.add_argument_group("re-normalisation (post-processing, reported beside the raw metrics)")
    flags = [
        group.add_argument("--dual_softmax", action="store_true",
                           help="also report the test metrics after the dual softmax (sim x softmax over the "
                                "queries)"),
        group.add_argument("--dual_softmax_temperature", type=float, default=0.01,
                           help="its temperature on the cosine similarity (0.01 = 100 x cosine, as CAMoE / EMCL)"),
        group.add_argument("--qb_norm", action="store_true",
                           help="also report the test t2v metrics after QB-Norm (dynamic inverted softmax), with the "
                                "training captions as the query bank (needs --train_csv or the dataset's train "
                                "split)"),
        group.add_argument("--qb_norm_k", type=int, default=1, help="QB-Norm: the top-k of a bank query that count"),
        group.add_argument("--qb_norm_beta", type=float, default=20.0, help="QB-Norm: the inverted softmax's beta"),
        group.add_argument("--qb_norm_theta", type=int, default=1,
                           help="QB-Norm: a gallery item in the top-k of at least this many bank queries is a hub"),
    ]
    for action in flags:
        resume_free(action, POST_PROCESSING)


def methods_from_args(args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """{method: parameters} of the re-normalisations the flags ask for ({} for none); ValueError naming the flag
    of a value out of range."""
    methods = {}
    if args.dual_softmax:
        methods["dual_softmax"] = {"temperature": args.dual_softmax_temperature}
    if args.qb_norm:
        methods["qb_norm"] = {"k": args.qb_norm_k, "beta": args.qb_norm_beta, "theta": args.qb_norm_theta}
    for method, params in methods.items():
        check_params(method, params)
    return methods
