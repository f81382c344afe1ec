"""Sharded retrieval evaluation.

Every rank encodes a contiguous shard of the captions and of the videos (``shard_bounds``: no padding, so no
item is encoded or counted twice), the features are gathered on every rank, videos whose file could not be
decoded (``valid`` False) are dropped together with their captions, and the metrics of
``utils.engine.retrieval.metrics``
are computed blockwise (t2v, v2t, and v2t_group; see that module for the multi-caption protocol).

Every evaluated feature is checked: a NaN or infinite text or video feature (a diverged model, or an overflow
under float16) stops the evaluation with ``EvaluationError`` instead of producing metrics (a NaN row would
otherwise rank however the comparison rule happens to treat it). Queries that tie with their correct item are
counted in the metrics ("tied") and warned about (the optimistic rule counts them as hits).

With ``post_process`` (utils.engine.retrieval.renormalisation: dual softmax, QB-Norm) the results also hold the metrics
after each re-normalisation under "post_processed", beside the raw ones; QB-Norm's query bank (``query_bank``,
a dataset whose captions are encoded like the test captions) is scored against the same kept videos. With
``pairs`` (--pairs_json) they hold the counterfactual pairs' text / video / group scores under "pairs".
"""
from __future__ import annotations

import time
from typing import Any, Dict, Sequence

import torch

from utils.engine.retrieval.metrics import format_metrics, retrieval_metrics, similarity_matrix, tie_warning
from utils.engine.retrieval.pair_metrics import pair_scores
from utils.engine.retrieval.renormalisation import describe, post_processed_metrics
from utils.engine.retrieval.report import write_retrieval_report
from utils.engine.runtime.distributed import DistContext
from utils.engine.runtime.log import get_logger
from utils.engine.runtime.precision import Precision
from utils.engine.runtime.sharded_encoding import check_finite, check_order, encode_shard
from utils.engine.training.checkpoint import save_atomic


