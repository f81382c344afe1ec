"""A tiny training run's TensorBoard events (read back by tensorboard's own reader) and training-curves PNG;
scripts/plot_curves.py on any run folder; an evaluation's rank histogram and worst queries."""
from __future__ import annotations

import json

import matplotlib.image
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from main import main
from scripts.plot_curves import main as plot_curves_main
from tests.conftest import step_logs, write_run_data
from tests.test_main import common_args
from utils.engine.retrieval.pair_metrics import pair_scores
from utils.engine.retrieval.report import worst_queries
from utils.engine.run.tensorboard_log import scalars
from utils.engine.tasks import TASKS


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_run_data(tmp_path_factory.mktemp("synthetic"))


def test_a_training_run_writes_tensorboard_events_and_its_curves(data, tmp_path):
    out = tmp_path / "run"
    main(common_args(data, out) + ["--do_train", "--do_eval", "--epochs", "2", "--batch_size", "4", "--n_display",
                                   "1", "--tensorboard"])
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/grad_norm", "train/samples_per_s", "train/data_time", "train/lr/new_decay",
            "train/lr/new_no_decay", "epoch/train_loss", "val/t2v/R1", "test/t2v/R1", "test/v2t/MdR"} <= tags
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]  # 8 videos / 4 = 2 steps per epoch, 2 epochs
    assert [e.value for e in loss] == pytest.approx(step_logs(out), rel=1e-6)  # float32 of metrics.jsonl's
    assert [e.step for e in events.Scalars("val/t2v/R1")] == [2, 4]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lr_groups = [r["lr_groups"] for r in records if r["kind"] == "train"]
    assert [e.value for e in events.Scalars("train/lr/new_decay")] == pytest.approx(
        [g["new_decay"] for g in lr_groups], rel=1e-6)
    image = matplotlib.image.imread(out / "training_curves.png")
    assert image.shape[0] > 400 and image.shape[1] > 800 and image.std() > 0  # a drawn figure, not a blank one

    # the command draws the same figure for any run folder, here into another file
    again = plot_curves_main([str(out), "--output", str(tmp_path / "again.png")])
    assert matplotlib.image.imread(again).shape == image.shape


def test_post_processed_test_metrics_get_their_own_tags():
    record = {"kind": "test", "step": 4, "t2v": {"R1": 50.0, "R5": 100.0, "R10": 100.0, "MdR": 1.5, "MnR": 1.5},
              "num_videos": 4, "post_processed": {"dual_softmax": {"temperature": 0.01, "post_processed": True,
                                                                   "t2v": {"R1": 75.0, "R5": 100.0, "R10": 100.0,
                                                                           "MdR": 1.0, "MnR": 1.25}}}}
    tags = dict(scalars(record, TASKS["retrieval"].scalars))
    assert tags["test/t2v/R1"] == 50.0 and tags["test/post_processed/dual_softmax/t2v/R1"] == 75.0
    assert len(tags) == 10  # five metrics of each: no parameter or count is a scalar


def test_pairs_json_adds_the_pair_scores_of_the_test_similarity(data, tmp_path):
    """--pairs_json (the temporal benchmark's pairs.json) scores the test evaluation's pairs with
    utils.engine.retrieval.pair_metrics.pair_scores, on the matrix --save_similarity writes."""
    test_ids = [line.split(",")[2] for line in (data / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()[1:]]
    pairs = [{"task": "direction", "split": "test", "videos": test_ids[0:2]},
             {"task": "direction", "split": "test", "videos": test_ids[2:4]},
             {"task": "other", "split": "val", "videos": ["not_evaluated_a", "not_evaluated_b"]}]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    out = tmp_path / "eval"
    results = main(common_args(data, out) + ["--do_eval", "--save_similarity", "--no-retrieval_report",
                                             "--pairs_json", str(tmp_path / "pairs.json")])
    saved = torch.load(out / "similarity_test.pt", weights_only=True)
    expected = pair_scores(saved["similarity"], saved["caption_to_video"], saved["video_ids"], pairs[:2])
    assert results["test"]["pairs"] == expected and list(expected) == ["direction"]
    assert expected["direction"]["pairs"] == 2
    assert json.loads((out / "eval_results.json").read_text())["test"]["pairs"] == expected
    with pytest.raises(SystemExit, match="--pairs_json scores the test evaluation: add --do_eval"):
        main(common_args(data, tmp_path / "x") + ["--do_train", "--pairs_json", str(tmp_path / "pairs.json")])


def test_worst_queries_by_hand():
    sim = torch.tensor([[0.9, 0.1, 0.0, 0.2],   # caption 0 -> video a: rank 1
                        [0.8, 0.3, 0.5, 0.1],   # caption 1 -> video b: rank 3 (a 0.8, c 0.5 above it)
                        [0.1, 0.7, 0.6, 0.0]])  # caption 2 -> video c: rank 2 (b 0.7 above it)
    report = worst_queries(sim, torch.tensor([0, 1, 2]), ["a", "b", "c", "d"], ["c0", "c1", "c2"], worst=2, top=2)
    assert report["t2v"] == [
        {"caption": "c1", "video": "b", "rank": 3, "score": pytest.approx(0.3),
         "top_videos": [{"video": "a", "score": pytest.approx(0.8)}, {"video": "c", "score": pytest.approx(0.5)}]},
        {"caption": "c2", "video": "c", "rank": 2, "score": pytest.approx(0.6),
         "top_videos": [{"video": "b", "score": pytest.approx(0.7)}, {"video": "c", "score": pytest.approx(0.6)}]}]
    # v2t: video b's own caption c1 (0.3) is below c2 (0.7): rank 2; video c: c1 0.5 < c2 0.6, rank 1; a: rank 1;
    # d has no caption and is no query
    assert [(q["video"], q["rank"], q["own_captions"]) for q in report["v2t"]] == [("b", 2, ["c1"]), ("a", 1, ["c0"])]
    assert [c["caption"] for c in report["v2t"][0]["top_captions"]] == ["c2", "c1"]


def test_no_curves_without_training_and_clear_errors(data, tmp_path):
    out = tmp_path / "eval"
    results = main(common_args(data, out) + ["--do_eval"])
    assert not (out / "training_curves.png").exists() and not (out / "tensorboard").exists()
    # the evaluation's report beside eval_results.json: its worst t2v query has the largest rank of the run
    report = json.loads((out / "worst_queries_test.json").read_text())
    assert len(report["t2v"]) == 4 and len(report["v2t"]) == 4 and len(report["t2v"][0]["top_videos"]) == 4
    assert [q["rank"] for q in report["t2v"]] == sorted((q["rank"] for q in report["t2v"]), reverse=True)
    assert sum(q["rank"] for q in report["t2v"]) / 4 == pytest.approx(results["test"]["t2v"]["MnR"])
    assert matplotlib.image.imread(out / "rank_histogram_test.png").std() > 0
    main(common_args(data, tmp_path / "plain") + ["--do_eval", "--no-retrieval_report"])
    assert not list((tmp_path / "plain").glob("rank_histogram_*")) and not list((tmp_path / "plain").glob("worst_*"))
    with pytest.raises(SystemExit, match="metrics.jsonl holds no training step to draw"):
        plot_curves_main([str(out)])
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        plot_curves_main([str(tmp_path / "nothing")])
