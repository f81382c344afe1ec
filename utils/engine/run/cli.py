"""What the command-line entry points (main.py, infer.py) share to end in one `error: ...` line: an argument
parser whose flag errors are a typed exception (FlagError; the entry point prints it as that line), the errors
printed that way (USER_ERRORS, errors_as_one_line), and the one-line form of a library error."""
from __future__ import annotations

import argparse
import contextlib
from typing import Iterator

from dataloaders import BadVideoError
from utils.engine.run.folder_lock import FolderBusyError
from utils.engine.runtime.sharded_encoding import EvaluationError
from utils.engine.training.trainer import TrainingError


class FlagError(ValueError):
    """A flag argparse or a range check refused; the message names it and points to --help."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """Flag errors (a bad type, a value out of range, via ``parser.error``) raise FlagError, which the entry
    points print as one `error: ...` line with exit status 1 like every other error, instead of argparse's usage
    block (main.py's alone is dozens of lines)."""

    def error(self, message: str):
        raise FlagError(f"{message} (see {self.prog} --help)")


def one_line(error: BaseException) -> str:
    """The message of a library error on one line; an error re-raised by a DataLoader worker keeps only the
    original message (its last line), not the worker's traceback; a system call's OSError is `PATH: reason`
    (its strerror, e.g. `runs/x/ckpt_last.pt: No space left on device`)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    if isinstance(error, OSError) and error.strerror:
        paths = [str(path) for path in (error.filename, error.filename2) if path is not None]
        text = f"{' -> '.join(paths)}: {error.strerror}" if paths else error.strerror
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())



# What the library raises for bad input (messages written for the user), which the entry points print as one
# `error: ...` line: ValueError covers FlagError, RunFolderError, ResumeConflictError, StoreConflictError ...;
# OSError (FileNotFoundError, PermissionError, a full disk ...) is a file-system fault, printed as its path and
# reason. Any other exception is a bug and keeps its traceback.
USER_ERRORS = (OSError, ValueError, TrainingError, BadVideoError, EvaluationError, FolderBusyError)


@contextlib.contextmanager
def errors_as_one_line(errors: tuple[type[BaseException], ...] = USER_ERRORS) -> Iterator[None]:
    """An entry point's body: ``errors`` raised inside end the command as SystemExit("error: <one line>")."""
    try:
        yield
    except errors as error:
        raise SystemExit(f"error: {one_line(error)}") from None
