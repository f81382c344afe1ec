"""Which frames of a video a clip of T frames is made of: the T-segment sampler."""

from __future__ import annotations

import torch


def segment_indices(num_frames: int, num_segments: int, train: bool,
                    generator: torch.Generator | None = None) -> list[int]:
    """Frame indices for a clip of `num_segments` frames out of a video of `num_frames` frames.

    The frames 0..num_frames-1 are split into `num_segments` contiguous segments, segment i holding the frames
    [i * N // T, (i + 1) * N // T). Training takes a uniformly random frame of each segment (drawn from
    `generator`, torch's global generator when None, which DataLoader seeds differently in every worker);
    evaluation takes the centre frame (start + end) // 2. A video with no more frames than segments gives all
    its frames (the caller pads the clip and masks the padding).
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame to sample from, got {num_frames}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be positive, got {num_segments}")
    if num_frames <= num_segments:
        return list(range(num_frames))
    bounds = torch.arange(num_segments + 1) * num_frames // num_segments
    starts, ends = bounds[:-1], bounds[1:]
    if train:
        offsets = (torch.rand(num_segments, generator=generator) * (ends - starts)).long()
        return (starts + torch.minimum(offsets, ends - starts - 1)).tolist()
    return ((starts + ends) // 2).tolist()
