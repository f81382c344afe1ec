"""Sharded action-recognition evaluation: every video scored against every class text of the dataset.

The class texts are encoded once (the model's text tower with its prompts), each rank encodes a contiguous
shard of the videos (utils.engine.runtime.sharded_encoding), each of a video's --test_views clips is scored by
the cosine similarity of its feature with every class text feature, and a video's scores are the mean over its
clips (the mean of the logits, as the scale is common). Videos whose file is missing or could not be decoded
are left out and counted (``invalid_videos``); non-finite features stop the evaluation (EvaluationError), as in
retrieval.
"""
from __future__ import annotations

import time
from typing import Any, Dict

import torch

from models.loss import cosine_similarity
from utils.engine.recognition.metrics import ranked_classes, recognition_metrics
from utils.engine.recognition.report import write_recognition_report
from utils.engine.runtime.distributed import DistContext
from utils.engine.runtime.log import get_logger
from utils.engine.runtime.precision import Precision
from utils.engine.runtime.sharded_encoding import check_finite, check_order, encode_shard


@torch.no_grad()
def evaluate_recognition(model: torch.nn.Module, dataset, ctx: DistContext, batch_size: int, num_workers: int,
                         precision: Precision, split: str, report_dir: str | None = None) -> Dict[str, Any]:
    """Recognition metrics of ``model`` on ``dataset`` (a dataloaders.recognition.RecognitionDataset): top1,
    top5, mean_class_accuracy, count (the videos scored), tied (those tied with another class; warned about), the
    same dict on every rank. ``report_dir``: write the confusion matrix PNG, the per-class JSON and the per-video
    predictions there (utils.engine.recognition.report, main rank)."""
    log = get_logger()
    was_training = model.training
    model.eval()
    start, device = time.time(), ctx.device
    with precision.autocast():
        class_features = model.encode_text(dataset.class_tokens().to(device)).float()  # [C, E]
    check_finite(class_features, dataset.class_names, "class text", split)

    def class_scores(batch) -> torch.Tensor:
        """[B, C]: the mean over a video's views of the cosine similarity of view and class features."""
        video, mask = batch["video"].to(device), batch["video_mask"].to(device)  # [B, V, T, 3, R, R], [B, V, T]
        features = model.encode_video(video.flatten(0, 1), mask.flatten(0, 1))  # [B * V, E]
        with torch.autocast(device.type, enabled=False):  # similarities in float32, as in retrieval
            return cosine_similarity(features, class_features).unflatten(0, video.shape[:2]).mean(dim=1)

    encoded = encode_shard(dataset.video_view(), class_scores, ("valid", "label"), "video_index", ctx, batch_size,
                            num_workers, precision, f"eval {split} videos")
    num_videos = len(encoded["feats"])
    check_order(encoded["video_index"], num_videos, f"{split} videos")
    valid = encoded["valid"].bool()
    invalid_ids = [dataset.video_ids[i] for i in torch.nonzero(~valid).flatten().tolist()]
    if invalid_ids:
        log.warning(f"{split}: {len(invalid_ids)} of {num_videos} videos are missing or could not be decoded and "
                    f"are left out: {invalid_ids[:10]}")
    if not bool(valid.any()):
        raise ValueError(f"no {split} video could be decoded; check --features_path")
    scores, labels = encoded["feats"][valid].cpu(), encoded["label"][valid].cpu()
    scored_ids = [v for v, ok in zip(dataset.video_ids, valid.tolist()) if ok]
    check_finite(scores, scored_ids, "video", split)
    metrics = recognition_metrics(scores, labels)
    confusion = metrics.pop("confusion")
    results = {"split": split, **{k: metrics[k] for k in ("top1", "top5", "mean_class_accuracy", "count", "tied")},
               "num_classes": len(dataset.class_names), "classes_with_videos": int((confusion.sum(1) > 0).sum()),
               "views": dataset.views, "invalid_videos": len(invalid_ids), "invalid_video_ids": invalid_ids,
               "total_seconds": time.time() - start}
    log.info(f"{split} recognition ({results['count']} videos, {results['num_classes']} classes, "
             f"{dataset.views} view(s)): top-1 {results['top1']:.2f}  top-5 {results['top5']:.2f}  mean class "
             f"accuracy {results['mean_class_accuracy']:.2f}")
    if results["tied"]:
        log.warning(f"{split} recognition: {results['tied']} of {results['count']} videos tie with their class "
                    f"(another class scores exactly the same): the lower class index wins the tie, so top-1 is not "
                    f"what the scores separate. Check for identical class texts or videos, or weights stored in an "
                    f"integer dtype")
    if report_dir and ctx.is_main:
        written = write_recognition_report(report_dir, split, confusion, dataset.class_names, dataset.class_texts,
                                           scored_ids, labels, ranked_classes(scores)[:, 0])
        log.info(f"{split} recognition report: {', '.join(str(p) for p in written)}")
    model.train(was_training)
    return results
