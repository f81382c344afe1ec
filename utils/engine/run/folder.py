"""The rules of a run folder (main.py's --output_dir): which files make a folder hold a run, refusing such a
folder to a new run or moving its files aside (--overwrite), and checking that a --resume continues the
checkpoint's run (the same flags, except those that do not change it).

A folder is written by one process at a time: the caller holds its FolderLock (utils/engine/run/folder_lock.py)
around claim_output_dir and the run.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch

from models import CheckpointError, ModelConfig
from models.config_fields import resume_free_flags
from utils.engine.runtime.distributed import DistContext
from utils.engine.training.checkpoint import read_resumable_checkpoint

# The files that make a folder hold a run (a new run never writes beside them; see --overwrite, --resume), and
# what --overwrite moves aside with them.
RUN_FILES = ("hparams.json", "ckpt_*.pt", "metrics.jsonl", "eval_results.json", "similarity_*.pt")
MOVED_BY_OVERWRITE = RUN_FILES + ("log.txt", "training_curves.png", "*_post_processed.json", "rank_histogram_*.png",
                                  "worst_queries_*.json")
MOVED_FOLDERS = ("tensorboard",)  # --tensorboard's event files

# Flags that may differ between a run and its --resume declare it beside their definition (models.config_fields:
# a config field's ``resume_free``, or ``resume_free(parser.add_argument(...), reason)``): they do not change what
# is trained or evaluated, only where the output goes, how often it is logged or saved, how fast data is read,
# when this process stops, and the computation of the same function. Every other flag (data, model,
# optimisation, seed, precision) must match the checkpoint's run; three are compared their own way:
RESUME_COMPARED = {
    "batch_size": "the global batch --batch_size x processes must match (another process count is allowed)",
    "device": "the device type (cpu / cuda) must match; cuda:0 and cuda:1 are the same",
    "epochs": "must match; --resume_extend_epochs allows a larger value (the schedule is re-planned)",
}


class RunFolderError(ValueError):
    """An --output_dir that holds another run, given to a new run without --resume or --overwrite."""


class ResumeConflictError(ValueError):
    """A --resume whose flags would change the checkpoint's run; the message names each such flag."""


def run_files(folder: Path, patterns: tuple[str, ...] = RUN_FILES) -> list[Path]:
    """The files of `folder` matching `patterns` (those of a run by default), sorted; [] for a missing folder."""
    return sorted({path for pattern in patterns for path in folder.glob(pattern) if path.is_file()})


def claim_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> str | None:
    """Make `output_dir` ready for a run; the caller holds the folder's lock. A folder without run files, or one
    that `resume` continues, is left as it is (returns None). A folder holding another run raises RunFolderError,
    unless `overwrite`: its run files and log.txt are then moved into a new <output_dir>/previous_run_<date-time>/
    (nothing is deleted) and the return value says what was moved where, for the log."""
    existing = run_files(output_dir)
    if not existing or resume:
        return None
    if not overwrite:
        raise RunFolderError(f"--output_dir {output_dir} holds another run ({', '.join(p.name for p in existing)}); "
                             "continue it with --resume, choose a new folder, or pass --overwrite to move its files "
                             "aside first")
    archive = output_dir / f"previous_run_{time.strftime('%Y%m%d-%H%M%S')}"
    for suffix in range(1, 1000):
        if not archive.exists():
            break
        archive = output_dir / f"previous_run_{time.strftime('%Y%m%d-%H%M%S')}_{suffix}"
    archive.mkdir()
    moved = run_files(output_dir, MOVED_BY_OVERWRITE) + [output_dir / name for name in MOVED_FOLDERS
                                                         if (output_dir / name).is_dir()]
    for path in moved:
        os.replace(path, archive / path.name)
    return f"--overwrite: moved the previous run's {', '.join(p.name for p in moved)} to {archive}"


def resume_folder(resume: str) -> Path:
    """The run folder of --resume: the path itself when it is a folder, else the folder of the checkpoint file."""
    path = Path(resume)
    return path if path.is_dir() else path.parent


