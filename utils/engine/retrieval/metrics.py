"""Retrieval metrics: R@1/5/10, median rank (MdR) and mean rank (MnR) for text-to-video and video-to-text.

Ranks are 1-based and OPTIMISTIC under ties: rank = 1 + the number of candidates with a strictly higher score
than the correct one (the released implementation's ``np.sort`` / first-match rule gives the same number).
A query TIES with its correct item when a wrong candidate scores exactly the correct score: the optimistic rule
counts it as a hit however many candidates tie (identical test videos, scores collapsed by a cast all give R@1
100), so the number of tied queries is reported beside the ranks (``<direction>_tied``) and the metrics
(``tied``), and ``tie_warning`` says so.
Non-finite scores (NaN, +-inf: a broken model's features) rank LAST: a non-finite candidate never beats a finite
score, and a query whose correct score is not finite gets the worst rank (the number of candidates), so a NaN
row can never count as a hit (``1 + count(sims > NaN)`` would be rank 1).

Multi-caption protocol (VATEX, MSVD, MSR-VTT with all 20 captions): ``caption_to_video[c]`` is the video of
caption ``c``.
* t2v: every caption is a query; its rank is the rank of its own video among all videos.
* v2t ("caption" protocol, the COCO image-to-text rule): every video is a query over ALL captions; its rank is
  the rank of its best-ranked own caption, i.e. 1 + the number of captions scoring strictly higher than the
  highest-scoring own caption.
* v2t_group (the released CLIP4Clip/STOP rule, kept so numbers can be compared with theirs): each video is
  scored against each caption GROUP by the maximum over that group's captions; its rank is the rank of its
  own group among all groups.
With one caption per video the three coincide with the usual single-caption definition.

Similarities are computed in blocks so that a 10k x 10k evaluation never holds the model output for the whole
matrix at once; ``similarity_matrix`` assembles the same numbers when the full matrix is wanted.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

from models.loss import cosine_similarity

SimilarityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def similarity_matrix(text_feats: torch.Tensor, video_feats: torch.Tensor,
                      similarity_fn: SimilarityFn = cosine_similarity, block_size: int = 1024) -> torch.Tensor:
    """The full [Nt, Nv] matrix, computed ``block_size`` text rows at a time (float32, on the features' device)."""
    return torch.cat([similarity_fn(text_feats[i:i + block_size], video_feats).float()
                      for i in range(0, len(text_feats), block_size)])


def _ranks(scores: torch.Tensor, correct: torch.Tensor, own: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of ``correct`` [b, 1] among the rows of ``scores`` [b, N] (see the module docstring: optimistic under
    ties, non-finite scores last, a non-finite correct score the worst rank N), and whether a candidate that is
    not the query's own (``own`` bool [b, N]) scores exactly ``correct``: (int64 [b], bool [b]). ``scores`` must
    already have its non-finite entries replaced by -inf (``_finite_or_last``)."""
    finite = torch.isfinite(correct[:, 0])
    ranks = 1 + (scores > correct).sum(1)
    tied = finite & ((scores == correct) & ~own).any(1)
    return torch.where(finite, ranks, torch.full_like(ranks, scores.shape[1])), tied


def _one_hot(columns: torch.Tensor, width: int) -> torch.Tensor:
    """bool [b, width], True at ``columns`` [b] of each row."""
    return torch.zeros(len(columns), width, dtype=torch.bool, device=columns.device).scatter_(1, columns[:, None], True)


def _finite_or_last(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` with NaN and +-inf replaced by -inf (below every finite score)."""
    return scores.masked_fill(~torch.isfinite(scores), float("-inf"))


def retrieval_ranks(text_feats: torch.Tensor, video_feats: torch.Tensor, caption_to_video: torch.Tensor,
                    similarity_fn: SimilarityFn = cosine_similarity,
                    block_size: int = 1024) -> Dict[str, torch.Tensor]:
    """1-based optimistic ranks for every query.

    text_feats [Nt, E], video_feats [Nv, E], caption_to_video LongTensor [Nt] with values in [0, Nv).
    Returns {"t2v": [Nt], "v2t": [Nv'], "v2t_group": [Nv']} (int64), where Nv' counts only the videos that have
    at least one caption (a video without captions has no correct answer for v2t), and for each direction d
    "d_tied" (bool, the same length): the query ties with its correct item (a wrong candidate scores exactly the
    correct, or for v2t the best own, score).
    """
    caption_to_video = torch.as_tensor(caption_to_video, dtype=torch.long, device=text_feats.device)
    num_texts, num_videos = len(text_feats), len(video_feats)
    if caption_to_video.shape != (num_texts,):
        raise ValueError(f"caption_to_video has shape {tuple(caption_to_video.shape)}, expected ({num_texts},)")
    if num_texts and (caption_to_video.min() < 0 or caption_to_video.max() >= num_videos):
        raise ValueError(f"caption_to_video values must lie in [0, {num_videos})")

    t2v = []
    for i in range(0, num_texts, block_size):
        sims = _finite_or_last(similarity_fn(text_feats[i:i + block_size], video_feats).float())  # [b, Nv]
        correct = sims.gather(1, caption_to_video[i:i + block_size, None])            # [b, 1]
        t2v.append(_ranks(sims, correct, _one_hot(caption_to_video[i:i + block_size], num_videos)))

    v2t, v2t_group = [], []
    has_caption = torch.zeros(num_videos, dtype=torch.bool, device=text_feats.device)
    has_caption[caption_to_video] = True
    for j in range(0, num_videos, block_size):
        sims = _finite_or_last(similarity_fn(text_feats, video_feats[j:j + block_size]).float().t())  # [b, Nt]
        own = caption_to_video[None, :] == torch.arange(j, j + len(sims), device=sims.device)[:, None]
        best_own = sims.masked_fill(~own, float("-inf")).amax(1, keepdim=True)        # [b, 1]
        v2t.append(_ranks(sims, best_own, own))
        groups = sims.new_full((len(sims), num_videos), float("-inf")).scatter_reduce(
            1, caption_to_video.expand_as(sims), sims, reduce="amax")                 # [b, Nv]
        own_group = groups[:, j:j + len(sims)].diagonal()[:, None]
        videos = torch.arange(j, j + len(sims), device=sims.device)
        v2t_group.append(_ranks(groups, own_group, _one_hot(videos, num_videos)))
    ranks: Dict[str, torch.Tensor] = {}
    for name, parts in (("t2v", t2v), ("v2t", v2t), ("v2t_group", v2t_group)):
        keep = slice(None) if name == "t2v" else has_caption  # v2t: the videos with a caption
        ranks[name] = torch.cat([r for r, _ in parts])[keep] if parts else torch.zeros(
            0, dtype=torch.long, device=text_feats.device)
        ranks[f"{name}_tied"] = torch.cat([t for _, t in parts])[keep] if parts else torch.zeros(
            0, dtype=torch.bool, device=text_feats.device)
    return ranks


METRICS = ("R1", "R5", "R10", "MdR", "MnR")  # the scores of a direction (metrics_from_ranks; count, tied aside)
DIRECTIONS = ("t2v", "v2t", "v2t_group")


def metrics_from_ranks(ranks: torch.Tensor, tied: torch.Tensor | None = None) -> Dict[str, float]:
    """R@1/5/10 in percent, MdR (median, the mean of the two middle ranks for an even count), MnR, count, and
    with ``tied`` (bool, one per rank) "tied": how many queries tie with their correct item."""
    r = ranks.double().cpu()
    if r.numel() == 0:
        raise ValueError("no queries to score")
    metrics = {"R1": 100.0 * (r <= 1).double().mean().item(),
               "R5": 100.0 * (r <= 5).double().mean().item(),
               "R10": 100.0 * (r <= 10).double().mean().item(),
               "MdR": float(torch.quantile(r, 0.5).item()),
               "MnR": r.mean().item(),
               "count": int(r.numel())}
    if tied is not None:
        metrics["tied"] = int(tied.sum())
    return metrics


def _direction_metrics(ranks: Dict[str, torch.Tensor]) -> Dict[str, Dict[str, float]]:
    """metrics_from_ranks of each direction of ``retrieval_ranks``' result, with its tied count."""
    return {name: metrics_from_ranks(ranks[name], ranks[f"{name}_tied"]) for name in DIRECTIONS}


def retrieval_metrics(text_feats: torch.Tensor, video_feats: torch.Tensor, caption_to_video: torch.Tensor,
                      similarity_fn: SimilarityFn = cosine_similarity,
                      block_size: int = 1024) -> Dict[str, Dict[str, float]]:
    """{"t2v": {...}, "v2t": {...}, "v2t_group": {...}} from features (see the module docstring)."""
    return _direction_metrics(retrieval_ranks(text_feats, video_feats, caption_to_video, similarity_fn, block_size))


def ranks_from_similarity(sim: torch.Tensor, caption_to_video: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``retrieval_ranks`` of a precomputed [Nt, Nv] similarity matrix."""
    texts = torch.arange(sim.shape[0])
    videos = torch.arange(sim.shape[1])
    return retrieval_ranks(texts, videos, caption_to_video, similarity_fn=lambda t, v: sim[t][:, v],
                           block_size=max(1, sim.shape[0]))


def metrics_from_similarity(sim: torch.Tensor, caption_to_video: torch.Tensor) -> Dict[str, Dict[str, float]]:
    """Same metrics from a precomputed [Nt, Nv] similarity matrix."""
    return _direction_metrics(ranks_from_similarity(sim, caption_to_video))


def format_metrics(metrics: Dict[str, Dict[str, float]]) -> str:
    """One line per direction, e.g. 't2v: R@1 47.7 R@5 71.4 R@10 81.1 MdR 2.0 MnR 15.2 (n=1000)', with
    ', 3 tied' in the parentheses when queries tie with their correct item."""
    return "\n".join(f"{name}: R@1 {m['R1']:.1f} R@5 {m['R5']:.1f} R@10 {m['R10']:.1f} "
                     f"MdR {m['MdR']:.1f} MnR {m['MnR']:.1f} (n={m['count']}"
                     f"{f', {tied} tied' if (tied := m.get('tied')) else ''})" for name, m in metrics.items())


def tie_warning(metrics: Dict[str, Dict[str, float]], what: str) -> str | None:
    """A warning line when queries of ``metrics`` (a direction -> metrics_from_ranks dict) tie with their correct
    item, naming ``what`` was scored, how many per direction and what it means; None when none tie."""
    tied = {name: m for name, m in metrics.items() if m.get("tied")}
    if not tied:
        return None
    counts = ", ".join(f"{m['tied']} of {m['count']} {name}" for name, m in tied.items())
    return (f"{what}: {counts} queries tie with their correct item (another candidate scores exactly the same): "
            f"the released optimistic rule counts each as a hit, so R@1 is higher than the scores separate. Check "
            f"for identical test videos or captions, or scores collapsed by a re-normalisation (--qb_norm_beta, "
            f"--dual_softmax_temperature) or by weights stored in an integer dtype")
