"""A tiny training run's TensorBoard events (read back by tensorboard's own reader) and training-curves PNG;
scripts/plot_curves.py on any run folder."""
from __future__ import annotations

import json

import matplotlib.image
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from main import main
from scripts.plot_curves import main as plot_curves_main
from tests.conftest import step_logs, write_run_data
from tests.test_main import common_args
from utils.engine.tensorboard_log import scalars


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
    tags = dict(scalars(record))
    assert tags["test/t2v/R1"] == 50.0 and tags["test_post_processed/dual_softmax/t2v/R1"] == 75.0
    assert len(tags) == 10  # five metrics of each: no parameter or count is a scalar


def test_no_curves_without_training_and_clear_errors(data, tmp_path):
    out = tmp_path / "eval"
    main(common_args(data, out) + ["--do_eval"])
    assert not (out / "training_curves.png").exists() and not (out / "tensorboard").exists()
    with pytest.raises(SystemExit, match="metrics.jsonl holds no training step to draw"):
        plot_curves_main([str(out)])
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        plot_curves_main([str(tmp_path / "nothing")])
