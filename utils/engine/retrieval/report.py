"""What an evaluation's similarity matrix looks like: a PNG histogram of the ranks and the worst-ranked queries.

main.py writes both beside eval_results.json for the test evaluation (--retrieval_report, on by default):
``rank_histogram_<split>.png`` (t2v and v2t, log-spaced rank bins) and ``worst_queries_<split>.json``: the
``worst`` captions with the highest t2v rank (ties: dataset order), each with its video, rank and score and the
names and scores of its ``top`` best-scored videos; the same for the videos (v2t: a video's rank is that of its
best-ranked own caption).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from matplotlib.figure import Figure

from utils.atomic_file import write_atomic
from utils.engine.retrieval.metrics import ranks_from_similarity
from utils.engine.runtime.log import write_json


def worst_queries(sim: torch.Tensor, caption_to_video: torch.Tensor, video_ids: List[str], captions: List[str],
                  worst: int = 10, top: int = 5) -> Dict[str, Any]:
    """{"t2v": [...], "v2t": [...]}: the ``worst`` queries of each direction by rank (highest first), each with
    its correct answer(s), rank, and its ``top`` best-scored candidates. sim [Nt, Nv], caption_to_video [Nt]."""
    ranks = ranks_from_similarity(sim, caption_to_video)
    top = min(top, sim.shape[1])
    t2v = []
    for c in torch.argsort(-ranks["t2v"], stable=True)[:worst].tolist():
        best = torch.topk(sim[c], top)
        video = int(caption_to_video[c])
        t2v.append({"caption": captions[c], "video": video_ids[video], "rank": int(ranks["t2v"][c]),
                    "score": float(sim[c, video]),
                    "top_videos": [{"video": video_ids[v], "score": float(s)}
                                   for v, s in zip(best.indices.tolist(), best.values.tolist())]})
    with_caption = torch.unique(caption_to_video).tolist()  # v2t ranks exist for these videos, in this order
    v2t = []
    for i in torch.argsort(-ranks["v2t"], stable=True)[:worst].tolist():
        v = with_caption[i]
        best = torch.topk(sim[:, v], min(top, sim.shape[0]))
        v2t.append({"video": video_ids[v], "rank": int(ranks["v2t"][i]),
                    "own_captions": [captions[c] for c in torch.nonzero(caption_to_video == v).flatten().tolist()],
                    "top_captions": [{"caption": captions[c], "score": float(s)}
                                     for c, s in zip(best.indices.tolist(), best.values.tolist())]})
    return {"t2v": t2v, "v2t": v2t}


def write_rank_histogram(path: str | Path, ranks: Dict[str, torch.Tensor], title: str) -> None:
    """A PNG of the t2v and v2t rank histograms (log-spaced bins from rank 1), written atomically."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    for ax, direction in zip(fig.subplots(1, 2), ("t2v", "v2t")):
        r = ranks[direction].double().cpu().numpy()
        bins = np.unique(np.geomspace(1, max(2.0, r.max() + 1), 25).round())
        ax.hist(r, bins=bins, color="tab:blue", edgecolor="white")
        ax.set(xscale="log", xlabel="rank (1 = correct answer first)", ylabel="queries",
               title=f"{direction}: R@1 {100 * (r <= 1).mean():.1f}%, median rank {np.median(r):.1f} (n={len(r)})")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=90))


def write_retrieval_report(output_dir: str | Path, split: str, sim: torch.Tensor, caption_to_video: torch.Tensor,
                           video_ids: List[str], captions: List[str]) -> List[Path]:
    """rank_histogram_<split>.png and worst_queries_<split>.json in ``output_dir``; returns their paths."""
    output_dir = Path(output_dir)
    png, report = output_dir / f"rank_histogram_{split}.png", output_dir / f"worst_queries_{split}.json"
    write_rank_histogram(png, ranks_from_similarity(sim, caption_to_video), f"{split} ranks")
    write_json(report, worst_queries(sim, caption_to_video, video_ids, captions))
    return [png, report]
