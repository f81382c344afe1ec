"""The other decoders of `--video_backend`: OpenCV and torchcodec beside PyAV (dataloaders/video_reader.py, the
default). Each reads the frames the sampler picks (dataloaders.sampling) from the same frame count, decoding from
the start up to the last sampled frame only, and returns uint8 RGB [K, H, W, 3] like `video_reader.read_frames`.

How their frames differ from PyAV's (docs/DATA.md, measured by benchmarks/bench_data.py): the same frames (indices),
but the YUV -> RGB conversion is each library's own. OpenCV converts with swscale to BGR (then BGR -> RGB here)
using its own scaler flags and colour-matrix choice, which moves pixel values by a few levels; PyAV converts to
rgb24 with swscale's defaults. Display rotation: OpenCV's own (CAP_PROP_ORIENTATION_AUTO) reads only an angle
from the display matrix, so a mirrored video (a flip in the matrix) came out turned 180 degrees; here OpenCV gives
the coded frames and the orientation PyAV reads from the display matrix (video_reader.display_orientation) is
applied to them, the same as PyAV's frames.
Failures map onto the same VideoReadError kinds, with less detail: OpenCV reports no decoding error, so a file
that stops early counts as "truncated" by the frame count alone (`truncation_reason`).
"""
from __future__ import annotations

import importlib
import os
import tempfile
from typing import Callable

import numpy as np
import torch

from .sampling import DEFAULT_FRAME_SAMPLING, check_sampling, segment_indices
from .video_reader import (
    VideoInput,
    VideoReadError,
    apply_orientation,
    describe,
    display_orientation,
    truncation_reason,
)

VIDEO_BACKENDS = ("pyav", "opencv", "torchcodec")
MODULES = {"pyav": "av", "opencv": "cv2", "torchcodec": "torchcodec.decoders"}


def check_backend(backend: str) -> str:
    """`backend` when it is one of VIDEO_BACKENDS and its package imports here; ValueError naming the flag."""
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"--video_backend {backend!r} is not one of {list(VIDEO_BACKENDS)}")
    try:
        importlib.import_module(MODULES[backend])
    except (ImportError, OSError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"--video_backend {backend}: {MODULES[backend]} cannot be loaded here ({first}); install "
                         f"it (torchcodec needs a torch build it was made for and FFmpeg's shared libraries) or use "
                         f"--video_backend pyav") from None
    return backend


Decode = Callable[[list[int]], tuple[list[np.ndarray], int]]  # ascending indices -> (frames found, frames decoded)


def sample_decoded(name: str, frame_count: int, decode: Decode, num_segments: int, train: bool,
                   generator: torch.Generator | None, sampling: str) -> np.ndarray:
    """The sampled frames [K, H, W, 3] of a video of `frame_count` frames (as its container states), by the rules
    of video_reader.read_frames: a video that decodes a few frames short (within the tolerance) is sampled again
    over the frames that decode; one shorter than that is "truncated"; none decoded is "unreadable"."""
    check_sampling(sampling)
    if frame_count <= 0:
        raise VideoReadError(name, "the container states no frame count (use --video_backend pyav, which counts "
                                   "the packets)")
    num_frames = frame_count
    while num_frames > 0:
        indices = segment_indices(num_frames, num_segments, train, generator, sampling)
        frames, decoded = decode(indices)
        if len(frames) == len(indices):
            return np.stack(frames)
        if decoded == 0:
            raise VideoReadError(name, "no frame could be decoded")
        reason = truncation_reason(decoded, max(frame_count, indices[-1] + 1), None)
        if reason is not None:
            raise VideoReadError(name, reason, "truncated")
        num_frames = min(decoded, num_frames - 1)
    raise VideoReadError(name, "no frame could be decoded")


def _check_file(video: VideoInput) -> None:
    name = describe(video)
    if isinstance(video, bytes):
        if not video:
            raise VideoReadError(name, "empty video (0 bytes)", "empty")
    elif not os.path.exists(video):
        raise VideoReadError(name, "file not found", "missing")
    elif os.path.getsize(video) == 0:
        raise VideoReadError(name, "empty file (0 bytes)", "empty")


def read_frames_opencv(video: VideoInput, num_segments: int, train: bool = False,
                       generator: torch.Generator | None = None,
                       sampling: str = DEFAULT_FRAME_SAMPLING) -> np.ndarray:
    """video_reader.read_frames through OpenCV's FFmpeg backend: every frame up to the last sampled one is
    grabbed (decoded), only the sampled ones are retrieved (converted to BGR), turned into RGB and upright (the
    display matrix as PyAV reads it, flips included). The bytes of a whole file (LMDB) are decoded from a
    temporary file."""
    _check_file(video)
    if isinstance(video, bytes):
        with tempfile.NamedTemporaryFile(suffix=".mp4") as file:
            file.write(video)
            file.flush()
            return _read_opencv(file.name, describe(video), num_segments, train, generator, sampling)
    return _read_opencv(os.fspath(video), describe(video), num_segments, train, generator, sampling)


def _read_opencv(path: str, name: str, num_segments: int, train: bool, generator, sampling: str) -> np.ndarray:
    import cv2

    def opened() -> cv2.VideoCapture:
        capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise VideoReadError(name, "cannot be opened by OpenCV")
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # the coded frames: `orientation` turns them upright
        return capture

    def decode(indices: list[int]) -> tuple[list[np.ndarray], int]:
        capture, frames, decoded = opened(), [], 0
        try:
            while decoded <= indices[-1] and capture.grab():
                while len(frames) < len(indices) and indices[len(frames)] == decoded:
                    ok, bgr = capture.retrieve()
                    if not ok:
                        return frames, decoded
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    frames.append(np.ascontiguousarray(apply_orientation(rgb, orientation)))
                decoded += 1
        finally:
            capture.release()
        return frames, decoded

    capture = opened()
    frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    orientation = display_orientation(path)
    return sample_decoded(name, frame_count, decode, num_segments, train, generator, sampling)


def read_frames_torchcodec(video: VideoInput, num_segments: int, train: bool = False,
                           generator: torch.Generator | None = None,
                           sampling: str = DEFAULT_FRAME_SAMPLING) -> np.ndarray:
    """video_reader.read_frames through torchcodec's VideoDecoder (exact seek mode: the stated frame count),
    the sampled frames one by one in ascending order (torchcodec decodes forward from the nearest key frame)."""
    from torchcodec.decoders import VideoDecoder

    _check_file(video)
    name = describe(video)
    try:
        decoder = VideoDecoder(video if isinstance(video, bytes) else os.fspath(video), seek_mode="exact",
                               dimension_order="NHWC")
    except (RuntimeError, ValueError) as error:
        raise VideoReadError(name, f"cannot be opened by torchcodec ({error})") from None

    def decode(indices: list[int]) -> tuple[list[np.ndarray], int]:
        frames = []
        for index in indices:
            try:
                frames.append(decoder.get_frame_at(index).data.numpy())
            except (RuntimeError, IndexError):
                break
        return frames, indices[len(frames) - 1] + 1 if frames else 0

    return sample_decoded(name, int(decoder.metadata.num_frames or 0), decode, num_segments, train, generator,
                          sampling)


READERS = {"opencv": read_frames_opencv, "torchcodec": read_frames_torchcodec}
