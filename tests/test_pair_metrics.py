"""Winoground-style pair scores (utils/engine/retrieval/pair_metrics.py): hand-made similarity matrices, ties,
chance."""
from __future__ import annotations

import pytest
import torch

from utils.engine.retrieval.pair_metrics import bootstrap_interval, pair_outcomes, pair_scores

IDS = ["a0", "b0", "a1", "b1"]
CAPTION_TO_VIDEO = torch.tensor([0, 1, 2, 3])


def test_each_score_counts_its_own_comparisons():
    # pair 0: both videos pick their own caption and both captions their own video; pair 1: video b1 prefers a1's
    # caption (text fails), captions still pick their own video (video score holds)
    sim = torch.tensor([[0.9, 0.1, 0.0, 0.0],
                        [0.2, 0.8, 0.0, 0.0],
                        [0.0, 0.0, 0.9, 0.8],
                        [0.0, 0.0, 0.1, 0.7]])
    out = pair_outcomes(sim, CAPTION_TO_VIDEO, IDS, [("a0", "b0"), ("a1", "b1")])
    assert out["text"].tolist() == [1.0, 0.0] and out["video"].tolist() == [1.0, 1.0]
    assert out["group"].tolist() == [1.0, 0.0]


def test_identical_embeddings_of_a_pair_score_a_coin_per_comparison():
    sim = torch.full((4, 4), 0.3)
    scores = pair_scores(sim, CAPTION_TO_VIDEO, IDS, [{"task": "direction", "videos": ["a0", "b0"]},
                                                     {"task": "direction", "videos": ["a1", "b1"]}])
    assert scores["direction"]["text_score"] == 25.0 and scores["direction"]["video_score"] == 25.0
    assert scores["direction"]["group_score"] == 6.25 and scores["direction"]["pairs"] == 2


def test_a_pair_embedded_alike_scores_text_0_video_25_group_0():
    sim = torch.tensor([[0.5, 0.5], [0.2, 0.2]])  # both videos the same column; caption a preferred by both
    out = pair_outcomes(sim, torch.tensor([0, 1]), ["a", "b"], [("a", "b")])
    assert out["text"].item() == 0.0 and out["video"].item() == 0.25 and out["group"].item() == 0.0


def test_random_scores_sit_at_winogrounds_chance():
    generator = torch.Generator().manual_seed(0)
    n = 4000
    sim = torch.rand(2 * n, 2 * n, generator=generator)
    ids = [f"v{i}" for i in range(2 * n)]
    pairs = [{"task": "t", "videos": [ids[2 * i], ids[2 * i + 1]]} for i in range(n)]
    scores = pair_scores(sim, torch.arange(2 * n), ids, pairs)["t"]
    assert abs(scores["text_score"] - 25) < 2.5 and abs(scores["video_score"] - 25) < 2.5
    assert abs(scores["group_score"] - 100 / 6) < 2.5
    lo, hi = scores["text_score_ci95"]
    assert lo < 25 < hi and hi - lo < 5


def test_nan_scores_lose():
    sim = torch.tensor([[float("nan"), 0.1], [0.2, 0.8]])
    out = pair_outcomes(sim, torch.tensor([0, 1]), ["a", "b"], [("a", "b")])
    assert out["text"].item() == 0.0 and out["video"].item() == 0.0


def test_tasks_are_scored_apart_and_bootstrap_brackets_the_mean():
    sim = torch.eye(4)
    scores = pair_scores(sim, CAPTION_TO_VIDEO, IDS, [{"task": "x", "videos": ["a0", "b0"]},
                                                     {"task": "y", "videos": ["b1", "a1"]}])
    assert set(scores) == {"x", "y"} and scores["y"]["group_score"] == 100.0
    values = torch.tensor([1.0] * 30 + [0.0] * 70)
    lo, hi = bootstrap_interval(values)
    assert lo < 30 < hi and 18 < lo and hi < 42


@pytest.mark.parametrize("pairs, message", [([("a0", "zz")], "zz is not among"),
                                            ([("a0", "b0", "a1")], "two videos")])
def test_bad_pairs_are_named(pairs, message):
    with pytest.raises(ValueError, match=message):
        pair_outcomes(torch.eye(4), CAPTION_TO_VIDEO, IDS, pairs)


def test_a_paired_video_needs_exactly_one_caption():
    with pytest.raises(ValueError, match="b0 has 2 captions"):
        pair_outcomes(torch.rand(3, 2), torch.tensor([0, 1, 1]), ["a0", "b0"], [("a0", "b0")])
