"""main(argv) end to end on a generated dataset with a tiny CLIP in OpenAI's format; clear errors for bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from main import main, parse_args
from tests.conftest import write_run_data
from utils.engine.run.folder import run_files

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 training videos (24 captions) and 4 test videos (2 opposite-direction pairs), 32 px, 4 frames."""
    return write_run_data(tmp_path_factory.mktemp("synthetic"))


def common_args(data: Path, out: Path) -> list[str]:
    return ["--datatype", "msrvtt", "--train_csv", str(data / "MSRVTT_train.9k.csv"),
            "--data_path", str(data / "MSRVTT_data.json"), "--val_csv", str(data / "MSRVTT_JSFUSION_test.csv"),
            "--features_path", str(data / "videos"), "--pretrained_clip_name", str(data / "tiny_clip.pt"),
            "--output_dir", str(out), "--max_frames", "2", "--max_words", "16", "--num_thread_reader", "0",
            "--precision", "fp32", "--device", "cpu", "--batch_size_val", "3", "--temporal_prompt", "none"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_train_then_evaluate_end_to_end(data, tmp_path):
    out = tmp_path / "run"
    results = main(common_args(data, out) + ["--do_train", "--do_eval", "--epochs", "2", "--batch_size", "6",
                                             "--expand_msrvtt_sentences", "--n_display", "2", "--save_similarity"])
    for name in ("hparams.json", "log.txt", "metrics.jsonl", "ckpt_last.pt", "ckpt_best.pt", "eval_results.json",
                 "similarity_test.pt"):
        assert (out / name).is_file(), name
    hparams = json.loads((out / "hparams.json").read_text())
    assert hparams["image_resolution"] == 32 and hparams["world_size"] == 1 and hparams["freeze_clip"] is True
    records = read_jsonl(out / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["step"] for r in train] == [1, 2, 4, 6, 8]             # 24 pairs / 6 = 4 steps per epoch, 2 epochs
    assert all(r["loss"] > 0 and r["samples_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in train)
    assert [r["epoch"] for r in epochs] == [1, 2] and all("eval" in r for r in epochs)
    assert records[-1]["kind"] == "test"
    test = results["test"]
    assert test["t2v"]["count"] == 4 and test["v2t"]["count"] == 4 and test["invalid_videos"] == 0
    assert results["best_epoch_selected_on_test_split"] is True
    assert json.loads((out / "eval_results.json").read_text())["test"]["t2v"] == test["t2v"]
    clip_bytes = (data / "tiny_clip.pt").stat().st_size
    assert (out / "ckpt_best.pt").stat().st_size < 0.5 * clip_bytes  # trained tensors only, no frozen CLIP
    log = (out / "log.txt").read_text()
    assert "samples/s" in log and "peak mem" in log and "test retrieval" in log

    # --do_eval from the best checkpoint reproduces the final evaluation of the training run, given as the file
    # or as the run folder (whose ckpt_best.pt is taken)
    again = main(common_args(data, tmp_path / "eval") + ["--do_eval", "--init_model", str(out / "ckpt_best.pt")])
    assert again["test"]["t2v"] == test["t2v"] and again["test"]["v2t"] == test["v2t"]
    from_folder = main(common_args(data, tmp_path / "eval_folder") + ["--do_eval", "--init_model", str(out)])
    assert from_folder["test"]["t2v"] == test["t2v"] and from_folder["test"]["v2t"] == test["v2t"]
    assert f"loaded checkpoint {out / 'ckpt_best.pt'}" in (tmp_path / "eval_folder" / "log.txt").read_text()
    sim = torch.load(out / "similarity_test.pt", weights_only=True)
    assert sim["similarity"].shape == (4, 4) and len(sim["video_ids"]) == 4


def test_stop_and_resume_through_main(data, tmp_path):
    out = tmp_path / "run"
    args = common_args(data, out) + ["--do_train", "--epochs", "2", "--batch_size", "4", "--n_display", "1",
                                     "--no-eval_every_epoch"]
    assert set(main(args + ["--stop_after_steps", "3"])) == {"train_seconds"}  # stopped: no evaluation
    assert not (out / "ckpt_best.pt").exists()
    main(args + ["--resume", str(out)])
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4]  # 8 pairs / 4 = 2 steps per epoch: steps 1-3, then resumed at 4
    assert "resumed at step 3 (epoch 2, step 1 of it)" in (out / "log.txt").read_text()


@pytest.mark.parametrize("change,message", [
    (["--init_model", "/nonexistent/ckpt_best.pt"], "--init_model: checkpoint not found: /nonexistent/ckpt_best.pt"),
    (["--val_csv", "/nonexistent/test.csv"], "/nonexistent/test.csv: file not found"),
    (["--pretrained_clip_name", "ViT-B/32", "--pretrained_dir", "/nonexistent"],
     "CLIP weights not found: /nonexistent/ViT-B-32.pt"),
    (["--features_path", "/nonexistent/videos"], "--features_path: video folder not found: /nonexistent/videos"),
    (["--output_dir", "{data}/MSRVTT_data.json"], "--output_dir {data}/MSRVTT_data.json is a file, not a folder"),
])
def test_eval_errors_are_one_clear_message(data, tmp_path, change, message):
    with pytest.raises(SystemExit) as raised:
        main(common_args(data, tmp_path) + ["--do_eval"] + [c.format(data=data) for c in change])
    assert isinstance(raised.value.code, str) and raised.value.code.startswith("error: ")
    assert message.format(data=data) in raised.value.code


def test_command_line_error_has_no_traceback(data, tmp_path):
    args = common_args(data, tmp_path) + ["--do_eval", "--init_model", str(tmp_path / "missing.pt")]
    proc = subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: --init_model: checkpoint not found: {tmp_path}/missing.pt"


def test_flags_are_real_booleans():
    base = ["--do_eval", "--output_dir", "x"]
    assert parse_args(base).freeze_clip is True
    assert parse_args(base + ["--no-freeze_clip"]).freeze_clip is False
    assert parse_args(base).do_train is False
    with pytest.raises(SystemExit):
        parse_args(["--output_dir", "x"])           # neither --do_train nor --do_eval
    with pytest.raises(SystemExit):
        parse_args(base + ["--freeze_clip", "False"])  # no type=bool flags that read "False" as True


@pytest.mark.parametrize("change,message,when_parsing", [
    (["--max_words", "1"], "--max_words must be >= 2 (SOT and EOT), got 1", True),
    (["--max_frames", "0"], "--max_frames must be >= 1, got 0", True),
    (["--num_thread_reader", "-1"], "--num_thread_reader must be >= 0, got -1", True),
    (["--lr", "-0.5"], "--lr must be a finite number > 0, got -0.5", True),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan", True),
    (["--save_steps", "-1"], "--save_steps must be >= 0, got -1", True),
    (["--seed", "-3"], "--seed must be >= 0, got -3", True),
    (["--train_group_size", "0"], "--train_group_size must be >= 1, got 0", True),
    (["--holdout_val_videos", "-2"], "--holdout_val_videos must be >= 0, got -2", True),
    (["--max_bad_video_fraction", "1.5"], "--max_bad_video_fraction must lie in [0, 1], got 1.5", True),
    (["--epochs", "zero"], "argument --epochs: invalid int value: 'zero'", True),
    (["--max_words", "78"], "--max_words 78 exceeds the CLIP's text context (77 tokens, SOT and EOT included)",
     False),
    (["--holdout_val_videos", "8"], "--holdout_val_videos 8 leaves no training video (the training split has 8)",
     False),
    (["--batch_size", "9"], "8 training items are fewer than one global batch (9 x 1 processes); lower --batch_size",
     False),
])
def test_flag_errors_are_one_line_before_anything_is_trained(data, tmp_path, change, message, when_parsing):
    """Range errors stop when parsing (no folder, no log, no model loaded); the checks against the CLIP and the
    data stop before training (no hparams.json, metrics or checkpoint)."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as raised:
        main(common_args(data, out) + ["--do_train", "--do_eval"] + change)
    suffix = f" (see {Path(sys.argv[0]).name} --help)" if when_parsing else ""
    assert raised.value.code == f"error: {message}{suffix}"
    assert not (out.exists() if when_parsing else run_files(out))


def test_unreadable_clip_weights_are_one_line(data, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((data / "tiny_clip.pt").read_bytes()[:5000])
    not_clip = tmp_path / "not_clip.pt"
    torch.save({"weight": torch.ones(2)}, not_clip)
    for path, message in ((truncated, "not a readable CLIP weights file"), (not_clip, "Not a ViT CLIP state dict")):
        with pytest.raises(SystemExit) as raised:
            main(common_args(data, tmp_path / path.stem) + ["--do_eval", "--pretrained_clip_name", str(path)])
        code = raised.value.code
        assert code.startswith(f"error: {path}: {message}") and "\n" not in code, code
