"""Action-recognition metrics of class scores: top-1 and top-5 accuracy, mean class accuracy, the confusion
matrix. Ties go to the lower class index (a stable descending sort), so equal scores never count as a hit by
chance of the sort; how many videos tie with their class (another class scores exactly the same) is counted
("tied"), as the index order then decides."""
from __future__ import annotations

from typing import Any, Dict

import torch


def ranked_classes(scores: torch.Tensor) -> torch.Tensor:
    """Class indices by descending score, ties in index order: int64 [N, C] from scores [N, C]."""
    return torch.sort(scores.float(), dim=1, descending=True, stable=True).indices


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [C, C]: entry [true, predicted] counts the videos of class `true` predicted as `predicted`."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def recognition_metrics(scores: torch.Tensor, labels: torch.Tensor) -> Dict[str, Any]:
    """Metrics of scores [N, C] (any monotone score: logits, cosine similarities) against labels int64 [N].

    top1 / top5: % of videos whose class is the best / among the 5 best scored (all C when C < 5: 100%);
    mean_class_accuracy: the mean over the classes that have videos here of their top-1 accuracy (%);
    count: N; tied: the videos whose class's score another class scores exactly; per_class_accuracy: [C] floats
    (None for a class without videos); confusion: int64 [C, C]."""
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"scores must be [N, C] and labels [N], got {list(scores.shape)} and {list(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("no video to score")
    num_classes = scores.shape[1]
    ranked = ranked_classes(scores)
    labels = labels.long().to(ranked.device)
    hits = ranked[:, :5] == labels[:, None]
    own = scores.float().gather(1, labels[:, None].to(scores.device))
    tied = ((scores.float() == own).sum(1) > 1) & torch.isfinite(own[:, 0])
    confusion = confusion_matrix(ranked[:, 0], labels, num_classes)
    per_class_total = confusion.sum(dim=1)
    present = per_class_total > 0
    per_class = confusion.diagonal().double() / per_class_total.clamp(min=1)
    return {"top1": 100.0 * hits[:, 0].double().mean().item(), "top5": 100.0 * hits.any(1).double().mean().item(),
            "mean_class_accuracy": 100.0 * per_class[present].mean().item(), "count": len(labels),
            "tied": int(tied.sum()),
            "per_class_accuracy": [100.0 * float(a) if p else None for a, p in zip(per_class, present.tolist())],
            "confusion": confusion}
