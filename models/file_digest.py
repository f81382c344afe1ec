"""The SHA-256 of a file, read once per process for each (path, size, mtime): the CLIP weights are hashed both when
they are checked against OpenAI's published hash and when a training run records what it was started on."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20
_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """The hex SHA-256 of the file at `path` (cached while its size and modification time stay the same)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(resolved, "rb") as file:
            for chunk in iter(lambda: file.read(_CHUNK), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
