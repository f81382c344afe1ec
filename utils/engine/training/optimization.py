"""AdamW and the warm-up + cosine learning-rate schedule of the released recipe. The parameter groups (which
tensors train at which learning rate, which are decayed) are the model's: ``VideoTextModel.param_groups``."""
from __future__ import annotations

import math
from typing import Dict, List

import torch

ADAMW_BETAS = (0.9, 0.98)
ADAMW_EPS = 1e-6


def build_optimizer(groups: List[Dict]) -> torch.optim.AdamW:
    """AdamW with the released betas (0.9, 0.98) and eps 1e-6; learning rates and decay come from the groups."""
    if not groups:
        raise ValueError("the model has no trainable parameters; nothing to train "
                         "(use --do_eval alone to evaluate a frozen model)")
    return torch.optim.AdamW(groups, betas=ADAMW_BETAS, eps=ADAMW_EPS)


class WarmupCosine:
    """Learning-rate multiplier at optimizer step ``t`` (0-based): ``t / warmup`` during the first ``warmup``
    steps, then ``0.5 * (1 + cos(pi * (t - warmup) / (total - warmup)))``, reaching 0 at ``t = total``."""

    def __init__(self, total_steps: int, warmup_steps: int):
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}), total >= 1")
        self.total_steps, self.warmup_steps = total_steps, warmup_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_proportion: float,
                    start_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up over ``round(warmup_proportion * total_steps)`` steps, then cosine to 0 (see ``WarmupCosine``),
    positioned at optimizer step ``start_step`` (a resume: the groups' ``initial_lr`` are the base rates); the
    groups' lr is set to that step's value."""
    schedule = WarmupCosine(total_steps, int(round(warmup_proportion * total_steps)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule, last_epoch=start_step - 1)
