"""Decoding the sampled frames of one video with PyAV, and turning them into a CLIP-ready clip."""

from __future__ import annotations

import io
import os
from typing import Union

import av
import numpy as np
import torch

from .sampling import segment_indices
from .transforms import frames_to_tensor

# A video to read: a file path, or the bytes of a whole file (from an LMDB).
VideoFile = Union[str, os.PathLike, bytes]


class VideoReadError(Exception):
    """A video that cannot be read: `.video` names it, `.reason` says why, `.kind` is "missing", "empty" or
    "unreadable"."""

    def __init__(self, video: str, reason: str, kind: str = "unreadable"):
        super().__init__(f"{video}: {reason}")
        self.video = video
        self.reason = reason
        self.kind = kind


def describe(video: VideoFile) -> str:
    return f"<{len(video)} bytes>" if isinstance(video, bytes) else os.fspath(video)


def _open(video: VideoFile) -> av.container.InputContainer:
    name = describe(video)
    if isinstance(video, bytes):
        if not video:
            raise VideoReadError(name, "empty video (0 bytes)", "empty")
        video = io.BytesIO(video)
    elif not os.path.exists(video):
        raise VideoReadError(name, "file not found", "missing")
    elif os.path.getsize(video) == 0:
        raise VideoReadError(name, "empty file (0 bytes)", "empty")
    try:
        container = av.open(video)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise VideoReadError(name, f"cannot be opened ({error})") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(name, "has no video stream")
    return container


def _decode(container: av.container.InputContainer, indices: list[int]) -> tuple[list[np.ndarray], int]:
    """RGB arrays of the frames at the (ascending) `indices` and the number of frames decoded; decoding stops
    after the last wanted frame or at the first decoding error, and only wanted frames are converted."""
    frames: list[np.ndarray] = []
    decoded = 0
    try:
        for frame in container.decode(video=0):
            while len(frames) < len(indices) and indices[len(frames)] == decoded:
                frames.append(frame.to_ndarray(format="rgb24"))
            decoded += 1
            if decoded > indices[-1]:
                break
    except av.FFmpegError:
        pass
    return frames, decoded


def count_frames(video: VideoFile) -> int:
    """Number of frames that decode without error, counted by decoding the whole video (for checking files);
    raises VideoReadError when the video cannot be opened."""
    with _open(video) as container:
        return _decode(container, [np.iinfo(np.int64).max])[1]


def read_frames(video: VideoFile, num_segments: int, train: bool = False,
                generator: torch.Generator | None = None) -> np.ndarray:
    """uint8 RGB frames [K, H, W, 3] chosen by the T-segment sampler, K = min(T, number of frames).

    The frame count comes from the container header (mp4 stores it) or, when the header has none, from
    counting packets. Decoding runs from the start up to the last sampled frame only (pre-compressed videos
    have key frames too sparse for seeking to skip any work). If the video holds fewer decodable frames than
    its header claims (a truncated download), the sampling is redone over the frames that do decode.
    Raises VideoReadError when the video cannot be opened or has no decodable frame.
    """
    with _open(video) as container:
        num_frames = container.streams.video[0].frames
        if num_frames > 0:
            indices = segment_indices(num_frames, num_segments, train, generator)
            frames, decoded = _decode(container, indices)
            if len(frames) == len(indices):
                return np.stack(frames)
            num_frames = decoded
        else:
            num_frames = sum(1 for packet in container.demux(video=0) if packet.size)
    while num_frames > 0:
        indices = segment_indices(num_frames, num_segments, train, generator)
        with _open(video) as container:
            frames, decoded = _decode(container, indices)
        if len(frames) == len(indices):
            return np.stack(frames)
        num_frames = min(decoded, num_frames - 1)
    raise VideoReadError(describe(video), "no frame could be decoded")


def load_clip(video: VideoFile, max_frames: int, resolution: int, train: bool = False,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A video as model input: (clip float32 [max_frames, 3, resolution, resolution], mask int64 [max_frames]).

    Videos with fewer than `max_frames` frames repeat their last frame; mask is 1 for real frames, 0 for the
    repeated padding.
    """
    frames = frames_to_tensor(read_frames(video, max_frames, train, generator), resolution)
    num_real = frames.shape[0]
    mask = torch.zeros(max_frames, dtype=torch.long)
    mask[:num_real] = 1
    if num_real < max_frames:
        frames = torch.cat([frames, frames[-1:].expand(max_frames - num_real, -1, -1, -1)])
    return frames, mask
