"""scripts/demo/recognition_experiment.py end to end on a toy setting: the rows are the pair scores of the runs'
own predictions, every trained method took the same steps, the gain is against the best order-blind trained
baseline of the same seed (not the zero-shot row), the tables go into a markdown file, and a second invocation
(with --jobs 2) reads the finished runs."""
import json

import pandas as pd
import pytest

from scripts.demo import recognition_experiment
from scripts.demo.markdown_section import replace_section

TOY = ["--seeds", "0", "--class_sets", "direction", "--methods", "meanp", "single_frame", "dgl_shuffled", "paper",
       "--train_pairs", "4", "--test_pairs", "3", "--epochs", "1", "--batch_size", "4", "--clip_steps", "5",
       "--clip_images", "16"]


def test_rows_are_pair_scores_at_equal_steps_with_gains_over_the_order_blind_baselines(tmp_path):
    out = tmp_path / "recognition"
    md = tmp_path / "RESULTS.md"
    md.write_text(f"intro\n{recognition_experiment.BEGIN}\nold\n{recognition_experiment.END}\nrest\n")
    argv = ["--output", str(out), "--clip_cache", str(tmp_path / "clips"), "--results_md", str(md), *TOY]
    result = recognition_experiment.main(argv)
    saved = json.loads((out / "recognition_benchmark.json").read_text())
    assert saved["rows"] == result["rows"]
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["meanp", "single_frame", "dgl_shuffled", "paper"]
    assert {r["class_set"] for r in rows.values()} == {"direction"} and rows["paper"]["pairs"] == 3
    # the scores are the run's own predictions, pair by pair (consecutive lines of the test list)
    seed = out / "seed0"
    test = pd.read_csv(seed / "data" / "recognition_direction_test.csv")
    for method, row in rows.items():
        predictions = json.loads((seed / "direction" / method / "predictions_test.json").read_text())
        assert [p["video"] for p in predictions] == list(test["path"])
        right = [p["predicted"] == p["label"] for p in predictions]
        assert row["top1"] == pytest.approx(100 * sum(right) / len(right))
        assert row["pair_score"] == pytest.approx(100 * sum(a and b for a, b in zip(right[::2], right[1::2])) / 3)
        assert row["top1_ci95"][0] <= row["top1"] <= row["top1_ci95"][1]
        guesses = [p["predicted"] for p in predictions]
        assert row["same_answer"] == pytest.approx(100 * sum(a == b for a, b in zip(guesses[::2], guesses[1::2])) / 3)
        hparams = json.loads((seed / "direction" / method / "hparams.json").read_text())
        assert hparams["class_template"] == "the {name}" and hparams["test_csv"].endswith("_test.csv")
    assert rows["meanp"]["steps"] == 0
    assert rows["single_frame"]["steps"] == rows["dgl_shuffled"]["steps"] == rows["paper"]["steps"] == 2
    # the gain: against the best of single frame / shuffled DGL of the seed, per score; meanP is not the reference
    for score in ("top1", "pair_score"):
        best = max((rows["single_frame"], rows["dgl_shuffled"]), key=lambda r: r[score])
        for row in rows.values():
            assert row[f"{score}_reference"] == best["method"]
            assert row[f"{score}_gain"] == pytest.approx(row[score] - best[score])
    paper = next(s for s in result["summary"] if s["method"] == "paper")
    assert paper["pair_score_gain"]["mean"] == pytest.approx(rows["paper"]["pair_score_gain"])
    text = md.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{recognition_experiment.END}\nrest\n")
    assert "old" not in text and "| 0 | STOP (paper) |" in text and "### direction" in text
    trained = (seed / "direction" / "paper" / "ckpt_last.pt").stat().st_mtime_ns
    again = recognition_experiment.main([*argv, "--jobs", "2"])  # through the worker pool: the runs are read
    assert (seed / "direction" / "paper" / "ckpt_last.pt").stat().st_mtime_ns == trained  # not retrained
    assert again["rows"] == result["rows"]
    assert recognition_experiment.main(["--report", str(out / "recognition_benchmark.json")])["rows"] == result["rows"]


def test_a_missing_test_video_names_the_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions_test.json").write_text(json.dumps([{"video": "a.mp4", "label": "x", "predicted": "x"}]))
    listed = tmp_path / "test.csv"
    listed.write_text("path,label\na.mp4,x\nb.mp4,y\n")
    with pytest.raises(ValueError, match=r"run: test video b\.mp4 was not scored"):
        recognition_experiment.pair_predictions(run, listed)


def test_a_results_page_without_the_markers_is_refused_and_left_as_it_was(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text(f"intro\n{recognition_experiment.BEGIN}\nno end marker\n")
    with pytest.raises(ValueError, match=r"RESULTS\.md has no <!-- recognition_benchmark:begin --> \.\.\. "):
        replace_section(page, recognition_experiment.BEGIN, recognition_experiment.END, "tables\n")
    assert page.read_text() == f"intro\n{recognition_experiment.BEGIN}\nno end marker\n"
