"""What a training run was started on, beyond its flags: the size, modification time and SHA-256 of its
annotation files and of its CLIP weights, recorded in hparams.json ("data_fingerprint") when the run starts, and
checked by --resume, which compares flag VALUES: a training CSV shortened in place, or another CLIP file at the
same path, would otherwise resume silently on another step plan or another backbone.

The annotation files are the files the flags of ANNOTATION_FLAGS name; a flag naming a folder (--data_path of the
folder datasets) stands for the files directly in it, videos excepted (the videos themselves are not hashed).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

from dataloaders.sources import VIDEO_EXTENSIONS
from models.clip import clip_weights_file, resolve_clip_path
from models.file_digest import cached_sha256_of, sha256_of
from utils.engine.run.folder import ResumeConflictError, resume_folder

ANNOTATION_FLAGS = ("data_path", "train_csv", "val_csv", "test_csv", "class_list")
FINGERPRINT_KEY = "data_fingerprint"  # its entry in hparams.json


def file_identity(path: Path, digest: Callable[[Path], str] = sha256_of) -> dict[str, Any]:
    """{"size" (bytes), "mtime" (seconds), "sha256"} of the file at `path` (`digest`: how its SHA-256 is had)."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest(path)}


def _annotation_files(args: argparse.Namespace) -> list[Path]:
    files = []
    for flag in ANNOTATION_FLAGS:
        value = getattr(args, flag, None)
        path = Path(value) if value else None
        if path is not None and path.is_file():
            files.append(path)
        elif path is not None and path.is_dir():
            files += sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() not in VIDEO_EXTENSIONS)
    return list(dict.fromkeys(files))


def data_fingerprint(args: argparse.Namespace) -> dict[str, dict[str, dict[str, Any]]]:
    """{"annotations": {path: file_identity}, "clip": {path: file_identity}} of the files the flags name (a
    missing file is left out: reading it fails later with its own message; the CLIP's hash is the one its
    checksum check read, cached_sha256_of)."""
    clip = clip_weights_file(resolve_clip_path(args.pretrained_clip_name, args.pretrained_dir))
    return {"annotations": {str(path): file_identity(path) for path in _annotation_files(args)},
            "clip": {str(clip): file_identity(clip, cached_sha256_of)} if clip.is_file() else {}}


def _change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> str | None:
    """How a file's identity changed, in words; None when its content is the same (a touched file is the same)."""
    if new is None:
        return "it is gone"
    if old is None:
        return "it is new"
    if old.get("size") != new["size"]:
        return f"{old.get('size')} -> {new['size']} bytes"
    if old.get("sha256") != new["sha256"]:
        return "the same size, another SHA-256"
    return None


class Fingerprint(NamedTuple):
    """The fingerprint to record for this run, and the warning to log when a resumed run had none."""

    record: dict[str, dict[str, dict[str, Any]]]
    warning: str | None


def checked_fingerprint(args: argparse.Namespace) -> Fingerprint:
    """The fingerprint of the files of `args`; with --resume, checked against the one in its folder's
    hparams.json: ResumeConflictError naming the first file whose content changed. A run folder written before
    fingerprints were recorded resumes with a warning."""
    record = data_fingerprint(args)
    if not args.resume:
        return Fingerprint(record, None)
    hparams = resume_folder(args.resume) / "hparams.json"
    try:
        recorded = json.loads(hparams.read_text()).get(FINGERPRINT_KEY) if hparams.is_file() else None
    except (OSError, ValueError, AttributeError):
        recorded = None
    if not isinstance(recorded, dict) or set(recorded) != set(record):
        return Fingerprint(record, f"--resume {args.resume}: {hparams} records no fingerprint of the annotation "
                                   f"files and the CLIP (a run of an older version), so a change of their content "
                                   f"since the run started cannot be detected")
    for kind, what in (("annotations", "an annotation file"), ("clip", "the CLIP weights")):
        for path in sorted(set(recorded[kind]) | set(record[kind])):
            change = _change(recorded[kind].get(path), record[kind].get(path))
            if change:
                raise ResumeConflictError(
                    f"--resume {args.resume}: {what} {path} changed since the run started ({change}), so the run "
                    f"would continue on other {'data (another step plan)' if kind == 'annotations' else 'weights'}; "
                    f"restore the file, or start a new run in another --output_dir")
    return Fingerprint(record, None)
