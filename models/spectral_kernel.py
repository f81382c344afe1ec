"""The native CPU kernel of the FFT convolution's per-bin products (models/spectral_products.c), for calls
without gradients.

`models.fast_conv` computes a convolution as transforms and, per frequency bin, a small complex matrix product
over the depth taps and input channels. With batched matrix products (`torch.bmm`, the path with autograd and on
GPUs) the transforms' planes must be copied into a bins-major layout and back, and the many tiny products run far
below the CPU's speed. The kernel reads and writes the planes as the transforms lay them out and keeps a block of
outputs in registers: the same sums to float32 rounding (another order of additions, fused multiply-adds).

It is compiled on first use with the machine's C compiler (`$CC`, else `cc` or `gcc`; flags -O3 -march=native)
into a cache folder (`$STOP_KERNEL_CACHE`, else `$XDG_CACHE_HOME/stop_video` or `~/.cache/stop_video`), one
library per source, compiler, flags and CPU, written atomically. Without a compiler, or with `STOP_NATIVE_KERNEL=0`,
`available()` is False and fast_conv uses the batched products (one warning says why).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("spectral_products.c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
CHUNK = 8  # bins per chunk of the weight layout (the kernel's vector of 8 complex numbers)


def available() -> bool:
    """Whether the kernel is compiled and loaded (compiles it on the first call)."""
    return _library() is not None


def max_taps() -> int:
    """The largest depth kernel the kernel takes (0 when it is not available)."""
    library = _library()
    return 0 if library is None else library.spectral_products_max_taps()


def chunk_layout(spectrum: torch.Tensor) -> torch.Tensor:
    """A weight spectrum G [bins, kd, C_in, C_out] (fast_conv.weight_spectrum) -> the kernel's layout
    [ceil(bins / 8), kd, C_in, C_out, 8] (the same dtype; the kernel takes complex64), zeros past the last bin."""
    bins, kd, c_in, c_out = spectrum.shape
    chunks = -(-bins // CHUNK)
    padded = spectrum.new_zeros(chunks * CHUNK, kd, c_in, c_out)
    padded[:bins] = spectrum
    return padded.view(chunks, CHUNK, kd, c_in, c_out).permute(0, 2, 3, 4, 1).contiguous()


def spectral_products(planes: torch.Tensor, spectrum: torch.Tensor, depth_padding: int,
                      depth_out: int) -> torch.Tensor:
    """planes [B, C_in, D, *bins] complex64 on the CPU, spectrum [chunks, kd, C_in, C_out, 8] (`chunk_layout`)
    -> [B, C_out, D_out, *bins]: out[b, o, d] = sum_{t, i} planes[b, i, d + t - depth_padding] G[t, i, o] per
    bin (input depths outside [0, D) read zero). Runs on torch.get_num_threads() threads (this one and helpers),
    each a range of chunks."""
    library = _library()
    if library is None:
        raise RuntimeError("the native spectral kernel is not available (spectral_kernel.available() is False)")
    b, c_in, depth = planes.shape[:3]
    chunks, kd, spectrum_in, c_out, _ = spectrum.shape
    bins = planes[0, 0, 0].numel()
    if planes.dtype != torch.complex64 or spectrum.dtype != torch.complex64 or planes.device.type != "cpu":
        raise ValueError(f"the native kernel takes complex64 CPU tensors, got {planes.dtype} on {planes.device}")
    if spectrum_in != c_in or chunks != -(-bins // CHUNK) or kd > max_taps():
        raise ValueError(f"spectrum {list(spectrum.shape)} does not fit planes {list(planes.shape)} "
                         f"(or has more than {max_taps()} depth taps)")
    planes, spectrum = planes.contiguous(), spectrum.contiguous()
    out = planes.new_empty(b, c_out, depth_out, *planes.shape[3:])
    args = (planes.data_ptr(), spectrum.data_ptr(), out.data_ptr(), b, c_in, c_out, depth, depth_out, kd,
            depth_padding, bins)
    threads = max(1, min(torch.get_num_threads(), chunks))
    bounds = [chunks * k // threads for k in range(threads + 1)]
    # the first range on this thread, the others on helper threads (ctypes releases the GIL during the call)
    others = [_pool(threads - 1).submit(library.spectral_products, *args, bounds[k], bounds[k + 1])
              for k in range(1, threads)]
    library.spectral_products(*args, bounds[0], bounds[1])
    for other in others:
        other.result()
    return out


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="spectral_products")


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("STOP_NATIVE_KERNEL", "1") == "0":
        log.info("STOP_NATIVE_KERNEL=0: the FFT convolutions use batched matrix products")
        return None
    try:
        library = ctypes.CDLL(str(_build()))
    except (OSError, subprocess.CalledProcessError) as error:  # FileNotFoundError: no compiler
        detail = getattr(error, "stderr", None) or error
        log.warning("the native spectral kernel could not be built or loaded (%s); the FFT convolutions use "
                    "batched matrix products, the same values, slower on CPUs", str(detail).strip()[-500:])
        return None
    long = ctypes.c_long
    library.spectral_products.argtypes = [ctypes.c_void_p] * 3 + [long] * 10
    library.spectral_products.restype = ctypes.c_int
    library.spectral_products_max_taps.restype = ctypes.c_int
    return library


def _build() -> Path:
    """The compiled library, built if this source, compiler, flags and CPU have none in the cache yet."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise FileNotFoundError("no C compiler found (set $CC, or install gcc)")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(FLAGS).encode(), version.encode(),
                                     _cpu_identity().encode()])).hexdigest()[:16]
    folder = _cache_folder()
    library = folder / f"spectral_products-{key}.so"
    if library.exists():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        built = Path(scratch) / library.name
        subprocess.run([compiler, *FLAGS, "-o", str(built), str(SOURCE)], capture_output=True, text=True,
                       check=True)
        os.replace(built, library)  # atomic: concurrent builders (DDP ranks) each write a whole file
    log.info("compiled the native spectral kernel: %s", library)
    return library


def _cache_folder() -> Path:
    if os.environ.get("STOP_KERNEL_CACHE"):
        return Path(os.environ["STOP_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stop_video"


def _cpu_identity() -> str:
    """What -march=native compiles for: the CPU's model and feature flags (a home folder shared by the nodes of
    a cluster gets one library per kind of CPU)."""
    identity = [platform.machine(), platform.processor()]
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    keys = ("model name", "flags", "Features", "CPU part")
    return "\n".join(identity + sorted({line for line in lines if line.split(":")[0].strip() in keys}))
