"""main.py --task recognition end to end on generated videos with a tiny CLIP: zero-shot on UCF101-format split
files (the README's example command), the metrics against the model's own scores, missing videos counted,
training with cross-entropy and re-evaluating its checkpoint, multi-view testing, and the flag errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dataloaders import BadVideoWarning
from dataloaders.recognition import build_recognition_dataset
from main import main, parse_args
from models import ModelConfig, create_model
from models.clip import load_clip
from tests.conftest import write_run_data

FLAGS = ["--max_frames", "2", "--max_words", "16", "--num_thread_reader", "0", "--precision", "fp32",
         "--device", "cpu", "--batch_size_val", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """write_run_data's 8 training and 4 test videos (recognition CSVs included) and the same videos in UCF101's
    layout: split 2's files (CRLF) over folders of direction classes."""
    root = write_run_data(tmp_path_factory.mktemp("recognition"))
    ucf = root / "ucf"
    names = {f"shape_moves_from_{a}_to_{b}": f"Moves{a.title()}To{b.title()}"
             for a, b in (("left", "right"), ("right", "left"), ("top", "bottom"), ("bottom", "top"))}
    classes = list(names.values())
    lists = {}
    for split in ("train", "test"):
        lines = []
        for number, line in enumerate((root / f"recognition_direction_{split}.csv").read_text().splitlines()[1:]):
            path, label = line.split(",")
            name = f"{names[label]}/v_{names[label]}_g{number + 1:02d}_c0{1 if split == 'train' else 2}"
            (ucf / "videos" / names[label]).mkdir(parents=True, exist_ok=True)
            shutil.copy(root / "videos" / path, ucf / "videos" / f"{name}.mp4")
            lines.append(f"{name}.avi {classes.index(names[label]) + 1}" if split == "train" else f"{name}.avi")
        lists[split] = lines
    (ucf / "classInd.txt").write_bytes("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(classes)).encode())
    (ucf / "trainlist02.txt").write_bytes("".join(f"{line}\r\n" for line in lists["train"]).encode())
    (ucf / "testlist02.txt").write_bytes("".join(f"{line}\r\n" for line in lists["test"]).encode())
    return root


def csv_flags(data: Path, classes: str = "direction") -> list[str]:
    return ["--task", "recognition", "--datatype", "csv", "--features_path", str(data / "videos"),
            "--train_csv", str(data / f"recognition_{classes}_train.csv"),
            "--val_csv", str(data / f"recognition_{classes}_test.csv"),
            "--class_list", str(data / f"recognition_{classes}_classes.txt"), "--class_template", "a {name}",
            "--pretrained_clip_name", str(data / "tiny_clip.pt"), *FLAGS]


def test_zero_shot_on_ucf101_split_files_matches_the_models_own_scores(data, tmp_path):
    out = tmp_path / "ucf_zs"
    results = main(["--task", "recognition", "--do_eval", "--prompt", "none", "--datatype", "ucf101",
                    "--data_path", str(data / "ucf"), "--split", "2", "--features_path", str(data / "ucf" / "videos"),
                    "--output_dir", str(out), "--pretrained_clip_name", str(data / "tiny_clip.pt"), *FLAGS])
    test = json.loads((out / "eval_results.json").read_text())["test"]
    assert test == results["test"]
    assert test["count"] == 4 and test["num_classes"] == 4 and test["invalid_videos"] == 0
    assert (out / "confusion_matrix_test.png").stat().st_size > 0
    per_class = json.loads((out / "per_class_test.json").read_text())
    assert [c["text"] for c in per_class] == [f"a video of a person moves {d}" for d in
                                             ("left to right", "right to left", "top to bottom", "bottom to top")]
    # the reference: meanP features of the same clips scored against the class texts by hand
    args = parse_args(["--task", "recognition", "--do_eval", "--datatype", "ucf101", "--data_path", str(data / "ucf"),
                       "--split", "2", "--features_path", str(data / "ucf" / "videos"), "--output_dir", str(out),
                       *FLAGS])
    model = create_model(ModelConfig(prompt="none", max_frames=2), load_clip(str(data / "tiny_clip.pt"))).eval()
    dataset = build_recognition_dataset(args, "test", model.clip.visual.input_resolution)
    with torch.no_grad():
        classes = torch.nn.functional.normalize(model.encode_text(dataset.class_tokens()), dim=-1)
        items = [dataset.video_view()[i] for i in range(4)]
        videos = model.encode_video(torch.stack([i["video"][0] for i in items]),
                                    torch.stack([i["video_mask"][0] for i in items]))
        scores = torch.nn.functional.normalize(videos, dim=-1) @ classes.t()
    hits = (scores.argmax(1) == dataset.labels).float()
    assert test["top1"] == pytest.approx(100 * hits.mean().item())
    predictions = json.loads((out / "predictions_test.json").read_text())  # per video, in dataset order
    assert [p["video"] for p in predictions] == dataset.video_ids
    assert [p["label"] for p in predictions] == [dataset.class_names[c] for c in dataset.labels]
    assert [p["predicted"] for p in predictions] == [dataset.class_names[c] for c in scores.argmax(1)]
    assert test["top5"] == 100.0  # 4 classes
    per_class_hits = [hits[dataset.labels == c].mean().item() for c in dataset.labels.unique()]
    assert test["mean_class_accuracy"] == pytest.approx(100 * sum(per_class_hits) / len(per_class_hits))


def test_missing_videos_are_counted_and_left_out(data, tmp_path):
    test_csv = tmp_path / "test.csv"
    listed = (data / "recognition_direction_test.csv").read_text()
    test_csv.write_text(listed + "gone.mp4,shape_moves_from_left_to_right\n")
    flags = csv_flags(data)
    flags[flags.index("--val_csv") + 1] = str(test_csv)
    with pytest.warns(BadVideoWarning, match=r"csv test: 1 of 5 videos not found .*gone\.mp4"):
        test = main(["--do_eval", "--prompt", "none", "--output_dir", str(tmp_path / "run"),
                     "--max_bad_video_fraction", "0.5", *flags])["test"]
    assert test["count"] == 4 and test["invalid_videos"] == 1 and test["invalid_video_ids"] == ["gone.mp4"]


def test_train_with_cross_entropy_then_evaluate_the_checkpoint(data, tmp_path):
    out = tmp_path / "dgl"
    trained = main(["--do_train", "--do_eval", "--temporal_prompt", "none", "--epochs", "2", "--batch_size", "4",
                    "--n_display", "1", "--tensorboard", "--output_dir", str(out), *csv_flags(data, "direction_shape")])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["eval"]["count"] for r in epochs] == [4, 4] and trained["best_epoch"] in (1, 2)
    assert trained["best_val_top1"] == max(r["eval"]["top1"] for r in epochs)
    # --tensorboard logs the task's scalars: val top-1 per epoch, the test top-1 at the last step
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    val = events.Scalars("val/top1")
    assert [e.step for e in val] == [r["step"] for r in epochs]
    assert [e.value for e in val] == pytest.approx([r["eval"]["top1"] for r in epochs], rel=1e-6)
    assert [(e.step, e.value) for e in events.Scalars("test/top1")] == [(4, pytest.approx(trained["test"]["top1"]))]
    assert {"val/top5", "val/mean_class_accuracy", "test/mean_class_accuracy"} <= set(events.Tags()["scalars"])
    steps = [r for r in records if r["kind"] == "train"]
    assert len(steps) == 4 and all(r["loss"] > 0 for r in steps)
    assert trained["test"]["num_classes"] == 12
    again = main(["--do_eval", "--temporal_prompt", "none", "--init_model", str(out), "--output_dir",
                  str(tmp_path / "again"), *csv_flags(data, "direction_shape")])["test"]
    for key in ("top1", "top5", "mean_class_accuracy", "count"):
        assert again[key] == pytest.approx(trained["test"][key]), key
    views = main(["--do_eval", "--temporal_prompt", "none", "--init_model", str(out), "--test_views", "2",
                  "--output_dir", str(tmp_path / "views"), *csv_flags(data, "direction_shape")])["test"]
    assert views["views"] == 2 and views["count"] == 4


