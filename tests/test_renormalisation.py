"""Dual softmax and QB-Norm against hand-computed cases and QB-Norm's released search; main.py's test evaluation
with each flag; the offline command on the matrix that evaluation saved."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from main import main
from scripts.renormalise import main as renormalise_main
from tests.conftest import write_run_data
from tests.test_main import common_args
from utils.engine.retrieval.metrics import metrics_from_similarity
from utils.engine.retrieval.renormalisation import dual_softmax, post_processed_metrics, qb_norm
from utils.engine.runtime.sharded_encoding import EvaluationError

E = math.exp


def test_dual_softmax_by_hand():
    sim = torch.tensor([[0.6, 0.5], [0.9, 0.1]], dtype=torch.float64)
    # column 0: softmax(6, 9) = (1, e^3) / (1 + e^3); column 1: softmax(5, 1) = (e^4, 1) / (1 + e^4)
    expected = torch.tensor([[0.6 / (1 + E(3)), 0.5 * E(4) / (1 + E(4))],
                             [0.9 * E(3) / (1 + E(3)), 0.1 / (1 + E(4))]], dtype=torch.float64)
    torch.testing.assert_close(dual_softmax(sim, 0.1), expected, rtol=1e-12, atol=0)
    # text 0 preferred video 0 (0.6 > 0.5), but video 0 belongs to text 1: the dual softmax turns text 0 to video 1
    raw = metrics_from_similarity(sim, torch.tensor([1, 0]))["t2v"]
    post = post_processed_metrics(sim, torch.tensor([1, 0]), {"dual_softmax": {"temperature": 0.1}})["dual_softmax"]
    assert raw["R1"] == 50.0 and post["t2v"]["R1"] == 100.0 and post["post_processed"] is True
    # video-to-text works on the transpose: the softmax runs over the videos of each text
    torch.testing.assert_close(dual_softmax(sim.t(), 0.1).t(), sim * torch.softmax(sim / 0.1, dim=1))


BANK = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1]], dtype=torch.float64)  # both bank queries' top-1: video 0
TEST = torch.tensor([[0.5, 0.4, 0.0], [0.1, 0.3, 0.2]], dtype=torch.float64)


def _rescored(row: torch.Tensor) -> torch.Tensor:
    """exp(beta s) / column sums of exp(beta bank), beta = 1, written out."""
    sums = [E(0.9) + E(0.8), E(0.1) + E(0.2), E(0.0) + E(0.1)]
    return torch.tensor([E(s) / c for s, c in zip(row.tolist(), sums)], dtype=torch.float64)


def test_qb_norm_by_hand():
    # k 1: the hub is video 0; test query 0's top-1 is video 0 -> re-scored; query 1's is video 1 -> kept
    out = qb_norm(BANK, TEST, k=1, beta=1.0, theta=1)
    torch.testing.assert_close(out[0], _rescored(TEST[0]), rtol=1e-12, atol=0)
    assert torch.equal(out[1], TEST[1])
    assert out[0].argmax() == 1  # e^0.4 / (e^0.1 + e^0.2) = 0.64 beats e^0.5 / (e^0.9 + e^0.8) = 0.35
    assert torch.equal(qb_norm(BANK, TEST, k=1, beta=1.0, theta=2), out)      # video 0 is in 2 top-1s
    assert torch.equal(qb_norm(BANK, TEST, k=1, beta=1.0, theta=3), TEST)     # no hub: nothing changes
    # k 2: videos 0 and 1 are hubs, both queries are re-scored
    both = qb_norm(BANK, TEST, k=2, beta=1.0, theta=1)
    torch.testing.assert_close(both, torch.stack([_rescored(TEST[0]), _rescored(TEST[1])]), rtol=1e-12, atol=0)


def _released_qb_norm(train_test: np.ndarray, test_test: np.ndarray, k: int, beta: float) -> np.ndarray:
    """QB-Norm's released dynamic inverted softmax (its search script), as published: theta = 1."""
    retrieved = np.unique(np.argsort(-train_test, axis=1)[:, :k].reshape(-1))
    normalised = test_test.copy()
    index = np.nonzero(np.isin(np.argsort(-test_test, axis=1)[:, 0], retrieved))
    normalised[index, :] = np.exp(test_test[index, :] * beta) / np.sum(np.exp(train_test * beta), axis=0)
    return normalised


@pytest.mark.parametrize("k", [1, 3])
def test_qb_norm_matches_the_released_search(k):
    g = torch.Generator().manual_seed(0)
    bank = torch.rand(8, 30, generator=g, dtype=torch.float64)  # 8 bank queries: at most 8 k hubs of 30
    test = torch.rand(20, 30, generator=g, dtype=torch.float64)
    expected = _released_qb_norm(bank.numpy(), test.numpy(), k, 20.0)
    out = qb_norm(bank, test, k=k, beta=20.0)
    assert 0 < int((out != test).any(dim=1).sum()) < len(test)  # some queries re-scored, some kept
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("call,message", [
    (lambda: dual_softmax(TEST, 0.0), r"dual_softmax's temperature must be a finite number >= 2.2250738585072014e-308 "
                                      r"\(the smallest normal float64; .*\), got 0.0 \(--dual_softmax_temperature\)"),
    (lambda: dual_softmax(TEST[0], 1.0), r"must be a matrix \[queries, gallery\], got shape \(3,\)"),
    (lambda: qb_norm(BANK, TEST, k=4), r"qb_norm's k must be at most the gallery size 3, got 4 \(--qb_norm_k\)"),
    (lambda: qb_norm(BANK, TEST, theta=0), r"qb_norm's theta must be >= 1, got 0 \(--qb_norm_theta\)"),
    (lambda: qb_norm(BANK[:, :2], TEST), "the query bank scores 2 gallery items, the test queries 3"),
    (lambda: qb_norm(BANK, TEST * float("nan")), "the test similarity matrix has NaN or infinite entries"),
    (lambda: post_processed_metrics(TEST, torch.tensor([0, 1]), {"qb_norm": {"k": 1, "beta": 1.0, "theta": 1}}),
     "QB-Norm needs the query bank's similarities"),
])
def test_bad_parameters_are_named_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_non_finite_scores_of_a_renormalisation_stop_the_evaluation_naming_its_flags():
    sim, bank = torch.tensor([[0.9, 0.1], [0.1, 0.9]]), torch.tensor([[0.2, 0.1], [0.1, 0.2]])
    params = {"k": 1, "beta": 1e4, "theta": 1}  # exp(beta * 0.9 - logsumexp(beta * bank)) overflows
    with pytest.raises(EvaluationError, match=r"qb_norm gave 2 of 4 similarity scores that are NaN or infinite with "
                                              r"--qb_norm_k 1, --qb_norm_beta 10000.0, --qb_norm_theta 1; no metrics"):
        post_processed_metrics(sim, torch.arange(2), {"qb_norm": params}, bank)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_run_data(tmp_path_factory.mktemp("synthetic"))


