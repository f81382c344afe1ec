"""Run logging: a logger writing to stderr and ``<output_dir>/log.txt`` (main rank only), JSON-lines metrics,
and the peak-memory figure the step logs report."""
from __future__ import annotations

import json
import logging
import resource
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Sequence

import torch

from utils.atomic_file import write_atomic

LOGGER_NAME = "stop"


def setup_logging(output_dir: str | Path | None, is_main: bool) -> logging.Logger:
    """The "stop" logger: INFO on the main rank (stderr + log.txt, appended across resumes), WARNING elsewhere."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if is_main and output_dir is not None:
        file_handler = logging.FileHandler(Path(output_dir) / "log.txt")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


class JsonLines:
    """Appends one JSON object per call to a file (``metrics.jsonl``); a no-op off the main rank. ``listeners``
    receive every record written (main.py's TensorBoard log)."""

    def __init__(self, path: str | Path, enabled: bool = True,
                 listeners: Sequence[Callable[[Dict[str, Any]], None]] = ()):
        self.path, self.enabled, self.listeners = Path(path), enabled, list(listeners)

    def write(self, record: Dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
            for listener in self.listeners:
                listener(record)

    def drop_after(self, step: int) -> int:
        """Remove the records of steps after ``step`` (written by a run killed after its last checkpoint, which a
        resume from that checkpoint runs again) and a torn last line; atomic. Returns how many were removed.
        Records without a "step" are kept."""
        if not self.enabled or not self.path.is_file():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut by the kill
                dropped += 1
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
                dropped += 1
            else:
                kept.append(line + "\n")
        if dropped:
            write_atomic(self.path, lambda f: f.write("".join(kept).encode()))
        return dropped


def peak_memory_mb(device: torch.device) -> float:
    """CUDA ``max_memory_allocated`` on a GPU, the process's peak resident set size on the CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically (utils.atomic_file): a reader or a crash sees the old or the new file, never half of one."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))
