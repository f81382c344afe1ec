"""Writing a file so that readers and crashes only ever see the old or the new content, never a partial one."""
from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Callable


def write_atomic(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Call `write(file)` on a new temporary file next to `path` (permissions from the umask), fsync it, then
    rename it over `path` (atomic within a folder). The temporary file is removed if anything fails; an OSError
    that names no file or the temporary one is raised again naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.filename in (None, str(tmp)):  # a full disk, a read-only folder ...: name the file to write
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
