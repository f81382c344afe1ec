"""Mixed precision: which autocast dtype and whether a gradient scaler is used, per ``--precision`` and device.

  amp   CUDA: float16 autocast + GradScaler (the released recipe). CPU: float16 autocast is not worthwhile, so
        it falls back to bfloat16 autocast (logged), without a scaler.
  bf16  bfloat16 autocast, no scaler (CUDA needs a GPU with bf16 support).
  fp32  no autocast.
Trainable parameters, optimizer states and the contrastive loss stay float32 in every mode.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

from utils.run_log import get_logger


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
    if name == "fp32":
        return Precision(name, device.type, None)
    if name == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise SystemExit("error: --precision bf16 needs a GPU with bfloat16 support; use --precision amp")
        return Precision(name, device.type, torch.bfloat16)
    if name == "amp":
        if device.type == "cuda":
            return Precision(name, device.type, torch.float16)
        get_logger().info("--precision amp on the CPU: using bfloat16 autocast without a loss scaler instead of "
                          "float16 (pass --precision fp32 for full precision)")
        return Precision(name, device.type, torch.bfloat16)
    raise ValueError(f"unknown precision {name!r}")
