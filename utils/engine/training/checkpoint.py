"""Training checkpoints: what the run learned and where it stood, without the frozen CLIP.

A checkpoint is a ``torch.save`` dict (loadable with ``weights_only=True``):
  format        models.checkpoints.FORMAT ("stop-checkpoint/1")
  model         ``model.learned_state_dict()``: every model tensor that is not a frozen CLIP weight (trainable
                parameters, plus parameters that are randomly initialised but receive no gradient, so a reload
                rebuilds the same model); names are ``model.state_dict()`` keys
  model_config  ``model.config.to_dict()``: the configuration, every hyperparameter included (models.ModelConfig)
  optimizer, scheduler, scaler   their state dicts (scaler None without fp16 loss scaling)
  rng           one entry per rank: Python, NumPy, torch CPU and (when present) CUDA generator states
  global_step, epoch, step_in_epoch   the NEXT optimizer step to run is (epoch, step_in_epoch)
  best_value, best_epoch   the best evaluation so far (val t2v R@1) and its epoch
  args          the run's arguments (plain JSON-able values)
``ckpt_best.pt`` holds the same model tensors without optimizer/scheduler/scaler/rng (it is for evaluation).
Writes are atomic: a temporary file in the same directory, fsync, then ``os.replace``; a process killed while
writing leaves only that temporary file (``.ckpt_last.pt.<pid>.<random>.tmp``), which ``remove_stale_temporaries``
deletes at the start of the next run in the folder. No payload with a NaN or infinite tensor is ever written:
``non_finite_tensors`` lists them and the Trainer refuses to save (utils.engine.training.trainer).
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import torch

from models.checkpoints import CheckpointError, is_checkpoint, read_checkpoint_file, resolve_checkpoint_path
from utils.atomic_file import write_atomic


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


def _tensors(value: Any, name: str) -> Iterator[Tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{name}.{i}")


def non_finite_tensors(payload: Dict[str, Any], keys: Tuple[str, ...] = ("model", "optimizer")) -> List[str]:
    """Names (``model.<tensor>``, ``optimizer.state.<i>.exp_avg`` ...) of the floating-point tensors under
    ``payload[key]`` that hold a NaN or inf (one device synchronisation per device, not per tensor)."""
    by_device: Dict[torch.device, List[Tuple[str, torch.Tensor]]] = {}
    for key in keys:
        for name, tensor in _tensors(payload.get(key), key):
            if tensor.is_floating_point() or tensor.is_complex():
                by_device.setdefault(tensor.device, []).append((name, tensor))
    bad = []
    for named in by_device.values():
        finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
        bad += [name for (name, _), ok in zip(named, finite) if not ok]
    return bad


# utils.atomic_file.write_atomic's temporary files: .<name>.<pid>.<8 hex digits>.tmp
_TEMPORARY = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")


def remove_stale_temporaries(folder: str | os.PathLike) -> List[str]:
    """Delete the temporary files write_atomic left in ``folder`` when its process was killed mid-write (the
    caller must be the folder's only writer: main.py holds its lock); returns their names."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if _TEMPORARY.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path.name)
    return sorted(removed)


def read_resumable_checkpoint(path: str | os.PathLike) -> Dict[str, Any]:
    """A checkpoint of ours with its training state (a ckpt_last.pt, or a run folder holding one);
    FileNotFoundError / CheckpointError otherwise."""
    path = resolve_checkpoint_path(path, names=("ckpt_last.pt",))
    payload = read_checkpoint_file(path)
    if not is_checkpoint(payload):
        raise CheckpointError(f"{path}: not a checkpoint written by this code")
    for key in ("optimizer", "scheduler", "rng"):
        if payload.get(key) is None:
            raise CheckpointError(f"{path}: not a resumable checkpoint (no {key} state; ckpt_best.pt holds weights "
                                  "only, use ckpt_last.pt)")
    return payload
