"""Keeping freed memory in the process (glibc malloc): the `--retain_freed_memory` flag of the entry points.

The FFT convolutions of STOP's prompts (models/fast_conv.py) allocate and free several 50-100 MB buffers per
layer. glibc serves requests above its mmap threshold (at most 32 MiB by default) with fresh `mmap`s and gives
them back to the OS when freed, so every call page-faults all of them in again: on a 2-core AMD EPYC machine this
made the spatial prompt 3x slower than with the memory kept (1.0 s against 0.3 s for 2 videos of 12 frames;
docs/BENCHMARKS.md). `retain_freed_memory()` sets, through `mallopt`, an mmap threshold of 2 GiB (below that,
allocations come from the heap and are reused) and a trim threshold of 2 GiB (freed memory at the top of the
heap is kept up to that size). The process's resident memory then stays near its peak instead of shrinking
between calls. It changes no result: only where buffers live. DataLoader workers started by fork inherit it.

A process setting, for applications (main.py, infer.py, the benchmarks), not something the model library does.
Outside glibc (macOS, musl) it does nothing and says so.
"""

from __future__ import annotations

import argparse
import ctypes
import platform

from models.config_fields import resume_free, str_to_bool

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's <malloc.h> parameter numbers
RETAINED_BYTES = 2**31 - 1  # mallopt takes an int
FLAG_HELP = ("keep freed memory in the process (glibc mallopt: mmap and trim thresholds of 2 GiB): the prompts' "
             "FFT convolutions then reuse their large buffers instead of page-faulting fresh ones on every call "
             "(up to 3x faster on the CPU; resident memory stays near its peak; results unchanged; "
             "utils/engine/runtime/allocator.py)")


def add_retain_freed_memory_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--retain_freed_memory {true,false}` (default true) on an entry point's parser or argument group."""
    resume_free(parser.add_argument("--retain_freed_memory", type=str_to_bool, default=True, metavar="{true,false}",
                                    help=FLAG_HELP),
                "where freed buffers live (utils/engine/runtime/allocator.py), not what is computed")


def retain_freed_memory(enabled: bool = True) -> str:
    """With `enabled`, set glibc's mmap and trim thresholds to RETAINED_BYTES (where mallopt refuses a threshold
    that high, older glibc, mmap is turned off instead). Returns one line for the log saying what was done."""
    if not enabled:
        return "allocator: the C library's defaults (--retain_freed_memory false)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return f"allocator: unchanged (--retain_freed_memory needs glibc; this is {platform.system()})"
    libc = ctypes.CDLL(None)
    mmap = libc.mallopt(M_MMAP_THRESHOLD, RETAINED_BYTES) or libc.mallopt(M_MMAP_MAX, 0)
    trim = libc.mallopt(M_TRIM_THRESHOLD, RETAINED_BYTES)
    if not (mmap and trim):
        return "allocator: unchanged (glibc's mallopt refused the thresholds)"
    return "allocator: freed memory kept in the process (--retain_freed_memory, glibc mmap/trim thresholds 2 GiB)"
