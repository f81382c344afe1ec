"""The training step of --task recognition, the counterpart of retrieval.step.ContrastiveStep: the module the Trainer
wraps in DDP. Every step encodes the class texts through the model's text tower (with its text prompts, which
train) and the batch's videos, the prompts generated once for both, and returns the cross-entropy of the global
batch over all classes (models.ClassificationLoss: logits = exp(logit_scale) * cosine similarity)."""
from __future__ import annotations

import torch

from models.loss import ClassificationLoss
from utils.engine.runtime.precision import Precision


class ClassificationStep(torch.nn.Module):
    """forward(video [b, T, 3, H, W], video_mask [b, T], label int64 [b]) -> scalar loss of the global batch;
    the class texts are `class_tokens` (int64 [C, L], on the model's device)."""

    INPUTS = ("video", "video_mask", "label")  # the batch entries forward takes, in order

    def __init__(self, model: torch.nn.Module, precision: Precision, class_tokens: torch.Tensor):
        super().__init__()
        self.model, self.precision, self.loss = model, precision, ClassificationLoss(gather=True)
        self.register_buffer("class_tokens", class_tokens, persistent=False)

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            class_features, video_features, logit_scale = self.model(self.class_tokens, video, video_mask)
        return self.loss(video_features.float(), class_features.float(), logit_scale, label)
