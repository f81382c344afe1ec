"""Gradient caching (Gao et al., 2021, "Scaling deep contrastive learning batch size under memory limited setup"):
the exact gradient of the contrastive loss of a whole batch with the activation memory of one micro-batch.

One step on a batch of b pairs per process, split into micro-batches of m (``--micro_batch_size``):

1. every micro-batch is encoded WITHOUT a graph; the torch random state (CPU, and CUDA on a GPU) is recorded
   before each, so that its dropout masks can be drawn again;
2. the features [b, E] of the micro-batches become leaf tensors; the loss of the whole contrastive batch
   (gathered across processes, as without caching) and its gradient with respect to those leaves (and the
   logit scale) are computed: a few b x b products, no encoder;
3. every micro-batch is encoded again WITH a graph from its recorded random state (the same masks, so the same
   features) and back-propagated with its slice of the cached feature gradients: the backward of the surrogate
   sum(features * cached gradient), whose parameter gradient is exactly the slice's share of d loss / d params.

The sum over micro-batches is the full-batch gradient (the chain rule, the loss being a function of the
features only), to float rounding. Memory: one micro-batch's activations plus b feature vectors; time: one more
forward of the encoders per step (about +1/3 of a forward-backward step). The random state after the step is
the one after step 1's last micro-batch, so runs are reproducible and ``--resume`` stays exact. There is no state
a forward updates besides the random state (no batch-norm running statistics in CLIP or the prompts), so
encoding twice changes nothing else.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, NamedTuple

import torch


class FeatureGradients(NamedTuple):
    """d (scaled loss) / d (features) of one micro-batch: text [m, E], video [m, E], logit scale [] or None."""
    text: torch.Tensor
    video: torch.Tensor
    logit_scale: torch.Tensor | None


def surrogate_loss(text_features: torch.Tensor, video_features: torch.Tensor, logit_scale: torch.Tensor,
                   grads: FeatureGradients) -> torch.Tensor:
    """A scalar whose gradient with respect to the encoders' parameters is the cached gradients back-propagated
    through these features [m, E] (and through the logit scale when its gradient is given)."""
    value = (text_features.float() * grads.text).sum() + (video_features.float() * grads.video).sum()
    if grads.logit_scale is not None:
        value = value + logit_scale.float() * grads.logit_scale
    return value


def random_state(device: torch.device) -> tuple:
    """The torch generator states a forward on ``device`` draws from: (CPU state, CUDA state or None)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_random_state(state: tuple, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def gradient_cached_backward(
        features: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]],
        loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        surrogate: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, FeatureGradients], torch.Tensor],
        text: torch.Tensor, video: torch.Tensor, video_mask: torch.Tensor, micro_batch_size: int,
        loss_scale: float, backward: Callable[[torch.Tensor], None],
        no_sync: Callable[[], ContextManager] | None = None, train_logit_scale: bool = False) -> torch.Tensor:
    """One gradient-cached forward/backward of a batch text [b, L], video [b, T, 3, H, W], video_mask [b, T];
    returns the (unscaled) loss of the whole contrastive batch, detached. Gradients are accumulated into the
    parameters' ``.grad`` as ``backward(loss_scale * loss)`` of the unsplit batch would.

    features(text, video, mask) -> (text features [m, E], video features [m, E], logit scale []) of a micro-batch;
    loss(text features, video features, logit scale) -> the contrastive loss of the batch (gathered across
    processes); surrogate(text, video, mask, FeatureGradients) -> the scalar to back-propagate for a micro-batch
    (the DDP-wrapped module's forward, so that DDP sees the re-run); backward(scalar) back-propagates (through a
    loss scaler where there is one); no_sync() (DDP) is entered for every re-run but the last, so that gradients
    are all-reduced once. train_logit_scale: the logit scale is trained (its gradient joins the last re-run).
    """
    b = text.shape[0]
    if micro_batch_size < 1 or b % micro_batch_size:
        raise ValueError(f"--micro_batch_size {micro_batch_size} must divide the batch of {b} pairs per process "
                         "(--batch_size)")
    chunks = [slice(start, start + micro_batch_size) for start in range(0, b, micro_batch_size)]
    device = video.device
    states, text_parts, video_parts = [], [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(random_state(device))
            text_features, video_features, logit_scale = features(text[chunk], video[chunk], video_mask[chunk])
            text_parts.append(text_features.float())
            video_parts.append(video_features.float())
    after_encoding = random_state(device)
    text_leaf = torch.cat(text_parts).requires_grad_(True)
    video_leaf = torch.cat(video_parts).requires_grad_(True)
    scale_leaf = logit_scale.detach().float().requires_grad_(train_logit_scale)
    full_loss = loss(text_leaf, video_leaf, scale_leaf)
    inputs = [text_leaf, video_leaf] + ([scale_leaf] if train_logit_scale else [])
    grads = torch.autograd.grad(full_loss * loss_scale, inputs)
    scale_grad = grads[2] if train_logit_scale else None
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        set_random_state(states[i], device)
        cached = FeatureGradients(grads[0][chunk], grads[1][chunk], scale_grad if last else None)
        with contextlib.nullcontext() if last or no_sync is None else no_sync():
            backward(surrogate(text[chunk], video[chunk], video_mask[chunk], cached))
    set_random_state(after_encoding, device)
    return full_loss.detach()
