"""Training checkpoints: what the run learned and where it stood, without the frozen CLIP.

A checkpoint is a ``torch.save`` dict (loadable with ``weights_only=True``):
  format        "stop-checkpoint/1"
  model         {name: tensor} for every model tensor that is not a frozen CLIP weight (trainable parameters,
                plus parameters that are randomly initialised but receive no gradient, so a reload rebuilds the
                same model); names are ``model.state_dict()`` keys
  optimizer, scheduler, scaler   their state dicts (scaler None without fp16 loss scaling)
  rng           one entry per rank: Python, NumPy, torch CPU and (when present) CUDA generator states
  global_step, epoch, step_in_epoch   the NEXT optimizer step to run is (epoch, step_in_epoch)
  best          {"metric": name, "value": float, "epoch": int} of the best evaluation so far
  args          the run's arguments (plain JSON-able values)
``ckpt_best.pt`` holds the same model tensors without optimizer/scheduler/scaler/rng (it is for evaluation).
Writes are atomic: a temporary file in the same directory, fsync, then ``os.replace``.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, Iterable

import numpy as np
import torch

from utils.atomic_file import write_atomic

FORMAT = "stop-checkpoint/1"


def learned_state(model: torch.nn.Module, frozen_pretrained: Iterable[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``model.state_dict()`` entries except the frozen pretrained tensors (those in ``frozen_pretrained`` that do
    not require grad), detached and on the CPU."""
    frozen = {id(t) for t in frozen_pretrained if not t.requires_grad}
    return {name: value.detach().cpu().clone() for name, value in model.state_dict(keep_vars=True).items()
            if id(value) not in frozen}


def load_learned_state(model: torch.nn.Module, state: Dict[str, torch.Tensor],
                       frozen_pretrained: Iterable[torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; every model tensor that is not frozen-pretrained must be in it."""
    expected = set(learned_state(model, frozen_pretrained))
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise SystemExit(f"error: {source} does not match the model built from these flags: "
                         f"{len(missing)} missing tensors (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]}). Use the same model flags as the run that wrote it.")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    wrong = [k for k, v in state.items() if v.shape != shapes[k]]
    if wrong:
        raise SystemExit(f"error: {source}: shape mismatch for {wrong[:3]} (checkpoint {state[wrong[0]].shape}, "
                         f"model {shapes[wrong[0]]}); use the same model flags and backbone as that run.")
    model.load_state_dict(state, strict=False)


def capture_rng_state() -> Dict[str, Any]:
    """Generator states of Python, NumPy, torch and CUDA (this device), as tensors/plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_atomic(payload: Dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename over it (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda file: torch.save(payload, file))


def load_checkpoint(path: str | os.PathLike, what: str) -> Dict[str, Any]:
    """Read a checkpoint of ours; ``what`` names the flag for error messages (e.g. "--resume")."""
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt_last.pt"
    if not path.is_file():
        raise SystemExit(f"error: {what}: checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one and why
        raise SystemExit(f"error: {what}: cannot read {path} as a checkpoint ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    return payload


def is_our_checkpoint(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("format") == FORMAT
