"""Retrieval metrics against hand-computed ranks (ties included), blockwise == full, multi-caption protocol; the
queries tied with their correct item, counted and warned about."""
import numpy as np
import pytest
import torch

from tests.conftest import PairDataset, tiny_dgl_model
from utils.engine.retrieval.evaluation import evaluate
from utils.engine.retrieval.metrics import (
    cosine_similarity,
    format_metrics,
    metrics_from_ranks,
    metrics_from_similarity,
    retrieval_ranks,
    similarity_matrix,
    tie_warning,
)
from utils.engine.retrieval.renormalisation import post_processed_metrics
from utils.engine.runtime.distributed import DistContext
from utils.engine.runtime.log import setup_logging
from utils.engine.runtime.precision import resolve_precision


def test_single_caption_ranks_with_ties_are_optimistic():
    sim = torch.tensor([[0.9, 0.5, 0.9],
                        [0.1, 0.2, 0.3],
                        [0.3, 0.3, 0.3]])
    ranks = retrieval_ranks(torch.arange(3), torch.arange(3), torch.arange(3),
                            similarity_fn=lambda t, v: sim[t][:, v])
    # text 0: 0.9 ties with video 2 -> rank 1; text 1: video 2 scores higher -> 2; text 2: three-way tie -> 1
    assert ranks["t2v"].tolist() == [1, 2, 1]
    # video 0: its caption has the top score; video 1 (column 0.5, 0.2, 0.3): two captions higher -> 3;
    # video 2 (column 0.9, 0.3, 0.3): caption 0 higher, caption 1 only ties -> 2
    assert ranks["v2t"].tolist() == [1, 3, 2]
    assert ranks["v2t_group"].tolist() == [1, 3, 2]
    m = metrics_from_similarity(sim, torch.arange(3))
    assert m["t2v"]["R1"] == pytest.approx(200 / 3)
    assert m["t2v"]["R5"] == 100.0 and m["t2v"]["MdR"] == 1.0
    assert m["t2v"]["MnR"] == pytest.approx(4 / 3)
    assert m["v2t"]["R1"] == pytest.approx(100 / 3)
    assert m["v2t"]["MdR"] == 2.0 and m["v2t"]["MnR"] == 2.0 and m["v2t"]["count"] == 3


def test_multi_caption_protocols_by_hand():
    # 5 captions of 3 videos: captions 0, 1 -> video 0; caption 2 -> video 1; captions 3, 4 -> video 2.
    caption_to_video = torch.tensor([0, 0, 1, 2, 2])
    sim = torch.tensor([[0.2, 0.8, 0.1],    # caption 0 (video 0): video 1 higher -> t2v rank 2
                        [0.7, 0.6, 0.0],    # caption 1 (video 0): rank 1
                        [0.5, 0.4, 0.9],    # caption 2 (video 1): videos 0, 2 higher -> 3
                        [0.6, 0.1, 0.3],    # caption 3 (video 2): video 0 higher -> 2
                        [0.0, 0.0, 0.2]])   # caption 4 (video 2): rank 1
    ranks = retrieval_ranks(torch.arange(5), torch.arange(3), caption_to_video,
                            similarity_fn=lambda t, v: sim[t][:, v])
    assert ranks["t2v"].tolist() == [2, 1, 3, 2, 1]
    # v2t, caption protocol: video 0 column (.2 .7 .5 .6 0): best own caption 0.7 -> nobody higher -> 1.
    # video 1 column (.8 .6 .4 .1 0): own 0.4, higher 0.8 and 0.6 -> 3.
    # video 2 column (.1 0 .9 .3 .2): best own 0.3, higher 0.9 -> 2.
    assert ranks["v2t"].tolist() == [1, 3, 2]
    # v2t_group (released): group maxima per video row. video 0: groups (0.7, 0.5, 0.6) -> 1;
    # video 1: groups (0.8, 0.4, 0.1) -> 2; video 2: groups (0.1, 0.9, 0.3) -> 2.
    assert ranks["v2t_group"].tolist() == [1, 2, 2]


