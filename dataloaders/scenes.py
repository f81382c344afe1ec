"""Drawing the generated videos: the colours and shapes, one shape in a frame, frames to an mp4 file.

Shared by the demo's direction videos (synthetic.py) and the temporal benchmark's counterfactual pairs
(counterfactual.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import av
import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 235), "yellow": (235, 215, 40)}
SHAPES = ("circle", "square", "triangle")


def image_shape(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from a side length or a (height, width) pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def shape_mask(shape: str, position: Sequence[float], size: float, image_size: int | Sequence[int] = 64,
               wrap: bool = False) -> np.ndarray:
    """bool [H, W]: the pixels of one filled shape ("circle", "square", "triangle" pointing up) of half-extent
    `size` pixels centred at `position` = (x, y) pixels. With `wrap` the frame is a torus: a shape across an edge
    shows its other part at the opposite edge."""
    height, width = image_shape(image_size)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = x - position[0], y - position[1]
    if wrap:
        dx, dy = (dx + width / 2) % width - width / 2, (dy + height / 2) % height - height / 2
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= size ** 2
    if shape == "square":
        return (np.abs(dx) <= size) & (np.abs(dy) <= size)
    if shape == "triangle":
        return (dy >= -size) & (dy <= size) & (np.abs(dx) <= (dy + size) / 2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_frame(colour: str | Sequence[int], shape: str, position: Sequence[float], size: float,
                 image_size: int | Sequence[int] = 64, background: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """uint8 RGB image [H, W, 3] of one filled shape (`shape_mask`) on a plain background."""
    height, width = image_shape(image_size)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = background
    image[shape_mask(shape, position, size, (height, width))] = COLOURS[colour] if isinstance(colour, str) \
        else tuple(colour)
    return image


def write_video(path: str, frames: np.ndarray, fps: int, codec: str = "libx264", lossless: bool = False) -> None:
    """Encode uint8 RGB frames [T, H, W, 3] (H and W even) to a yuv420p video file with PyAV. `lossless`
    (x264 at qp 0): each decoded frame then depends on its own frame only, never on its neighbours (lossy
    coding predicts a frame from the previous ones, so its artifacts differ between a clip and its reversal)."""
    options = {"threads": "1", **({"qp": "0"} if lossless else {})}
    with av.open(path, "w") as container:
        # One encoder thread and the colour conversion done here, not inside encode(): with PyAV's defaults two
        # processes wrote other pixels for about 2% of the demo's videos (docs/RESULTS.md, "Repeatability").
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(yuv))
        container.mux(stream.encode())
