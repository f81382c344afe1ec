"""--deterministic: deterministic kernels for the whole run (torch's global switches, restored afterwards).

Inside ``deterministic_mode(True)``: ``torch.use_deterministic_algorithms(True)`` (every op takes a
deterministic kernel, or raises a RuntimeError naming itself where it has none), cuDNN deterministic with its
autotuner (``benchmark``) off, and cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set, which
cuBLAS reads when the process first uses it). Same seed + same machine + same thread count + same flags then
give the same numbers on a GPU too. On the CPU the default kernels of this code are already run-to-run
deterministic (tests/test_determinism.py); the mode costs nothing measurable there. On a GPU it costs the
non-deterministic fast paths (atomics in scatter/index backward, cuDNN's autotuned algorithms): typically a few
to some tens of percent of step time.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Deterministic kernels inside the block when ``enabled`` (the module docstring); the previous global
    settings are restored on exit. A no-op when not ``enabled``."""
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[1], previous[2]
