"""Which frames of a video a clip of T frames is made of.

Two samplers, chosen with `--frame_sampling` (the `sampling` argument here):

* "release" (the default): the released code's `multi_segments_sampling`. Evaluation: if N > T, tick = N / T
  and index x = int(tick / 2 + tick * x); otherwise every frame (the release repeats the last one, clip(0..T-1,
  0, N-1)). Training: avg = N // T; if avg > 0, index x = x * avg + randint(avg) (the last N mod T frames are
  never drawn; for T <= N < 2T the draw is always frames 0..T-1); otherwise as in evaluation.
* "uniform": segments [x * N // T, (x + 1) * N // T) that cover every frame; training takes a uniformly random
  frame of each segment, evaluation its centre (start + end) // 2.

Both return ascending indices, min(N, T) of them: where the release repeats the last frame of a video shorter
than T, the caller (video_input.read_video_tensor) repeats it and marks the repeats 0 in the video mask, which gives
exactly the release's clip.
"""

from __future__ import annotations

import torch

FRAME_SAMPLINGS = ("release", "uniform")
DEFAULT_FRAME_SAMPLING = "release"


def check_sampling(sampling: str) -> str:
    if sampling not in FRAME_SAMPLINGS:
        raise ValueError(f"frame sampling must be one of {FRAME_SAMPLINGS}, got {sampling!r}")
    return sampling


def release_indices(num_frames: int, num_segments: int, train: bool,
                    generator: torch.Generator | None = None) -> list[int]:
    """The release's multi_segments_sampling (data_length 1), without the repeats of a short video."""
    average = num_frames // num_segments
    if train and average > 0:
        offsets = torch.randint(average, (num_segments,), generator=generator)
        return (torch.arange(num_segments) * average + offsets).tolist()
    if num_frames > num_segments:
        tick = num_frames / float(num_segments)
        return [int(tick / 2.0 + tick * x) for x in range(num_segments)]
    return list(range(num_frames))


def uniform_indices(num_frames: int, num_segments: int, train: bool,
                    generator: torch.Generator | None = None) -> list[int]:
    """Evenly covering segments [i * N // T, (i + 1) * N // T): a random frame of each (training) or its
    centre (evaluation)."""
    if num_frames <= num_segments:
        return list(range(num_frames))
    bounds = torch.arange(num_segments + 1) * num_frames // num_segments
    starts, ends = bounds[:-1], bounds[1:]
    if train:
        offsets = (torch.rand(num_segments, generator=generator) * (ends - starts)).long()
        return (starts + torch.minimum(offsets, ends - starts - 1)).tolist()
    return ((starts + ends) // 2).tolist()


def segment_indices(num_frames: int, num_segments: int, train: bool,
                    generator: torch.Generator | None = None, sampling: str = DEFAULT_FRAME_SAMPLING) -> list[int]:
    """Ascending frame indices for a clip of `num_segments` frames out of a video of `num_frames` frames.

    `sampling` is "release" or "uniform" (see the module docstring). Training draws come from `generator`
    (torch's global generator when None, which DataLoader seeds differently in every worker), so they are a
    deterministic function of its state. A video with no more frames than segments gives all its frames (the
    caller pads the clip with the last frame and masks the padding).
    """
    check_sampling(sampling)
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame to sample from, got {num_frames}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be positive, got {num_segments}")
    sampler = release_indices if sampling == "release" else uniform_indices
    return sampler(num_frames, num_segments, train, generator)
