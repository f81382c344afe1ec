"""scripts/demo/recognition_experiment.py's table: the mean, spread and gain over zero-shot of the runs it is given
(the runs themselves are main.py's, tested in tests/test_recognition_main.py)."""
import pytest

from scripts.demo import recognition_experiment


def run(seed, key, top1):
    return {"seed": seed, "key": key, "method": recognition_experiment.METHODS[key][0], "top1": top1,
            "top5": 100.0, "mean_class_accuracy": top1 / 2, "train_seconds": 10.0 * seed, "count": 48}


def test_summary_is_the_mean_spread_and_gain_over_zero_shot_per_seed():
    rows = [run(0, "zero_shot", 25.0), run(1, "zero_shot", 50.0), run(0, "paper", 75.0), run(1, "paper", 100.0),
            run(0, "dgl", 25.0)]
    summary = {s["key"]: s for s in recognition_experiment.summarise(rows, ["zero_shot", "paper", "dgl", "stop"])}
    assert list(summary) == ["zero_shot", "paper", "dgl"]  # methods without runs are left out
    paper = summary["paper"]
    assert paper["seeds"] == [0, 1]
    assert paper["top1"] == {"mean": 87.5, "std": 12.5, "min": 75.0, "max": 100.0}
    assert paper["top1_gain"] == {"mean": 50.0, "std": 0.0, "min": 50.0, "max": 50.0}  # 75-25 and 100-50
    assert paper["mean_class_accuracy"]["mean"] == pytest.approx(43.75)
    assert summary["dgl"]["top1_gain"]["mean"] == 0.0
    assert "top1_gain" not in recognition_experiment.summarise([run(0, "paper", 75.0)], ["paper"])[0]
