"""Mixed precision: one vocabulary (PRECISIONS) for training, evaluation and inference.

  amp   the device's mixed precision: CUDA float16 autocast (+ a gradient scaler when training, the released
        recipe); on the CPU float16 is not worthwhile, so bfloat16 autocast without a scaler (logged)
  fp16  float16 autocast (+ a gradient scaler when training)
  bf16  bfloat16 autocast, no scaler (CUDA needs a GPU with bf16 support)
  fp32  no autocast
Trainable parameters, optimizer states and the contrastive loss stay float32 in every mode.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

from utils.engine.runtime.log import get_logger

PRECISIONS = ("amp", "fp16", "bf16", "fp32")


@dataclass(frozen=True)
class Precision:
    name: str
    device_type: str
    dtype: torch.dtype | None

    @property
    def uses_scaler(self) -> bool:
        return self.dtype is torch.float16

    def autocast(self) -> ContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.uses_scaler else None


def resolve_precision(name: str, device: torch.device) -> Precision:
    """The Precision of `name` (one of PRECISIONS) on `device`; ValueError for an unknown name or bf16 on a GPU
    without bfloat16."""
    if name == "fp32":
        return Precision(name, device.type, None)
    if name == "fp16":
        return Precision(name, device.type, torch.float16)
    if name == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("--precision bf16 needs a GPU with bfloat16 support; use --precision amp")
        return Precision(name, device.type, torch.bfloat16)
    if name == "amp":
        if device.type == "cuda":
            return Precision(name, device.type, torch.float16)
        get_logger().info("--precision amp on the CPU: using bfloat16 autocast without a loss scaler instead of "
                          "float16 (pass --precision fp32 for full precision)")
        return Precision(name, device.type, torch.bfloat16)
    raise ValueError(f"--precision {name!r} is not one of {list(PRECISIONS)}")