@pytest.mark.parametrize("change, message", [
    (["--datatype", "msrvtt"], "--task recognition reads ucf101, hmdb51, kinetics400, ssv2, csv; --datatype msrvtt"),
    (["--datatype", "ucf101", "--split", "4"], "--split must be 1, 2 or 3"),
    (["--split", "2"], "--split chooses a split of ucf101 or hmdb51; --datatype csv has one"),
    (["--datatype", "ssv2"], "--class_list is for --datatype csv; ssv2 reads its published class list"),
    (["--shots", "-1"], "--shots must be >= 0"),
    (["--test_views", "0"], "--test_views must be >= 1"),
    (["--class_template", "a video"], "must contain {name} exactly once"),
    (["--qb_norm"], "--qb_norm are flags of --task retrieval: leave them out with --task recognition"),
])
def test_recognition_flag_errors_are_one_line(data, tmp_path, change, message):
    with pytest.raises(SystemExit) as error:
        main(["--do_eval", "--output_dir", str(tmp_path / "x"), *csv_flags(data), *change])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_retrieval_refuses_recognition_data_and_flags(data, tmp_path):
    with pytest.raises(SystemExit, match="--datatype ucf101 is a dataset of --task recognition"):
        parse_args(["--do_eval", "--datatype", "ucf101", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="--shots are flags of --task recognition: leave them out with --task "
                                         "retrieval"):
        parse_args(["--do_eval", "--shots", "4", "--output_dir", str(tmp_path)])


def test_an_unknown_class_stops_before_any_work(data, tmp_path):
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("path,label\nvideo8.mp4,shape_moves_in_circles\n")
    flags = csv_flags(data)
    flags[flags.index("--val_csv") + 1] = str(test_csv)
    with pytest.raises(SystemExit, match=r"test\.csv: line 2: unknown class 'shape_moves_in_circles'"):
        main(["--do_eval", "--prompt", "none", "--output_dir", str(tmp_path / "run"), *flags])
    assert not (tmp_path / "run" / "eval_results.json").exists()
