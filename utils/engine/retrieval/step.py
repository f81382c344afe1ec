"""The training step of --task retrieval: the module the Trainer wraps in DDP. The model's forward (text and video
features, the logit scale) and models.ContrastiveLoss on the batch gathered from every process."""
from __future__ import annotations

import torch

from models import ContrastiveLoss
from utils.engine.runtime.precision import Precision
from utils.engine.training.gradient_cache import FeatureGradients, surrogate_loss


class ContrastiveStep(torch.nn.Module):
    """The module DDP wraps: the model's forward (under autocast), then the loss of the global batch (float32).

    forward(text [b, L], video [b, T, 3, H, W], video_mask [b, T]) -> scalar loss of the global batch; with
    ``feature_grads`` (gradient caching, utils.engine.training.gradient_cache) the surrogate scalar of a
    micro-batch instead.
    """

    INPUTS = ("text", "video", "video_mask")  # the batch entries forward takes, in order
    GRADIENT_CACHE = True  # --micro_batch_size: features() and loss() split for utils.engine.training.gradient_cache

    def __init__(self, model: torch.nn.Module, precision: Precision):
        super().__init__()
        self.model, self.precision, self.loss = model, precision, ContrastiveLoss(gather=True)

    def features(self, text: torch.Tensor, video: torch.Tensor, video_mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(text features [b, E], video features [b, E], logit scale), features in float32."""
        with self.precision.autocast():
            text_features, video_features, logit_scale = self.model(text, video, video_mask)
        return text_features.float(), video_features.float(), logit_scale

    def forward(self, text: torch.Tensor, video: torch.Tensor, video_mask: torch.Tensor,
                feature_grads: FeatureGradients | None = None) -> torch.Tensor:
        features = self.features(text, video, video_mask)
        return self.loss(*features) if feature_grads is None else surrogate_loss(*features, feature_grads)
