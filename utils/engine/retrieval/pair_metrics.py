"""Scores over counterfactual pairs (the temporal benchmark, dataloaders/counterfactual.py): Winoground's
text, video and group scores with 95% bootstrap intervals over pairs.

A pair is two videos a, b with one caption each (ca true of a, cb true of b), s the caption x video similarity:
    text score   both videos pick their own caption:    s(ca, a) > s(cb, a)  and  s(cb, b) > s(ca, b)
    video score  both captions pick their own video:    s(ca, a) > s(ca, b)  and  s(cb, b) > s(cb, a)
    group score  all four comparisons hold.
A tie counts as half a win of its comparison (a fair coin), and a pair's score is the product of its
comparisons' wins. Random scores get 25 / 25 / 16.7 (Winoground's chance levels). A model that gives both videos
of a pair the same embedding (mean pooling on a clip and its reversal) gets text 0 (both videos prefer the same
caption), video 25 (every comparison a tie, a coin each; in float32 the two means differ by rounding, which
decides the ties about as a coin would) and group 0. A non-finite score loses its comparison.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

BOOTSTRAP_RESAMPLES = 2000
GROUP_CHANCE = 100 / 6  # the group score of random scores, in percent


def _wins(own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """1 where own > other, 0.5 where equal, 0 where lower or own is not finite (float64)."""
    wins = (own > other).double() + 0.5 * (own == other).double()
    return torch.where(torch.isfinite(own), wins, torch.zeros_like(wins))


def pair_outcomes(similarity: torch.Tensor, caption_to_video: torch.Tensor, video_ids: Sequence[str],
                  pairs: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
    """Per pair (float64 [P] in [0, 1]): "text", "video", "group".

    similarity [Nt, Nv] (captions x videos), caption_to_video int64 [Nt], video_ids [Nv]; pairs [(id_a, id_b)].
    Each paired video must have exactly one caption (the val / test lists of the benchmark); ValueError otherwise,
    or when a pair names a video that is not evaluated."""
    column = {video_id: i for i, video_id in enumerate(video_ids)}
    counts = torch.bincount(caption_to_video, minlength=len(video_ids))
    row_of = torch.full((len(video_ids),), -1, dtype=torch.long)
    row_of[caption_to_video] = torch.arange(len(caption_to_video))
    columns = []
    for pair in pairs:
        missing = [v for v in pair if v not in column]
        if missing or len(pair) != 2:
            raise ValueError(f"pair {list(pair)}: " + (f"video {missing[0]} is not among the evaluated videos"
                                                        if missing else "a pair names two videos"))
        columns.append([column[v] for v in pair])
    cols = torch.tensor(columns, dtype=torch.long).reshape(-1, 2)
    several = [video_ids[c] for c in cols.flatten().tolist() if counts[c] != 1]
    if several:
        raise ValueError(f"video {several[0]} has {int(counts[column[several[0]]])} captions; pair scores need "
                         f"exactly one per paired video")
    a, b = cols[:, 0], cols[:, 1]
    ra, rb = row_of[a], row_of[b]
    s_aa, s_bb, s_ab, s_ba = similarity[ra, a], similarity[rb, b], similarity[ra, b], similarity[rb, a]
    text = _wins(s_aa, s_ba) * _wins(s_bb, s_ab)
    video = _wins(s_aa, s_ab) * _wins(s_bb, s_ba)
    return {"text": text, "video": video, "group": text * video}


def bootstrap_interval(values: torch.Tensor, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval [lo, hi] of 100 x the mean of `values` [P], resampling the pairs."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(values), (resamples, len(values)), generator=generator)
    means = 100 * values.double()[picks].mean(1)
    return [means.quantile(0.025).item(), means.quantile(0.975).item()]


def pair_scores(similarity: torch.Tensor, caption_to_video: torch.Tensor, video_ids: Sequence[str],
                pairs: Sequence[dict]) -> dict[str, dict]:
    """{task: {"pairs", "text_score", "video_score", "group_score" (percent), "<score>_ci95": [lo, hi]}} for the
    entries of a pairs.json ({"task", "videos": [a, b], ...}) whose videos were evaluated together."""
    out = {}
    for task in dict.fromkeys(p["task"] for p in pairs):
        outcomes = pair_outcomes(similarity, caption_to_video, video_ids,
                                 [p["videos"] for p in pairs if p["task"] == task])
        entry = {"pairs": len(outcomes["text"])}
        for name, values in outcomes.items():
            entry[f"{name}_score"] = 100 * values.mean().item()
            entry[f"{name}_score_ci95"] = bootstrap_interval(values)
        out[task] = entry
    return out
