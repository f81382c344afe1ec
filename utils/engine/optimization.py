"""AdamW parameter groups and the warm-up + cosine learning-rate schedule of the released recipe.

Groups (empty ones are dropped), each carrying a "name":
  new_decay / new_no_decay     parameters STOP adds (prompts, prompt generator, temporal module, adapters): lr
  clip_decay / clip_no_decay   CLIP's own parameters, only present with --no-freeze_clip: lr * coef_lr
Weight decay (``--wd_exclude``):
  "bias" (default, as released): every trainable tensor is decayed except biases (names ending in "bias",
      e.g. ``in_proj_bias``). The released code thereby also decays prompt embeddings, PReLU slopes and
      LayerNorm weights (its exclusion list names ``LayerNorm.weight``, which CLIP-style ``ln_*`` modules never
      match).
  "bias_and_1d": additionally exempts every 1-D tensor (LayerNorm weights, PReLU slopes), the usual practice
      elsewhere. Prompt embeddings are matrices and stay decayed in both modes.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List

import torch

ADAMW_BETAS = (0.9, 0.98)
ADAMW_EPS = 1e-6


def _decayed(name: str, param: torch.nn.Parameter, wd_exclude: str) -> bool:
    if name.rsplit(".", 1)[-1].endswith("bias"):
        return False
    if wd_exclude == "bias_and_1d" and param.ndim <= 1:
        return False
    if wd_exclude not in ("bias", "bias_and_1d"):
        raise ValueError(f"unknown wd_exclude {wd_exclude!r}")
    return True


def param_groups(model: torch.nn.Module, pretrained: Iterable[torch.Tensor], lr: float, coef_lr: float,
                 weight_decay: float, wd_exclude: str = "bias") -> List[Dict]:
    """AdamW groups over the trainable parameters of ``model``; ``pretrained`` are CLIP's own tensors."""
    pretrained_ids = {id(p) for p in pretrained}
    groups: Dict[str, Dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        origin = "clip" if id(param) in pretrained_ids else "new"
        decay = _decayed(name, param, wd_exclude)
        key = f"{origin}_{'decay' if decay else 'no_decay'}"
        group = groups.setdefault(key, {"name": key, "params": [], "param_names": [],
                                        "lr": lr * (coef_lr if origin == "clip" else 1.0),
                                        "weight_decay": weight_decay if decay else 0.0})
        group["params"].append(param)
        group["param_names"].append(name)
    order = ["new_decay", "new_no_decay", "clip_decay", "clip_no_decay"]
    return [groups[k] for k in order if k in groups]


def build_optimizer(groups: List[Dict]) -> torch.optim.AdamW:
    """AdamW with the released betas (0.9, 0.98) and eps 1e-6; learning rates and decay come from the groups."""
    if not groups:
        raise SystemExit("error: the model has no trainable parameters; nothing to train "
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


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_proportion: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up over ``round(warmup_proportion * total_steps)`` steps, then cosine to 0 (see ``WarmupCosine``)."""
    schedule = WarmupCosine(total_steps, int(round(warmup_proportion * total_steps)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