def _plain(value: Any) -> Any:
    """Flag values comparable across a save: tuples as lists."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def resume_conflicts(args: argparse.Namespace, payload: dict[str, Any], ctx: DistContext,
                     parser: argparse.ArgumentParser) -> list[str]:
    """The flags of `args` that would change the run saved in `payload` (a resumable checkpoint), each as
    "--flag NEW (the checkpoint's run: OLD)"; [] when the flags continue it. The flags `parser` marks resume-free
    (models.config_fields.resume_free_flags) may differ; RESUME_COMPARED are compared their own way; every
    other flag must equal the saved one (a flag the checkpoint
    predates: its default in `parser`). Raises CheckpointError when the saved model configuration is not
    readable by this version."""
    saved = payload.get("args") or {}
    free = resume_free_flags(parser)
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    conflicts = []
    for name, value in sorted(vars(args).items()):
        if name in free or name in RESUME_COMPARED or name in model_fields:
            continue
        old = saved.get(name, parser.get_default(name))
        if _plain(old) != _plain(value):
            conflicts.append(f"--{name} {value} (the checkpoint's run: {old})")
    try:
        old_config = ModelConfig.from_dict(payload.get("model_config") or
                                           {k: v for k, v in saved.items() if k in model_fields}).to_dict()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"--resume {args.resume}: its model configuration is not readable here ({error})") \
            from None
    new_config = ModelConfig.from_args(args).to_dict()
    for name in sorted(new_config):
        if name not in free and _plain(old_config.get(name)) != _plain(new_config[name]):
            conflicts.append(f"--{name} {new_config[name]} (the checkpoint's run: {old_config.get(name)})")
    old_batch, old_world = saved.get("batch_size"), payload.get("world_size", 1)
    if old_batch is None or old_batch * old_world != args.batch_size * ctx.world_size:
        conflicts.append(f"--batch_size {args.batch_size} x {ctx.world_size} processes = "
                         f"{args.batch_size * ctx.world_size} pairs per step (the checkpoint's run: {old_batch} x "
                         f"{old_world} = {None if old_batch is None else old_batch * old_world})")
    old_device = payload.get("device")
    if old_device is not None and torch.device(old_device).type != ctx.device.type:
        conflicts.append(f"--device {args.device} = {ctx.device} (the checkpoint's run: {saved.get('device')} = "
                         f"{old_device})")
    elif old_device is None and saved.get("device", "auto") != args.device:
        conflicts.append(f"--device {args.device} (the checkpoint's run: {saved.get('device', 'auto')})")
    old_epochs = saved.get("epochs")
    if old_epochs != args.epochs:
        if not args.resume_extend_epochs:
            conflicts.append(f"--epochs {args.epochs} (the checkpoint's run: {old_epochs}; "
                             "--resume_extend_epochs allows a larger value)")
        elif old_epochs is None or args.epochs < old_epochs:
            conflicts.append(f"--epochs {args.epochs} (the checkpoint's run: {old_epochs}; "
                             "--resume_extend_epochs only adds epochs)")
    return conflicts


def read_resume(args: argparse.Namespace, ctx: DistContext, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The resumable checkpoint of --resume (`args.resume`, a ckpt_last.pt or its folder), after checking that
    `args` continue its run (resume_conflicts). Raises CheckpointError for a checkpoint that is not resumable or
    records no flags, ResumeConflictError naming every flag that would change the run."""
    payload = read_resumable_checkpoint(args.resume)
    if not payload.get("args"):
        raise CheckpointError(f"--resume {args.resume}: the checkpoint records no flags (it was not written by "
                              "main.py), so this run cannot be checked against it")
    conflicts = resume_conflicts(args, payload, ctx, parser)
    if conflicts:
        raise ResumeConflictError(f"--resume {args.resume}: these flags would change the run: "
                                  f"{'; '.join(conflicts)}. Resume with the run's flags (its hparams.json), or "
                                  "start a new run in another --output_dir")
    return payload
