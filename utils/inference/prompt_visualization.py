"""What STOP's prompts attend to, as in the paper's figures: the sampled frames with the intra-frame (spatial)
prompt's selected cells overlaid, and bars below: the released STOP's inter-frame weight of each frame, or the
number of prompt tokens the paper's STOP inserts between two frames (bars between the frames).

Drawn with matplotlib's object API (no pyplot, no global backend change; PNG through Agg). The figure has a
fixed layout in units of `frame_px`, the side of one frame panel: (K + 1) * frame_px wide (K frames plus the
margins) and 2.5 * frame_px high (title, frames, bars), at DPI dots per inch. write_prompt_figure draws it
from a model's VideoDetails (infer.py visualize); the functions above draw it from arrays.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from dataloaders.transforms import CLIP_MEAN, CLIP_STD
from models.prompted_video import VideoDetails
from models.video_text_model import VideoTextModel
from utils.atomic_file import write_atomic

DPI = 100
# Layout in frame_px units. Horizontal: left margin, K frames, right margin. Vertical, bottom to top:
# tick labels, bars, gap, frames, title.
LEFT, RIGHT = 0.7, 0.3
BOTTOM, BARS, GAP, FRAMES, TITLE = 0.25, 0.6, 0.35, 1.0, 0.3
OVERLAY_RGBA = (1.0, 0.15, 0.1, 0.45)


def figure_size_px(num_frames: int, frame_px: int) -> tuple[int, int]:
    """(width, height) in pixels of the figure for `num_frames` frames."""
    return round((LEFT + num_frames + RIGHT) * frame_px), round((BOTTOM + BARS + GAP + FRAMES + TITLE) * frame_px)


def denormalise(video: torch.Tensor) -> np.ndarray:
    """CLIP-normalised frames [K, 3, R, R] -> RGB float [K, R, R, 3] in [0, 1] (what the model sees)."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (video.float().cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


class Bars(NamedTuple):
    """The bar chart under the frames: `values` at x `positions` (frame i at i, the gap after it at i + 0.5)."""

    positions: np.ndarray
    values: np.ndarray
    label: str
    top: float  # the y-axis limit


def frame_weight_bars(weights: np.ndarray) -> Bars:
    """The released STOP's inter-frame weights [K] in [0, 1], one bar per frame."""
    return Bars(np.arange(len(weights), dtype=float), weights, "inter-frame\nweight", 1.05)


def inserted_prompt_bars(counts: np.ndarray, cap: int) -> Bars:
    """The paper's STOP: prompt tokens inserted between frames i and i+1, counts [K - 1], one bar per gap."""
    return Bars(np.arange(len(counts)) + 0.5, counts, "inserted\nprompts", cap + 0.2)


def cells_to_pixels(cells: np.ndarray, resolution: int) -> np.ndarray:
    """bool [K, g, g] of ViT patches -> bool [K, R, R], each pixel taking its patch's value."""
    patch = resolution // cells.shape[-1]
    return cells.repeat(patch, axis=-2).repeat(patch, axis=-1)


