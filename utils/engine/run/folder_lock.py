"""One writer per folder: an exclusive lock on ``<folder>/.lock`` held while a process writes there (a training
run's --output_dir in main.py, an embedding store in infer.py index).

The lock is an OS file lock (``filelock``: ``flock`` on Linux), so it disappears with its process: a killed
writer never leaves a stale lock behind. Who holds it (pid, host, start time, command) is written to
``<folder>/.lock.owner`` after the lock is taken (the lock file itself is truncated by every attempt to take it,
so it cannot carry that information). Readers never take the lock.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

LOCK_NAME, OWNER_NAME = ".lock", ".lock.owner"
LOCK_FILES = (LOCK_NAME, OWNER_NAME)


class FolderBusyError(RuntimeError):
    """Another process holds the folder's writer lock; the message names the folder and, where known, the holder."""


def describe_owner(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "another process (it has not recorded who it is yet)"
    return (f"process {owner.get('pid')} on host {owner.get('host')} (since {owner.get('started')}: "
            f"{owner.get('command')})")


class FolderLock:
    """``with FolderLock(folder, what):`` -- raises FolderBusyError at once if another process writes there.
    ``what`` names the folder in the message (e.g. "--output" or "the embedding store")."""

    def __init__(self, folder: str | os.PathLike, what: str = "folder"):
        self.folder, self.what = Path(folder), what
        self._lock = FileLock(str(self.folder / LOCK_NAME), timeout=0)

    def owner(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / OWNER_NAME).read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise FolderBusyError(f"{self.what} {self.folder} is being written by {describe_owner(self.owner())}; "
                                  "wait for it to finish (or stop it), or use another folder") from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
        (self.folder / OWNER_NAME).write_text(json.dumps(owner))
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            (self.folder / OWNER_NAME).unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
