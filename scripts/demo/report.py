"""The demo's metrics of one run: retrieval metrics plus direction metrics on the synthetic test set.

The synthetic test set (``dataloaders.synthetic``) consists of opposite-direction pairs: two videos identical
but for the direction of motion (one is the other played backwards), captioned alike but for the direction.
A model that only sees frames one at a time cannot tell the two apart. Besides R@k we report:
  direction t2v   for each caption, is its own video scored above its twin? (ties count 1/2; chance 50%)
  direction v2t   for each video, is its best own caption scored above the twin's best caption?
  object R@1      t2v top-1 is the caption's video or its twin (colour and shape right, direction ignored)

`run_summary` reads a run's eval_results.json, hparams.json and similarity_test.pt (main.py --save_similarity);
scripts/demo/direction_experiment.py tabulates the runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from dataloaders.synthetic import OPPOSITE

TWIN_KEYS = ("colour", "shape", "size", "cross", "background")


def twins(metadata: list[dict]) -> dict[str, str]:
    """video_id -> the test video identical but for the opposite direction (unpaired videos are left out)."""
    test = [m for m in metadata if m["split"] == "test"]
    by_look = {(tuple(map(str, (m[k] for k in TWIN_KEYS))), m["direction"]): m["video_id"] for m in test}
    out = {}
    for m in test:
        twin = by_look.get((tuple(map(str, (m[k] for k in TWIN_KEYS))), OPPOSITE[m["direction"]]))
        if twin is not None:
            out[m["video_id"]] = twin
    return out


def _win(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a > b).double() + 0.5 * (a == b).double()


def direction_metrics(similarity: torch.Tensor, caption_to_video: torch.Tensor, video_ids: list[str],
                      twin_of: dict[str, str]) -> dict[str, float]:
    """Pairwise direction accuracies (percent) and object R@1 from a [Nt, Nv] similarity matrix."""
    column = {v: i for i, v in enumerate(video_ids)}
    twin_index = torch.tensor([column.get(twin_of.get(v, ""), -1) for v in video_ids])
    caption_twin = twin_index[caption_to_video]
    paired = caption_twin >= 0
    rows = torch.nonzero(paired).flatten()
    own = similarity[rows, caption_to_video[rows]]
    other = similarity[rows, caption_twin[rows]]
    top = similarity.argmax(1)
    object_hit = (top == caption_to_video) | (top == caption_twin)
    # best caption of each video, and of its twin, scored against the video
    best = torch.full((len(video_ids), len(video_ids)), float("-inf"), dtype=similarity.dtype)
    best = best.scatter_reduce(1, caption_to_video.expand(len(video_ids), -1), similarity.t(), reduce="amax")
    videos = torch.nonzero(twin_index >= 0).flatten()
    v2t = _win(best[videos, videos], best[videos, twin_index[videos]])
    return {"direction_t2v": 100 * _win(own, other).mean().item(), "direction_v2t": 100 * v2t.mean().item(),
            "object_R1": 100 * object_hit.double().mean().item(), "pairs": int(len(videos) // 2)}


def run_summary(name: str, run_dir: Path, twin_of: dict[str, str]) -> dict:
    results = json.loads((run_dir / "eval_results.json").read_text())
    hparams = json.loads((run_dir / "hparams.json").read_text())
    sim = torch.load(run_dir / "similarity_test.pt", weights_only=True)
    test = results["test"]
    return {"method": name, "trainable_parameters": hparams["parameters"]["trainable"],
            "train_seconds": results.get("train_seconds", 0.0),
            "t2v": test["t2v"], "v2t": test["v2t"],
            **direction_metrics(sim["similarity"], sim["caption_to_video"], sim["video_ids"], twin_of)}
