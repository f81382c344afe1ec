"""scripts/demo/direction_experiment.py on a toy setting: the table, plot and JSON it writes agree with the runs'
own results, the frames-shuffled row evaluates the trained checkpoint, and a second invocation reads finished
runs instead of repeating them."""
import json
import shutil

import matplotlib.image
import pytest
import torch

from scripts.demo import direction_experiment, report

TOY = ["--num_train", "8", "--num_test", "4", "--video_frames", "8", "--clip_steps", "5", "--epochs", "1",
       "--batch_size", "4", "--frames", "2"]
INDEPENDENT = [*TOY, "--no-train_pairs"]  # independent training videos, one item per caption


def test_experiment_tables_the_runs_and_resumes(tmp_path):
    out = tmp_path / "exp"
    rows = direction_experiment.main(["--output", str(out), "--seeds", "0", "--methods", "meanp", "paper",
                                      "paper_shuffled", *INDEPENDENT])
    assert [r["key"] for r in rows] == ["meanp", "paper", "paper_shuffled"]
    saved = json.loads((out / "results.json").read_text())
    twin_of = report.twins(json.loads((out / "seed0" / "data" / "synthetic_metadata.json").read_text()))
    for row in saved["runs"]:
        expected = report.run_summary(row["method"], out / "seed0" / row["key"], twin_of)
        assert row["direction_t2v"] == expected["direction_t2v"] and row["t2v_R1"] == expected["t2v"]["R1"]
    shuffled = json.loads((out / "seed0" / "paper_shuffled" / "hparams.json").read_text())
    assert shuffled["eval_frame_order"] == "shuffled" and shuffled["init_model"].endswith("paper")
    trained_flags = json.loads((out / "seed0" / "paper" / "hparams.json").read_text())
    assert trained_flags["expand_msrvtt_sentences"] is True and trained_flags["train_group_size"] == 1
    assert [s["key"] for s in saved["summary"]] == ["meanp", "paper", "paper_shuffled"]
    text = (out / "summary.md").read_text()
    assert "| STOP (paper) |" in text
    assert "Training curves: [seed0 paper](seed0/paper/training_curves.png)." in text  # trained runs only
    (out / "seed0" / "paper" / "training_curves.png").unlink()  # a run older than the figure: drawn for the table
    assert matplotlib.image.imread(out / "summary.png").shape[2] == 4
    trained = (out / "seed0" / "paper" / "ckpt_last.pt").stat().st_mtime_ns
    again = direction_experiment.main(["--output", str(out), "--seeds", "0", "--methods", "meanp", "paper",
                                       *INDEPENDENT])
    assert (out / "seed0" / "paper" / "ckpt_last.pt").stat().st_mtime_ns == trained  # read, not retrained
    assert again == rows[:2]
    assert matplotlib.image.imread(out / "seed0" / "paper" / "training_curves.png").shape[2] == 4
    tabled = direction_experiment.main(["--output", str(out), "--seeds", "0", "--methods", "meanp", "dgl",
                                        "--report_only", *INDEPENDENT])
    assert [r["key"] for r in tabled] == ["meanp"] and not (out / "seed0" / "dgl").exists()  # nothing trained


def test_shuffled_rows_need_their_trained_method():
    with pytest.raises(SystemExit):
        direction_experiment.parse_args(["--output", "x", "--methods", "meanp", "stop_shuffled"])


def test_parallel_jobs_with_training_pairs_equal_the_sequential_runs(tmp_path, monkeypatch):
    """--jobs 2 (worker processes, 1 torch thread each on 2 logical CPUs) gives the same runs as --jobs 1 at 1
    thread; --train_pairs trains on twin pairs kept in one batch, one caption per video."""
    monkeypatch.setattr(direction_experiment.os, "cpu_count", lambda: 2)
    methods = ["--methods", "meanp", "paper", "paper_shuffled", *TOY]  # --train_pairs is the default
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sequential = direction_experiment.main(["--output", str(tmp_path / "seq"), "--seeds", "0", *methods])
    finally:
        torch.set_num_threads(threads)
    shutil.copytree(tmp_path / "seq" / "seed0" / "data", tmp_path / "par" / "seed0" / "data")  # the same inputs
    for clip in (tmp_path / "seq" / "seed0").glob("tiny_clip.*"):
        shutil.copy(clip, tmp_path / "par" / "seed0")
    parallel = direction_experiment.main(["--output", str(tmp_path / "par"), "--seeds", "0", "--jobs", "2",
                                          *methods])
    drop = ("train_seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in parallel] == \
        [{k: v for k, v in r.items() if k not in drop} for r in sequential]
    hparams = json.loads((tmp_path / "par" / "seed0" / "paper" / "hparams.json").read_text())
    assert hparams["train_group_size"] == 2 and hparams["expand_msrvtt_sentences"] is False
    assert hparams["warmup_proportion"] == 0.3
    assert "training pairs in one batch" in (tmp_path / "par" / "summary.md").read_text()
    assert "2 runs at once, 1 threads each" in (tmp_path / "par" / "summary.md").read_text()
    assert (tmp_path / "par" / "seed0" / "paper.console.txt").stat().st_size > 0
