"""A video as model input: the frames of the --video_backend decoder (PyAV's video_reader.read_frames, or
video_backends' OpenCV / torchcodec readers) resized, cropped and normalised, with the mask of real frames."""
from __future__ import annotations

import torch

from .sampling import DEFAULT_FRAME_SAMPLING
from .transforms import frames_to_tensor
from .video_backends import READERS
from .video_reader import VideoInput, read_frames


def read_video_tensor(video: VideoInput, max_frames: int, resolution: int, train: bool = False,
                      generator: torch.Generator | None = None, sampling: str = DEFAULT_FRAME_SAMPLING,
                      backend: str = "pyav") -> tuple[torch.Tensor, torch.Tensor]:
    """A video as model input: (clip float32 [max_frames, 3, resolution, resolution], mask int64 [max_frames]).

    Videos with fewer than `max_frames` frames repeat their last frame (the release's clip(0..T-1, 0, N-1));
    mask is 1 for real frames, 0 for the repeats. backend: the decoder (`--video_backend`: pyav, this module's
    read_frames; opencv or torchcodec, dataloaders/video_backends.py).
    """
    read = read_frames if backend == "pyav" else READERS[backend]
    frames = frames_to_tensor(read(video, max_frames, train, generator, sampling), resolution)
    num_real = frames.shape[0]
    mask = torch.zeros(max_frames, dtype=torch.long)
    mask[:num_real] = 1
    if num_real < max_frames:
        frames = torch.cat([frames, frames[-1:].expand(max_frames - num_real, -1, -1, -1)])
    return frames, mask
