"""Decoding the sampled frames of one video with PyAV (the default `--video_backend`; the others:
dataloaders/video_backends.py), and turning them into a CLIP-ready clip."""

from __future__ import annotations

import io
import os
import re
from typing import NamedTuple, Union

import av
import numpy as np
import torch
from av.sidedata.sidedata import SideDataContainer

from .sampling import DEFAULT_FRAME_SAMPLING, check_sampling, segment_indices

# A video to read: a file path, or the bytes of a whole file (from an LMDB).
VideoInput = Union[str, os.PathLike, bytes]

# A clean end of decoding this many frames (or 5% of them) short of the container's stated count is tolerated
# (edit lists, rounded durations); more counts as a truncated file.
SHORTFALL_TOLERANCE = 2


class VideoReadError(Exception):
    """A video that cannot be read: `.video` names it, `.reason` says why, `.kind` is "missing", "empty",
    "unreadable" or "truncated" (decoding stops early: a cut download)."""

    def __init__(self, video: str, reason: str, kind: str = "unreadable"):
        super().__init__(f"{video}: {reason}")
        self.video = video
        self.reason = reason
        self.kind = kind


def describe(video: VideoInput) -> str:
    return f"<{len(video)} bytes>" if isinstance(video, bytes) else os.fspath(video)


def _open(video: VideoInput) -> av.container.InputContainer:
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


# ---------------------------------------------------------------------------------------------------------------
# Display rotation: phone videos store upright pictures as rotated coded frames plus a display matrix.