def warn_of_ties(metrics: Dict[str, Dict[str, Any]], what: str) -> None:
    """Log metrics.tie_warning's line when queries of ``metrics`` tie with their correct item."""
    warning = tie_warning(metrics, what)
    if warning:
        get_logger().warning(warning)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, ctx: DistContext, batch_size: int, num_workers: int,
             precision: Precision, split: str, save_similarity: str | None = None,
             block_size: int = 1024, post_process: Dict[str, Dict[str, Any]] | None = None,
             query_bank=None, report_dir: str | None = None,
             pairs: Sequence[Dict[str, Any]] | None = None) -> Dict[str, Any]:
    """Retrieval metrics of ``model`` on ``dataset`` (see the module docstring). The same dict on every rank.
    ``post_process``: {method: parameters} (renormalisation.methods_from_args); ``query_bank``: a dataset with
    ``text_view()`` and ``captions``, needed by "qb_norm"; ``report_dir``: write the rank histogram and the
    worst queries there (utils.engine.retrieval.report, main rank); ``pairs``: the entries of a pairs.json
    ({"task", "videos": [a, b], ...}): the results also hold "pairs", the Winoground scores per task of those
    whose videos were evaluated (utils.engine.retrieval.pair_metrics.pair_scores)."""
    log = get_logger()
    was_training = model.training
    model.eval()
    start = time.time()
    device = ctx.device

    def encode_texts(source, desc):
        encoded = encode_shard(source.text_view(), lambda b: model.encode_text(b["text"].to(device)), (),
                                "caption_index", ctx, batch_size, num_workers, precision, desc)
        check_order(encoded["caption_index"], len(encoded["feats"]), desc)
        return encoded

    texts = encode_texts(dataset, f"eval {split} texts")
    videos = encode_shard(dataset.video_view(),
                           lambda b: model.encode_video(b["video"].to(device), b["video_mask"].to(device)),
                           ("valid",), "video_index", ctx, batch_size, num_workers, precision,
                           f"eval {split} videos")
    encode_seconds = time.time() - start
    num_videos = len(videos["feats"])
    check_order(videos["video_index"], num_videos, f"{split} videos")

    caption_to_video = torch.as_tensor(dataset.caption_to_video, dtype=torch.long, device=device)
    valid = videos["valid"].bool()
    invalid_ids = [dataset.video_ids[i] for i in torch.nonzero(~valid).flatten().tolist()]
    kept_captions = valid[caption_to_video]
    new_video_index = torch.cumsum(valid.long(), 0) - 1
    text_feats = texts["feats"][kept_captions]
    video_feats = videos["feats"][valid]
    caption_to_video = new_video_index[caption_to_video[kept_captions]]
    if invalid_ids:
        log.warning(f"{split}: {len(invalid_ids)} of {num_videos} videos could not be decoded and are left out "
                    f"with their {int((~kept_captions).sum())} captions: {invalid_ids[:10]}")
    if len(video_feats) == 0:
        raise ValueError(f"no {split} video could be decoded; check --features_path")
    check_finite(video_feats, [v for v, ok in zip(dataset.video_ids, valid.tolist()) if ok], "video", split)
    check_finite(text_feats, [c for c, ok in zip(dataset.captions, kept_captions.tolist()) if ok], "caption",
                  split)

    metrics = retrieval_metrics(text_feats, video_feats, caption_to_video, block_size=block_size)
    results = {"split": split, **metrics,
               "num_videos": int(len(video_feats)), "num_captions": int(len(text_feats)),
               "invalid_videos": len(invalid_ids), "dropped_captions": int((~kept_captions).sum()),
               "invalid_video_ids": invalid_ids, "multi_caption": bool(len(text_feats) > len(video_feats)),
               "encode_seconds": encode_seconds, "total_seconds": time.time() - start}
    log.info(f"{split} retrieval ({results['num_captions']} captions, {results['num_videos']} videos, "
             f"{encode_seconds:.1f}s to encode):\n{format_metrics(metrics)}")
    warn_of_ties(metrics, f"{split} retrieval")
    bank_sim = None
    if post_process and "qb_norm" in post_process:
        bank_feats = encode_texts(query_bank, f"eval {split} query bank")["feats"]
        check_finite(bank_feats, query_bank.captions, "query bank caption", split)
        bank_sim = similarity_matrix(bank_feats, video_feats, block_size=block_size).cpu()
    if post_process or save_similarity or report_dir or pairs is not None:
        sim = similarity_matrix(text_feats, video_feats, block_size=block_size).cpu()
    if post_process:
        results["post_processed"] = post_processed_metrics(sim, caption_to_video.cpu(), post_process, bank_sim)
        log.info(f"{split} retrieval, {describe(results['post_processed'])}")
        for method, result in results["post_processed"].items():
            directions = {k: v for k, v in result.items() if isinstance(v, dict)}
            warn_of_ties(directions, f"{split} retrieval after {method}")
    kept_video_ids = [v for v, ok in zip(dataset.video_ids, valid.tolist()) if ok]
    kept_caption_list = [c for c, ok in zip(dataset.captions, kept_captions.tolist()) if ok]
    if pairs is not None:
        evaluated = set(kept_video_ids)
        results["pairs"] = pair_scores(sim, caption_to_video.cpu(), kept_video_ids,
                                       [pair for pair in pairs if set(pair["videos"]) <= evaluated])
        log.info(f"{split} pair scores (text / video / group): " + "; ".join(
            f"{task} {e['text_score']:.1f} / {e['video_score']:.1f} / {e['group_score']:.1f} ({e['pairs']} pairs)"
            for task, e in results["pairs"].items()))
    if report_dir and ctx.is_main:
        written = write_retrieval_report(report_dir, split, sim, caption_to_video.cpu(), kept_video_ids,
                                         kept_caption_list)
        log.info(f"{split} retrieval report: {', '.join(str(p) for p in written)}")
    if save_similarity and ctx.is_main:
        saved = {"similarity": sim, "caption_to_video": caption_to_video.cpu(), "video_ids": kept_video_ids,
                 "captions": kept_caption_list}
        if bank_sim is not None:
            saved["query_bank_similarity"] = bank_sim
        save_atomic(saved, save_similarity)
    model.train(was_training)
    return results
