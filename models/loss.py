"""The similarity of text and video features and the losses trained on it (MODEL.md section 6).

`ContrastiveLoss` (retrieval) gathers the features of every process first (when torch.distributed is initialised
with more than one process), so the loss is the one of the global batch; the gradient flows through this
process's own slice only (see `all_gather_with_grad`). `ClassificationLoss` (action recognition) is the
cross-entropy over class logits of the global batch in the same way.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def cosine_similarity(text_features: torch.Tensor, video_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity [Nt, Nv] (float32) of raw features [Nt, E] and [Nv, E]."""
    return F.normalize(text_features.float(), dim=-1) @ F.normalize(video_features.float(), dim=-1).t()


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [b, ...] of every process along dim 0 -> [world * b, ...], in rank order (``x`` itself
    in a single process).

    The other processes' slices are constants; the gradient flows through this process's own slice only. Every
    process must pass the same shape. (With a loss that is identical on all processes, DDP's gradient AVERAGE
    then equals 1/world of the full-batch gradient; the trainer multiplies the loss by world to compensate.)
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE: the mean of the text->video and video->text cross-entropies of
    logit_scale * cosine similarity, pair i matching pair i, over the batch gathered from every process.

    forward(text_features [b, E], video_features [b, E], logit_scale (scalar, already exponentiated)) -> scalar,
    computed in float32.
    """

    def __init__(self, gather: bool = True):
        super().__init__()
        self.gather = gather

    def forward(self, text_features: torch.Tensor, video_features: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        if text_features.shape[0] != video_features.shape[0]:
            raise ValueError(f"{text_features.shape[0]} texts and {video_features.shape[0]} videos: the loss needs "
                             "matching pairs")
        if self.gather:  # every process computes the same loss: a trained logit scale's gradient counts once
            text_features, video_features = all_gather_with_grad(text_features), all_gather_with_grad(video_features)
            logit_scale = shared_across_processes(logit_scale)
        logits = logit_scale.float() * cosine_similarity(text_features, video_features)
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


class _DividedGradient(torch.autograd.Function):
    """Identity forward; the gradient divided by `parts` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, parts: int) -> torch.Tensor:
        ctx.parts = parts
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad / ctx.parts, None


def shared_across_processes(x: torch.Tensor) -> torch.Tensor:
    """``x``, which every process computes identically (the class text features), with its gradient divided by
    the number of processes: each process's backward of the global-batch loss yields the WHOLE gradient through
    ``x``, so after the trainer's factor world and DDP's average it counts once (``x`` itself in one process)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return x
    return _DividedGradient.apply(x, dist.get_world_size())


def class_logits(video_features: torch.Tensor, class_features: torch.Tensor,
                 logit_scale: torch.Tensor) -> torch.Tensor:
    """logit_scale * cosine similarity of raw video features [b, E] and class text features [C, E] -> [b, C]
    (float32)."""
    return logit_scale.float() * cosine_similarity(video_features, class_features)


class ClassificationLoss(nn.Module):
    """Cross-entropy over the class logits (``class_logits``, the temperature being CLIP's logit scale) of the
    batch gathered from every process.

    forward(video_features [b, E], class_features [C, E], logit_scale (scalar, already exponentiated),
    labels int64 [b]) -> scalar, computed in float32.
    """

    def __init__(self, gather: bool = True):
        super().__init__()
        self.gather = gather

    def forward(self, video_features: torch.Tensor, class_features: torch.Tensor, logit_scale: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        if video_features.shape[0] != labels.shape[0]:
            raise ValueError(f"{video_features.shape[0]} videos and {labels.shape[0]} labels")
        if self.gather:
            video_features, labels = all_gather_with_grad(video_features), all_gather_with_grad(labels)
            class_features, logit_scale = shared_across_processes(class_features), shared_across_processes(logit_scale)
        return F.cross_entropy(class_logits(video_features, class_features, logit_scale), labels)
