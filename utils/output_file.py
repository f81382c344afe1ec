"""Where a command may write a file it is asked for: never over one of its inputs (or a file of an embedding
store), over an existing file only when asked (`--overwrite`), never over a folder. Checked before any work."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


class OutputFileError(ValueError):
    """An output file that would replace an input, a folder, or an existing file not to be replaced."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether the paths name one file (through links and relative paths); False when either does not exist."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


Protected = Iterable[tuple[str | os.PathLike | None, str]]  # (a path or None, what it is)


def check_output_file(path: str | os.PathLike, flag: str, protected: Protected = (),
                      overwrite: bool | None = None) -> Path:
    """`path` (given as `flag`) if it may be written: OutputFileError when it is one of `protected`'s paths
    ((path or None, what it is), e.g. (args.video, "the --video input"): never replaced), a folder, or an
    existing file and `overwrite` is not True (None: the command has no --overwrite)."""
    path = Path(path)
    for source, what in protected:
        if source is not None and same_file(path, source):
            raise OutputFileError(f"{flag} {path} is {what}; it is never replaced: choose another name")
    if path.is_dir():
        raise OutputFileError(f"{flag} {path} is a folder; name a file")
    if path.exists() and not overwrite:
        raise OutputFileError(f"{flag} {path} exists; choose another name or delete it"
                              + ("" if overwrite is None else " (or pass --overwrite to replace it)"))
    return path
