"""The SHA-256 of a file. Large weights files are read several times in one process (the CLIP is checked against
OpenAI's published hash, recorded by a training run, named in a store's identity), so `cached_sha256_of` reads
each once per (path, inode, size, mtime); `sha256_of` always reads the file."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def sha256_of(path: str | os.PathLike) -> str:
    """The hex SHA-256 of the bytes of the file at `path`, read in blocks of 1 MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def cached_sha256_of(path: str | os.PathLike) -> str:
    """sha256_of, remembered while the file keeps its inode, size and modification time (a file replaced, or
    rewritten a clock tick later, is read again)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_of(resolved)
    return _DIGESTS[key]
