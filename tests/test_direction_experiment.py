"""scripts/demo/direction_experiment.py on a toy setting: the table, plot and JSON it writes agree with the runs'
own results, the frames-shuffled row evaluates the trained checkpoint, and a second invocation reads finished
runs instead of repeating them."""
import json

import matplotlib.image
import pytest

from scripts.demo import direction_experiment, report

TOY = ["--num_train", "8", "--num_test", "4", "--video_frames", "8", "--clip_steps", "5", "--epochs", "1",
       "--batch_size", "4", "--frames", "2"]


def test_experiment_tables_the_runs_and_resumes(tmp_path):
    out = tmp_path / "exp"
    rows = direction_experiment.main(["--output", str(out), "--seeds", "0", "--methods", "meanp", "paper",
                                      "paper_shuffled", *TOY])
    assert [r["key"] for r in rows] == ["meanp", "paper", "paper_shuffled"]
    saved = json.loads((out / "results.json").read_text())
    twin_of = report.twins(json.loads((out / "seed0" / "data" / "synthetic_metadata.json").read_text()))
    for row in saved["runs"]:
        expected = report.run_summary(row["method"], out / "seed0" / row["key"], twin_of)
        assert row["direction_t2v"] == expected["direction_t2v"] and row["t2v_R1"] == expected["t2v"]["R1"]
    shuffled = json.loads((out / "seed0" / "paper_shuffled" / "hparams.json").read_text())
    assert shuffled["eval_frame_order"] == "shuffled" and shuffled["init_model"].endswith("paper")
    assert [s["key"] for s in saved["summary"]] == ["meanp", "paper", "paper_shuffled"]
    text = (out / "summary.md").read_text()
    assert "| STOP (paper) |" in text
    assert "Training curves: [seed0 paper](seed0/paper/training_curves.png)." in text  # trained runs only
    (out / "seed0" / "paper" / "training_curves.png").unlink()  # a run older than the figure: drawn for the table
    assert matplotlib.image.imread(out / "summary.png").shape[2] == 4
    trained = (out / "seed0" / "paper" / "ckpt_last.pt").stat().st_mtime_ns
    again = direction_experiment.main(["--output", str(out), "--seeds", "0", "--methods", "meanp", "paper", *TOY])
    assert (out / "seed0" / "paper" / "ckpt_last.pt").stat().st_mtime_ns == trained  # read, not retrained
    assert again == rows[:2]
    assert matplotlib.image.imread(out / "seed0" / "paper" / "training_curves.png").shape[2] == 4
    tabled = direction_experiment.main(["--output", str(out), "--seeds", "0", "--methods", "meanp", "dgl",
                                        "--report_only", *TOY])
    assert [r["key"] for r in tabled] == ["meanp"] and not (out / "seed0" / "dgl").exists()  # nothing trained


def test_shuffled_rows_need_their_trained_method():
    with pytest.raises(SystemExit):
        direction_experiment.parse_args(["--output", "x", "--methods", "meanp", "stop_shuffled"])