def test_video_without_captions_is_left_out_of_v2t():
    sim = torch.rand(2, 3)
    ranks = retrieval_ranks(torch.arange(2), torch.arange(3), torch.tensor([0, 2]),
                            similarity_fn=lambda t, v: sim[t][:, v])
    assert len(ranks["t2v"]) == 2 and len(ranks["v2t"]) == 2 and len(ranks["v2t_group"]) == 2


def test_median_of_even_count_and_errors():
    m = metrics_from_ranks(torch.tensor([1, 2, 7, 30]))
    assert m["MdR"] == 4.5 and m["MnR"] == 10.0 and m["R1"] == 25.0 and m["R5"] == 50.0 and m["R10"] == 75.0
    with pytest.raises(ValueError, match="no queries"):
        metrics_from_ranks(torch.zeros(0))
    with pytest.raises(ValueError, match="caption_to_video"):
        retrieval_ranks(torch.rand(3, 4), torch.rand(2, 4), torch.tensor([0, 1, 2]))


def _reference_single_caption_ranks(sim: np.ndarray) -> np.ndarray:
    """The released implementation's rule: position of the correct score in the descending sort (first match)."""
    sorted_neg = np.sort(-sim, axis=1)
    correct = -np.diag(sim)[:, None]
    return np.argmax(sorted_neg == correct, axis=1) + 1


def test_matches_sort_based_reference_with_many_ties():
    gen = torch.Generator().manual_seed(0)
    sim = torch.randint(0, 4, (50, 50), generator=gen).float()   # integer scores: ties everywhere
    ranks = retrieval_ranks(torch.arange(50), torch.arange(50), torch.arange(50),
                            similarity_fn=lambda t, v: sim[t][:, v], block_size=7)
    assert ranks["t2v"].numpy().tolist() == _reference_single_caption_ranks(sim.numpy()).tolist()
    assert ranks["v2t"].numpy().tolist() == _reference_single_caption_ranks(sim.t().numpy()).tolist()


@pytest.mark.parametrize("block_size", [1, 4, 1000])
def test_blockwise_equals_full_matrix(block_size):
    gen = torch.Generator().manual_seed(1)
    text, video = torch.randn(37, 16, generator=gen), torch.randn(11, 16, generator=gen)
    caption_to_video = torch.randint(0, 11, (37,), generator=gen)
    full = cosine_similarity(text, video)
    assert torch.allclose(similarity_matrix(text, video, block_size=block_size), full, atol=1e-6)
    blockwise = retrieval_ranks(text, video, caption_to_video, block_size=block_size)
    from_full = retrieval_ranks(torch.arange(37), torch.arange(11), caption_to_video,
                                similarity_fn=lambda t, v: full[t][:, v], block_size=10_000)
    for name in ("t2v", "v2t", "v2t_group"):
        assert torch.equal(blockwise[name], from_full[name]), name


def test_non_finite_scores_rank_last_and_a_nan_row_is_never_a_hit():
    nan, inf = float("nan"), float("inf")
    sim = torch.tensor([[nan, nan, nan],     # text 0: a NaN row (a diverged model) -> worst rank 3, not 1
                        [nan, 0.2, 0.1],     # text 1: a NaN competitor never outranks its finite score -> 1
                        [0.3, inf, 0.5]])    # text 2: +inf is not a score either -> 1
    ranks = retrieval_ranks(torch.arange(3), torch.arange(3), torch.arange(3),
                            similarity_fn=lambda t, v: sim[t][:, v])
    assert ranks["t2v"].tolist() == [3, 1, 1]
    # video 0 (column nan nan 0.3): its caption scores NaN -> worst 3; video 1 (nan .2 inf): 1; video 2: 1
    assert ranks["v2t"].tolist() == [3, 1, 1]
    assert ranks["v2t_group"].tolist() == [3, 1, 1]
    everything_nan = metrics_from_similarity(torch.full((4, 4), nan), torch.arange(4))
    for direction in ("t2v", "v2t", "v2t_group"):
        assert everything_nan[direction]["R1"] == 0.0 and everything_nan[direction]["MnR"] == 4.0, direction
    # multi-caption: video 0's two captions score NaN with it -> t2v worst (2) for both, v2t worst (5 captions),
    # v2t_group worst (2 groups); video 1's column (.1 .2 .3 .9 .4): best own 0.4, caption 3's 0.9 higher -> 2
    multi = torch.tensor([[nan, 0.1], [0.5, 0.2], [0.6, 0.3], [nan, 0.9], [0.0, 0.4]])
    ranks = retrieval_ranks(torch.arange(5), torch.arange(2), torch.tensor([0, 1, 1, 0, 1]),
                            similarity_fn=lambda t, v: multi[t][:, v])
    assert ranks["t2v"].tolist() == [2, 2, 2, 2, 1]
    assert ranks["v2t"].tolist() == [5, 2]
    assert ranks["v2t_group"].tolist() == [2, 2]