def save_prompt_figure(frames: np.ndarray, region_pixels: np.ndarray, bars: Bars | None,
                       path: str | os.PathLike, frame_px: int = 160, grid_size: int | None = None,
                       title: str = "") -> tuple[int, int]:
    """Write the PNG (atomically): frames [K, R, R, 3] (floats in [0, 1]) with the selected pixels bool [K, R, R]
    tinted, cell borders of a grid_size x grid_size grid when given, and `bars` below (an empty chart when None).
    Returns its (width, height) in pixels."""
    num_frames = len(frames)
    if region_pixels.shape != frames.shape[:3]:
        raise ValueError(f"{num_frames} frames {frames.shape[1:3]} need a mask [{num_frames}, H, W], got "
                         f"{region_pixels.shape}")
    width, height = figure_size_px(num_frames, frame_px)
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    fontsize = 0.065 * frame_px
    unit_w, unit_h = frame_px / width, frame_px / height
    overlay = np.zeros(region_pixels.shape + (4,))
    overlay[region_pixels] = OVERLAY_RGBA
    resolution = frames.shape[1]
    for index in range(num_frames):
        axes = figure.add_axes(((LEFT + index) * unit_w, (BOTTOM + BARS + GAP) * unit_h, unit_w, FRAMES * unit_h))
        axes.imshow(frames[index], interpolation="nearest")
        axes.imshow(overlay[index], interpolation="nearest")
        if grid_size:
            for line in np.arange(1, grid_size) * resolution / grid_size - 0.5:
                axes.axhline(line, color="white", alpha=0.3, linewidth=0.5)
                axes.axvline(line, color="white", alpha=0.3, linewidth=0.5)
        axes.set_axis_off()
    chart = figure.add_axes((LEFT * unit_w, BOTTOM * unit_h, num_frames * unit_w, BARS * unit_h))
    if bars is not None:
        chart.bar(bars.positions, bars.values, width=0.4, color="tab:blue")
        chart.set_ylim(0, bars.top)
        chart.set_ylabel(bars.label, fontsize=fontsize)
    chart.set_xlim(-0.5, num_frames - 0.5)
    chart.set_xticks(np.arange(num_frames), [str(i + 1) for i in range(num_frames)], fontsize=fontsize)
    chart.tick_params(axis="y", labelsize=fontsize)
    figure.text(0.5, 1 - TITLE * unit_h / 2, title, ha="center", va="center", fontsize=fontsize)
    write_atomic(path, lambda file: figure.savefig(file, dpi=DPI, format="png"))
    return width, height


def write_prompt_figure(model: VideoTextModel, video: torch.Tensor, mask: torch.Tensor, details: VideoDetails,
                        path: str | os.PathLike, frame_px: int = 160, name: str = "") -> dict[str, Any]:
    """Draw what `model`'s STOP prompts did on one video: its frames [T, 3, R, R] (CLIP-normalised, as encoded)
    and mask [T] and the VideoDetails of its encoding (batch of one). Writes the PNG at `path` (parent folders
    made; title `name` and what is drawn) and returns the numbers drawn: {"frames": the real frames K, then those
    the model has: "region_mask" (the released STOP's kept cells, int [K, g, g]), "selected_patches" (the
    paper's, int [K, g, g]), "frame_weights" ([K]), "inserted_prompts" ([K - 1]); "size_px": [width, height]}."""
    num_real = int(mask.sum())
    resolution = video.shape[-1]
    encoder, grid = model.video_encoder, model.clip.visual.grid_size
    record: dict[str, Any] = {"frames": num_real}
    pixels = np.zeros((num_real, resolution, resolution), dtype=bool)
    bars, what = None, []
    if details.region_mask is not None:  # the released STOP
        pixels = encoder.spatial_prompt.mask_to_pixels(details.region_mask)[0, :num_real].numpy()
        record["region_mask"] = details.region_mask[0, :num_real].int().tolist()
        grid = grid if encoder.spatial_prompt.cell_layout == "patch" else None
        what.append("spatial prompt region (tinted cells)")
    if details.selected_patches is not None:  # the paper's STOP
        cells = details.selected_patches[0, :num_real].numpy()
        pixels = cells_to_pixels(cells, resolution)
        record["selected_patches"] = cells.astype(int).tolist()
        what.append("spatially prompted patches (tinted)")
    if details.frame_weights is not None:
        record["frame_weights"] = details.frame_weights[0, :num_real].float().tolist()
        bars = frame_weight_bars(np.array(record["frame_weights"]))
        what.append("inter-frame weights (bars)")
    if details.inserted_prompts is not None:
        record["inserted_prompts"] = details.inserted_prompts[0, :max(0, num_real - 1)].tolist()
        bars = inserted_prompt_bars(np.array(record["inserted_prompts"]), model.config.paper_cap)
        what.append("prompt tokens inserted between frames (bars)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = save_prompt_figure(denormalise(video[:num_real]), pixels, bars, path, frame_px, grid,
                                       f"{name}: {', '.join(what)}")
    record["size_px"] = [width, height]
    return record