class Orientation(NamedTuple):
    """How to turn a coded frame [H, W, 3] upright: transpose first, then flip rows and/or columns."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False


UPRIGHT = Orientation()


def orientation_from_matrix(a: float, b: float, c: float, d: float) -> Orientation:
    """The orientation of FFmpeg's display matrix [[a, b, u], [c, d, v], [x, y, w]] (a displayed point is
    (x', y') = (a x + c y, b x + d y) up to translation), snapped to the nearest multiple of 90 degrees."""
    if abs(a) + abs(d) >= abs(b) + abs(c):
        return Orientation(False, d < 0, a < 0)
    return Orientation(True, b < 0, c < 0)


def orientation_from_rotation(degrees_counterclockwise: float) -> Orientation:
    theta = np.deg2rad(degrees_counterclockwise)
    return orientation_from_matrix(np.cos(theta), -np.sin(theta), np.sin(theta), np.cos(theta))


def frame_orientation(frame: av.VideoFrame, stream) -> Orientation:
    """From the frame's DISPLAYMATRIX side data (FFmpeg >= 7 attaches the stream's matrix to every decoded
    frame, flips included), else the stream's legacy `rotate` tag (degrees clockwise), else upright.

    The side data is read through a SideDataContainer of its own, not `frame.side_data`: PyAV caches that
    container on the frame, a reference cycle that only the garbage collector frees, and a decoded frame freed by
    it inside a forked DataLoader worker deadlocks FFmpeg. A container of its own refers to the frame without the
    frame referring back, so it is freed with its last reference. (`frame.rotation`, FFmpeg's angle of the
    matrix, is 0 for a vertical mirror, diag(1, -1): it cannot tell which frames have a matrix.)"""
    try:
        for side_data in SideDataContainer(frame):
            if getattr(side_data.type, "name", "") == "DISPLAYMATRIX":
                matrix = np.frombuffer(bytes(side_data), dtype=np.int32)
                if matrix.size >= 5:
                    return orientation_from_matrix(*(float(v) for v in matrix[[0, 1, 3, 4]]))
    except (AttributeError, TypeError, ValueError):
        pass
    rotate = stream.metadata.get("rotate")
    if rotate:
        try:
            return orientation_from_rotation(-float(rotate))
        except ValueError:
            pass
    return UPRIGHT


def display_orientation(video: VideoInput) -> Orientation:
    """The orientation read_frames gives `video`'s frames (its display matrix, flips included, or `rotate` tag),
    read from its first decoded frame: for decoders that cannot apply a flipped display matrix (OpenCV reads
    only an angle from it). UPRIGHT when no frame decodes (the decoder then reports the failure)."""
    with _open(video) as container:
        try:
            for frame in container.decode(video=0):
                return frame_orientation(frame, container.streams.video[0])
        except av.FFmpegError:
            pass
    return UPRIGHT


def apply_orientation(image: np.ndarray, orientation: Orientation) -> np.ndarray:
    if orientation.transpose:
        image = image.transpose(1, 0, 2)
    if orientation.flip_rows:
        image = image[::-1]
    if orientation.flip_cols:
        image = image[:, ::-1]
    return image


def upright_rgb(frame: av.VideoFrame, orientation: Orientation) -> np.ndarray:
    """The frame as uint8 RGB [H, W, 3] the way players display it (`orientation` from frame_orientation)."""
    return np.ascontiguousarray(apply_orientation(frame.to_ndarray(format="rgb24"), orientation))


# ---------------------------------------------------------------------------------------------------------------
# Frame counts and truncation.

def _parse_duration_tag(text: str) -> float | None:
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", text.strip())
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def stated_frame_count(container: av.container.InputContainer) -> int:
    """How many frames the container says its video stream has: the header's count (mp4), else duration x
    frame rate (the stream's duration, its DURATION tag (mkv/webm), or the file's if it has one stream only);
    0 when it says nothing."""
    stream = container.streams.video[0]
    if stream.frames > 0:
        return int(stream.frames)
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif stream.metadata.get("DURATION"):
        duration = _parse_duration_tag(stream.metadata["DURATION"])
    elif container.duration and len(container.streams) == 1:
        duration = container.duration / av.time_base
    rate = stream.average_rate or stream.guessed_rate
    if not duration or not rate:
        return 0
    return int(round(duration * float(rate)))


def truncation_reason(decoded: int, stated: int, error: str | None) -> str | None:
    """Why a video that decoded `decoded` frames, ending with `error` (None: a clean end), counts as
    truncated; None when it does not. Shared by the training reader and preprocess/check_videos.py."""
    of_stated = f"of the {stated} frames the container states" if stated > 0 else "frames"
    if error is not None and (stated <= 0 or decoded < stated):
        return f"truncated or corrupt: decoding stopped with an error after {decoded} {of_stated} ({error})"
    if stated > 0 and stated - decoded > max(SHORTFALL_TOLERANCE, stated // 20):
        return f"truncated: only {decoded} {of_stated} decode"
    return None


class Decoded(NamedTuple):
    frames: list[np.ndarray]  # upright RGB arrays of the wanted frames found
    decoded: int  # frames decoded
    error: str | None  # the decoding error that stopped it, None at a clean end (or after the last wanted frame)


def _decode(container: av.container.InputContainer, indices: list[int], convert: bool = True) -> Decoded:
    """The frames at the (ascending) `indices`: decoding stops after the last wanted frame, at the end of the
    stream or at the first decoding error; only wanted frames are converted."""
    stream = container.streams.video[0]
    frames: list[np.ndarray] = []
    decoded, orientation, error = 0, None, None
    try:
        for frame in container.decode(video=0):
            while len(frames) < len(indices) and indices[len(frames)] == decoded:
                if orientation is None:  # the display matrix is the stream's: read it once
                    orientation = frame_orientation(frame, stream)
                frames.append(upright_rgb(frame, orientation) if convert else None)
            decoded += 1
            if decoded > indices[-1]:
                break
    except av.FFmpegError as failure:
        error = str(failure)
    return Decoded(frames, decoded, error)


class VideoInfo(NamedTuple):
    """What decoding a whole video finds: frames `decoded`, the count the container `stated` (0: none), the
    `error` decoding stopped at (None: clean end) and `truncated` (the reason, or None)."""

    decoded: int
    stated: int
    error: str | None
    truncated: str | None


def inspect_video(video: VideoInput) -> VideoInfo:
    """Decode every frame (for checking files); raises VideoReadError when the video cannot be opened."""
    with _open(video) as container:
        stated = stated_frame_count(container)
        result = _decode(container, [np.iinfo(np.int64).max], convert=False)
    return VideoInfo(result.decoded, stated, result.error, truncation_reason(result.decoded, stated, result.error))


def _count_packets(container: av.container.InputContainer) -> tuple[int, str | None]:
    count = 0
    try:
        for packet in container.demux(video=0):
            count += bool(packet.size)
    except av.FFmpegError as error:
        return count, str(error)
    return count, None


def read_frames(video: VideoInput, num_segments: int, train: bool = False,
                generator: torch.Generator | None = None, sampling: str = DEFAULT_FRAME_SAMPLING) -> np.ndarray:
    """uint8 RGB frames [K, H, W, 3], upright (display rotation applied), chosen by the `sampling` frame
    sampler (dataloaders.sampling), K = min(T, number of frames).

    The frame count comes from the container header (mp4 stores it) or, when the header has none, from
    counting packets. Decoding runs from the start up to the last sampled frame only (pre-compressed videos
    have key frames too sparse for seeking to skip any work).

    Raises VideoReadError when the video cannot be opened or has no decodable frame, and with kind "truncated"
    when decoding fails before the last sampled frame, or the video has far fewer frames than its container
    states (truncation_reason; preprocess/check_videos.py reports the same files). A clean end a few frames
    short of the stated count (within the tolerance) is sampled again over the frames that decode.
    """
    check_sampling(sampling)
    name = describe(video)

    def fail(decoded: int, stated: int, error: str | None) -> None:
        if decoded == 0:
            raise VideoReadError(name, "no frame could be decoded" + (f" ({error})" if error else ""))
        reason = truncation_reason(decoded, stated, error)
        if reason is not None:
            raise VideoReadError(name, reason, "truncated")

    with _open(video) as container:
        stated = stated_frame_count(container)
        num_frames = container.streams.video[0].frames
        if num_frames > 0:
            indices = segment_indices(num_frames, num_segments, train, generator, sampling)
            result = _decode(container, indices)
            if len(result.frames) == len(indices):
                return np.stack(result.frames)
            fail(result.decoded, max(stated, indices[-1] + 1), result.error)
            num_frames = result.decoded
        else:
            num_frames, error = _count_packets(container)
            fail(num_frames, stated, error)
    while num_frames > 0:
        indices = segment_indices(num_frames, num_segments, train, generator, sampling)
        with _open(video) as container:
            result = _decode(container, indices)
        if len(result.frames) == len(indices):
            return np.stack(result.frames)
        fail(result.decoded, max(stated, indices[-1] + 1), result.error)
        num_frames = min(result.decoded, num_frames - 1)
    raise VideoReadError(name, "no frame could be decoded")
