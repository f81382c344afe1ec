"""What STOP's prompts do on the temporal benchmark, read against the generator's ground truth.

STOP's abstract makes two claims this benchmark can test, because dataloaders/counterfactual.py knows where
every object is in every frame and how far it moves in every frame gap:
* spatial prompts highlight the regions that move: of the moving object's pixels, the share inside the cells
  the released STOP's spatial mask keeps (`region_mask`) or the patches the paper's STOP prompts
  (`selected_patches`), against the same share for the static objects and the share of the frame selected (what
  cells chosen at random would cover);
* temporal prompts go between the frames that change: the rank correlation (Spearman, pooled over the test
  videos' frame gaps) of the paper's inserted prompt count per gap with the true motion in that gap, the mean
  count in moving and in still gaps (event_order: one half of each clip moves, the other is still), and how
  often the cap is inserted.

    python scripts/demo/prompt_mechanism.py --run RUN_FOLDER --data BENCHMARK_DATA --output mechanism.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dataloaders.counterfactual import PairVideo
from dataloaders.video_input import read_video_tensor
from utils.inference.inference_model import add_inference_model_args, load_inference_model
from utils.inference.prompt_visualization import cells_to_pixels, write_prompt_figure


def selection_pixels(model, details) -> np.ndarray | None:
    """bool [B, T, R, R]: the pixels of the cells STOP selected (released: its region mask; paper: its prompted
    patches), or None for a model without a spatial selection."""
    encoder = model.video_encoder
    if details.region_mask is not None:
        return encoder.spatial_prompt.mask_to_pixels(details.region_mask).numpy()
    if details.selected_patches is not None:
        return cells_to_pixels(details.selected_patches.numpy(), model.clip.visual.input_resolution)
    return None


def coverage(selected: np.ndarray, masks: np.ndarray) -> float:
    """Share of the pixels of `masks` [T, R, R] inside `selected` [T, R, R] (NaN if `masks` is empty: left out of
    the means)."""
    total = masks.sum()
    return float((selected & masks).sum() / total) if total else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Rank correlation with average ranks for ties (None when either side is constant)."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def measure(run: Path, data: Path, split: str = "test", seed: int | None = None, method: str = "",
            batch_size: int = 32, figure: Path | None = None) -> list[dict]:
    """One row per task: the spatial coverages and the inserted-count statistics of the model in `run` on the
    `split` videos of the benchmark folder `data`. With `figure`, also draws the first event_order video."""
    parser = add_inference_model_args(argparse.ArgumentParser())
    inference = load_inference_model(parser.parse_args(["--checkpoint", str(run), "--device", "cpu",
                                                        "--precision", "fp32", "--retain_freed_memory", "false"]))
    model, resolution = inference.model, inference.resolution
    metadata = {k: v for k, v in json.loads((data / "metadata.json").read_text()).items() if v["split"] == split}
    per_task: dict[str, dict[str, list]] = {}
    ids = list(metadata)
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size]
        clips = [read_video_tensor(str(data / "videos" / f"{v}.mp4"), inference.max_frames, resolution)
                 for v in batch]
        video, mask = torch.stack([c[0] for c in clips]), torch.stack([c[1] for c in clips])
        _, details = inference.encode_videos(video, mask, return_details=True)
        selected = selection_pixels(model, details)
        for i, video_id in enumerate(batch):
            truth = PairVideo.from_metadata(video_id, metadata[video_id])
            stats = per_task.setdefault(truth.task, {"moving": [], "static": [], "share": [], "counts": [],
                                                      "motion": []})
            if selected is not None:
                masks = truth.object_masks(resolution)
                moving = np.array([o.moves for o in truth.objects])
                stats["moving"].append(coverage(selected[i], masks[moving].any(0)))
                stats["static"].append(coverage(selected[i], masks[~moving].any(0)))
                stats["share"].append(float(selected[i].mean()))
            if details.inserted_prompts is not None:
                stats["counts"].append(details.inserted_prompts[i].numpy())
                stats["motion"].append(np.asarray(metadata[video_id]["motion"]))
        if figure is not None and start == 0:
            first = next((i for i, v in enumerate(batch) if metadata[v]["task"] == "event_order"), 0)
            one = type(details)(*(None if d is None else d[first:first + 1] for d in details))
            write_prompt_figure(model, video[first], mask[first], one, figure,
                                name=f"{metadata[batch[first]]['caption']} ({batch[first]})")
    rows = []
    cap = model.config.paper_cap
    for task, stats in per_task.items():
        row = {"seed": seed, "method": method, "task": task, "videos": max(len(stats["share"]),
                                                                           len(stats["counts"]))}
        if stats["share"]:
            row["spatial"] = {"moving_coverage": float(np.nanmean(stats["moving"])),
                              "static_coverage": float(np.nanmean(stats["static"])),
                              "selected_share": float(np.mean(stats["share"]))}
        if stats["counts"]:
            counts, motion = np.concatenate(stats["counts"]), np.concatenate(stats["motion"])
            moving = motion > 1e-9
            row["inserted"] = {"spearman_vs_motion": spearman(counts, motion),
                               "mean_in_moving_gaps": float(counts[moving].mean()) if moving.any() else None,
                               "mean_in_still_gaps": float(counts[~moving].mean()) if (~moving).any() else None,
                               "share_at_cap": float((counts == cap).mean()), "cap": cap}
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="a trained STOP run folder")
    parser.add_argument("--data", required=True, type=Path, help="the benchmark folder it was trained on")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--output", required=True, type=Path, help="the JSON file of rows to write")
    parser.add_argument("--figure", type=Path, default=None, help="also draw one event_order video's prompts")
    args = parser.parse_args(argv)
    rows = measure(args.run, args.data, args.split, figure=args.figure)
    args.output.write_text(json.dumps(rows, indent=1) + "\n")
    print(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