def test_evaluation_with_each_flag_and_offline_on_the_saved_matrix(data, tmp_path):
    out = tmp_path / "eval"
    results = main(common_args(data, out) + ["--do_eval", "--save_similarity", "--dual_softmax", "--qb_norm",
                                             "--qb_norm_k", "2"])
    test = results["test"]
    saved = torch.load(out / "similarity_test.pt", weights_only=True)
    assert saved["query_bank_similarity"].shape == (24, 4)  # the 24 training captions x the 4 test videos
    assert {k: test[k] for k in ("t2v", "v2t")} == {k: v for k, v in metrics_from_similarity(
        saved["similarity"], saved["caption_to_video"]).items() if k in ("t2v", "v2t")}  # raw metrics unchanged
    post = test["post_processed"]
    assert post["dual_softmax"]["temperature"] == 0.01 and set(post["dual_softmax"]) >= {"t2v", "v2t", "v2t_group"}
    assert post["qb_norm"]["k"] == 2 and post["qb_norm"]["query_bank_size"] == 24 and "v2t" not in post["qb_norm"]
    assert json.loads((out / "eval_results.json").read_text())["test"]["post_processed"] == post
    jsonl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert jsonl[-1]["kind"] == "test" and jsonl[-1]["post_processed"] == post
    assert "post-processed by dual_softmax (temperature 0.01)" in (out / "log.txt").read_text()

    offline = renormalise_main([str(out / "similarity_test.pt"), "--dual_softmax", "--qb_norm", "--qb_norm_k", "2"])
    assert offline["post_processed"] == post and offline["raw"]["t2v"] == test["t2v"]
    assert json.loads((out / "similarity_test_post_processed.json").read_text())["post_processed"] == post


def test_flag_and_file_errors_are_one_line(data, tmp_path):
    with pytest.raises(SystemExit, match="--dual_softmax post-process the test evaluation: add --do_eval"):
        main(common_args(data, tmp_path / "run") + ["--do_train", "--dual_softmax"])
    with pytest.raises(SystemExit, match=r"--qb_norm_beta\)"):
        main(common_args(data, tmp_path / "run") + ["--do_eval", "--qb_norm", "--qb_norm_beta", "-1"])
    with pytest.raises(SystemExit, match=r"temperature must be a finite number >= 2.2250738585072014e-308 .*"
                                         r"got 1e-320 \(--dual_softmax_temperature\)"):  # NaN scores, R@1 0
        main(common_args(data, tmp_path / "run") + ["--do_eval", "--dual_softmax", "--dual_softmax_temperature",
                                                    "1e-320"])
    assert not (tmp_path / "run").exists()
    no_bank = tmp_path / "similarity_test.pt"
    torch.save({"similarity": TEST, "caption_to_video": torch.tensor([0, 1])}, no_bank)
    with pytest.raises(SystemExit, match="holds no query_bank_similarity: evaluate with --qb_norm --save_similarity"):
        renormalise_main([str(no_bank), "--qb_norm"])
    with pytest.raises(SystemExit, match="nothing to do: pass --dual_softmax and/or --qb_norm"):
        renormalise_main([str(no_bank)])
    with pytest.raises(SystemExit, match="similarity file not found"):
        renormalise_main([str(tmp_path / "missing.pt"), "--dual_softmax"])


@pytest.mark.parametrize("similarity, caption_to_video, message", [
    (torch.tensor([0.1, 0.9]), torch.tensor([0, 1]), "similarity must be a 2-D tensor [captions, videos], got a "
                                                     "tensor [2]"),
    ([[0.9, 0.1], [0.2, 0.8]], torch.tensor([0, 1]), "similarity must be a 2-D tensor [captions, videos], got a list"),
    (torch.eye(2), [0, 1], "caption_to_video must be a 1-D tensor [2] (a video per caption), got a list"),
    (torch.eye(2), torch.tensor([0, 1, 1]), "caption_to_video must be a 1-D tensor [2] (a video per caption), got "
                                            "a tensor [3]"),
])
def test_a_similarity_file_of_the_wrong_shape_is_one_line_naming_the_file(tmp_path, similarity, caption_to_video,
                                                                            message):
    path = tmp_path / "similarity_test.pt"
    torch.save({"similarity": similarity, "caption_to_video": caption_to_video}, path)
    with pytest.raises(SystemExit) as error:
        renormalise_main([str(path), "--dual_softmax"])
    assert error.value.code == f"error: {path}: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["similarity_test.pt"]