def test_queries_tied_with_their_correct_item_are_counted_beside_the_optimistic_ranks():
    sim = torch.tensor([[0.9, 0.5, 0.9],     # text 0 ties with video 2; text 1 does not; text 2 ties three ways
                        [0.1, 0.2, 0.3],
                        [0.3, 0.3, 0.3]])
    ranks = retrieval_ranks(torch.arange(3), torch.arange(3), torch.arange(3), similarity_fn=lambda t, v: sim[t][:, v])
    assert ranks["t2v_tied"].tolist() == [True, False, True]
    # video 2's column (0.9, 0.3, 0.3): its caption's 0.3 ties caption 1's
    assert ranks["v2t_tied"].tolist() == [False, False, True] == ranks["v2t_group_tied"].tolist()
    m = metrics_from_similarity(sim, torch.arange(3))
    assert (m["t2v"]["tied"], m["v2t"]["tied"], m["v2t_group"]["tied"]) == (2, 1, 1)
    assert "(n=3, 2 tied)" in format_metrics(m)
    assert tie_warning(m, "test retrieval").startswith(
        "test retrieval: 2 of 3 t2v, 1 of 3 v2t, 1 of 3 v2t_group queries tie with their correct item")
    # two own captions scoring alike are no tie (v2t ranks the best own caption); a NaN query never ties
    multi = torch.tensor([[0.4, 0.1], [0.4, 0.2], [float("nan"), float("nan")]])
    ranks = retrieval_ranks(torch.arange(3), torch.arange(2), torch.tensor([0, 0, 1]),
                            similarity_fn=lambda t, v: multi[t][:, v])
    assert ranks["v2t_tied"].tolist() == [False, False] and ranks["t2v_tied"].tolist() == [False, False, False]
    distinct = metrics_from_similarity(torch.eye(3), torch.arange(3))
    assert distinct["t2v"]["tied"] == 0 and tie_warning(distinct, "test") is None


def test_identical_test_videos_report_their_ties_and_warn_in_the_log(tmp_path):
    dataset = PairDataset(4)
    dataset.videos[:] = dataset.videos[0]  # four copies of one video: every caption ties with all of them
    setup_logging(tmp_path, is_main=True)
    results = evaluate(tiny_dgl_model(), dataset, DistContext(), batch_size=4, num_workers=0,
                       precision=resolve_precision("fp32", torch.device("cpu")), split="test")
    assert results["t2v"]["R1"] == 100.0 and results["t2v"]["tied"] == 4  # the released rule, and its caveat
    assert results["v2t"]["tied"] == 0
    log = (tmp_path / "log.txt").read_text()
    assert "(n=4, 4 tied)" in log
    assert "WARNING test retrieval: 4 of 4 t2v queries tie with their correct item" in log


def test_scores_collapsed_to_ties_by_qb_norm_are_counted_after_it():
    sim = torch.tensor([[0.50, 0.49, 0.48], [0.47, 0.50, 0.49], [0.48, 0.49, 0.50]])
    raw = metrics_from_similarity(sim, torch.arange(3))
    result = post_processed_metrics(sim, torch.arange(3), {"qb_norm": {"k": 1, "beta": 1e-6, "theta": 1}}, sim)
    assert raw["t2v"]["tied"] == 0 and result["qb_norm"]["t2v"]["tied"] == 3  # equal after the float32 cast
    assert result["qb_norm"]["t2v"]["R1"] == 100.0
