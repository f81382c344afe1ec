"""Frames -> CLIP input, without torchvision: short-side bicubic resize, centre crop, CLIP normalisation."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after scaling the short side to `short_side`, the long side truncated to an integer
    as torchvision's Resize(int) does."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def center_crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of a centred size x size crop, rounded as torchvision's CenterCrop does."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def frames_to_tensor(frames: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 RGB frames [K, H, W, 3] -> normalised float32 [K, 3, resolution, resolution].

    Frames whose short side is not `resolution` are resized with PIL's BICUBIC filter, as CLIP's own
    preprocessing (and the released code's) does; then the centre square is cropped, scaled to [0, 1] and
    normalised with CLIP's mean and std.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [K, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    height, width = frames.shape[1:3]
    if min(height, width) != resolution:
        new_height, new_width = resized_size(height, width, resolution)
        frames = np.stack([np.asarray(Image.fromarray(frame).resize((new_width, new_height), Image.Resampling.BICUBIC))
                           for frame in frames])
        height, width = new_height, new_width
    top, left = center_crop_offsets(height, width, resolution)
    crop = np.ascontiguousarray(frames[:, top:top + resolution, left:left + resolution])
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    # (x / 255 - mean) / std as one multiply-add on a contiguous [K, 3, R, R] copy
    pixels = torch.from_numpy(crop).permute(0, 3, 1, 2).contiguous().float()
    return pixels.mul_(1.0 / (255.0 * std)).add_(-mean / std)
