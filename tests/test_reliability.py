"""Faults and bad input through main(argv) on the tiny synthetic data (fixtures of tests/test_main.py): a diverging
run, resuming with other flags, a killed run's leftovers, a folder holding another run or written by another
process, bad videos inside DataLoader workers. In each, no data is lost and no wrong number reported; the run
ends with one `error: ...` line. The table of every case: docs/RELIABILITY.md."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import utils.engine.training.trainer
from main import main, parse_args
from models.clip import CLIP, CLIPConfig, save_clip_torchscript
from tests.conftest import write_run_data
from tests.test_main import common_args, read_jsonl
from utils.engine.run.folder import run_files
from utils.engine.run.folder_lock import FolderLock
from utils.engine.training.optimization import WarmupCosine

# 8 pairs, batch 4: 2 steps per epoch.
TRAIN = ["--do_train", "--batch_size", "4", "--n_display", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_run_data(tmp_path_factory.mktemp("synthetic"))


def run_error(argv: list[str]) -> str:
    """The one-line message main(argv) exits with."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    code = raised.value.code
    assert isinstance(code, str) and code.startswith("error: ") and "\n" not in code, code
    return code


def snapshot(folder: Path) -> dict[str, bytes]:
    """The run's files (not log.txt, not the lock files) and their content."""
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if p.is_file() and p.name != "log.txt" and not p.name.startswith(".")}


def all_finite(checkpoint: Path) -> bool:
    payload = torch.load(checkpoint, weights_only=True)
    tensors = list(payload["model"].values()) + [t for s in payload.get("optimizer", {}).get("state", {}).values()
                                                 for t in s.values()]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


# ------------------------------------------------------------------------------------------ divergence
def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    written = []  # (step, bytes) of every ckpt_last.pt written
    save = utils.engine.training.trainer.save_atomic

    def recording_save(payload, path):
        save(payload, path)
        if Path(path).name == "ckpt_last.pt":
            written.append((payload["global_step"], Path(path).read_bytes()))

    monkeypatch.setattr(utils.engine.training.trainer, "save_atomic", recording_save)
    message = run_error(common_args(data, out) + TRAIN + ["--do_eval", "--epochs", "2", "--lr", "1e6",
                                                          "--save_steps", "1", "--n_display", "100"])
    step = int(re.match(r"error: training step (\d+) \(epoch \d\): the loss is nan", message).group(1))
    assert f"stopped before the update. The last good checkpoint is {out}/ckpt_last.pt (step {step - 1})" in message
    # the last good ckpt_last.pt is untouched: nothing non-finite was written over it; no best, no results
    assert written and written[-1][0] == step - 1
    assert (out / "ckpt_last.pt").read_bytes() == written[-1][1] and all_finite(out / "ckpt_last.pt")
    assert not (out / "ckpt_best.pt").exists() and not (out / "eval_results.json").exists()
    assert all(r["loss"] == r["loss"] for r in read_jsonl(out / "metrics.jsonl"))  # no NaN was logged


def test_a_run_into_a_folder_another_process_writes_is_refused(data, tmp_path):
    out = tmp_path / "run"
    with FolderLock(out, "--output_dir"):  # another writer (another FileLock: refused like another process)
        message = run_error(common_args(data, out) + ["--do_eval"])
    assert message.startswith(f"error: --output_dir {out} is being written by process ")
    assert not run_files(out)


# ------------------------------------------------------------------------------------------ resume
@pytest.fixture(scope="module")
def stopped_run(data, tmp_path_factory) -> Path:
    """A run of 2 epochs (4 steps) stopped after step 3, with per-epoch evaluation."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    main(common_args(data, out) + TRAIN + ["--epochs", "2", "--stop_after_steps", "3"])
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def resume_args(data: Path, out: Path, *changes: str) -> list[str]:
    """The stopped run's flags, resumed from its folder, with `changes`."""
    return common_args(data, out) + TRAIN + ["--epochs", "2", "--resume", str(out), *changes]


@pytest.mark.parametrize("change,named", [
    (["--batch_size", "2"], "--batch_size 2 x 1 processes = 2 pairs per step (the checkpoint's run: 4 x 1 = 4)"),
    (["--lr", "0.01"], "--lr 0.01 (the checkpoint's run: 0.001)"),
    (["--seed", "1"], "--seed 1 (the checkpoint's run: 42)"),
    (["--epochs", "3"], "--epochs 3 (the checkpoint's run: 2; --resume_extend_epochs allows a larger value)"),
    (["--epochs", "1", "--resume_extend_epochs"],
     "--epochs 1 (the checkpoint's run: 2; --resume_extend_epochs only adds epochs)"),
    (["--text_prompt_length", "4"], "--text_prompt_length 4 (the checkpoint's run: 8)"),
    (["--max_frames", "3", "--wd", "0.1"], "--wd 0.1 (the checkpoint's run: 0.2); --max_frames 3 (the checkpoint's "
                                           "run: 2)"),
    (["--features_path", "{data}/videos/"], "--features_path {data}/videos/ (the checkpoint's run: {data}/videos)"),
])
def test_resume_refuses_flags_that_would_change_the_run(data, stopped_run, tmp_path, change, named):
    out = copy_of(stopped_run, tmp_path)
    before = snapshot(out)
    args = resume_args(data, out) + [c.format(data=data) for c in change]
    message = run_error(args)
    assert message.startswith(f"error: --resume {out}: these flags would change the run: "
                              f"{named.format(data=data)}. Resume with the run's flags (its hparams.json)"), message
    assert snapshot(out) == before  # nothing written


def test_resume_refuses_annotation_or_clip_files_changed_in_place_and_warns_for_a_run_without_their_record(
        data, tmp_path):
    own = tmp_path / "data"
    shutil.copytree(data, own)  # the files are changed in place: a copy of the module's data
    out = tmp_path / "run"
    main(common_args(own, out) + TRAIN + ["--epochs", "2", "--stop_after_steps", "1", "--no-plot_curves"])
    recorded = json.loads((out / "hparams.json").read_text())["data_fingerprint"]
    assert set(recorded["annotations"]) == {str(own / name) for name in
                                            ("MSRVTT_train.9k.csv", "MSRVTT_data.json", "MSRVTT_JSFUSION_test.csv")}
    assert set(recorded["clip"]) == {str(own / "tiny_clip.pt")}
    before = snapshot(out)
    train_csv, clip = own / "MSRVTT_train.9k.csv", own / "tiny_clip.pt"
    full_csv, original_clip = train_csv.read_text(), clip.read_bytes()
    train_csv.write_text("".join(full_csv.splitlines(keepends=True)[:5]))  # 8 -> 4 training videos
    assert run_error(resume_args(own, out)) == (
        f"error: --resume {out}: an annotation file {train_csv} changed since the run started "
        f"({len(full_csv)} -> {len(train_csv.read_text())} bytes), so the run would continue on other data (another "
        f"step plan); restore the file, or start a new run in another --output_dir")
    train_csv.write_text(full_csv)
    torch.manual_seed(5)
    save_clip_torchscript(CLIP(CLIPConfig.tiny()), clip)  # another CLIP at the same path
    message = run_error(resume_args(own, out))
    assert message.startswith(f"error: --resume {out}: the CLIP weights {clip} changed since the run started (")
    assert snapshot(out) == before  # nothing written
    clip.write_bytes(original_clip)
    hparams = json.loads((out / "hparams.json").read_text())
    (out / "hparams.json").write_text(json.dumps({k: v for k, v in hparams.items() if k != "data_fingerprint"}))
    main(resume_args(own, out) + ["--stop_after_steps", "2", "--no-plot_curves"])  # a run of an older version: resumed, with a warning
    assert (f"WARNING --resume {out}: {out / 'hparams.json'} records no fingerprint of the annotation files and the "
            f"CLIP") in (out / "log.txt").read_text()
    again = json.loads((out / "hparams.json").read_text())["data_fingerprint"]  # recorded again (new mtimes)
    assert {kind: {path: identity["sha256"] for path, identity in files.items()} for kind, files in again.items()} \
        == {kind: {path: identity["sha256"] for path, identity in files.items()} for kind, files in recorded.items()}


def test_resume_continues_in_its_folder_without_repeating_steps_or_keeping_temporaries(data, stopped_run, tmp_path):
    out = copy_of(stopped_run, tmp_path)
    with pytest.raises(SystemExit, match=f"--resume {out} continues the run in its folder {out}; --output_dir "
                                         f"{tmp_path / 'elsewhere'} is another folder"):
        parse_args(resume_args(data, out) + ["--output_dir", str(tmp_path / "elsewhere")])
    # What a kill after the step-3 checkpoint leaves: records of step 4 and a torn line, a temporary checkpoint.
    with open(out / "metrics.jsonl", "a") as file:
        file.write(json.dumps({"kind": "train", "step": 4, "loss": 9.0}) + "\n" + '{"kind": "tra')
    (out / ".ckpt_last.pt.99999.0badf00d.tmp").write_bytes(b"half a checkpoint")
    argv = resume_args(data, out)
    argv = argv[:argv.index("--output_dir")] + argv[argv.index("--output_dir") + 2:]  # continues in its folder
    # flags that do not change the run may differ
    results = main(argv + ["--n_display", "2", "--save_steps", "1", "--batch_size_val", "2", "--do_eval"])
    records = read_jsonl(out / "metrics.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4] and 9.0 not in [r["loss"] for r in records if r["kind"] == "train"]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    assert records[-1] == {"kind": "test", "step": 4, **results["test"]}
    assert not list(out.glob(".*.tmp"))
    log = (out / "log.txt").read_text()
    assert "removed 1 temporary files of an interrupted write: ['.ckpt_last.pt.99999.0badf00d.tmp']" in log
    assert "metrics.jsonl: dropped 2 records after step 3" in log
    assert json.loads((out / "hparams.json").read_text())["resumed_at_step"] == 3
    assert json.loads((out / "eval_results.json").read_text())["test"] == results["test"]


def test_resume_extend_epochs_continues_a_finished_run_on_the_new_schedule(data, tmp_path):
    out = tmp_path / "run"
    args = common_args(data, out) + TRAIN + ["--do_eval"]
    main(args + ["--epochs", "2"])
    # without the flag a larger --epochs is refused (it used to train at lr 0: the old schedule had ended)
    assert "--resume_extend_epochs allows a larger value" in run_error(args + ["--epochs", "3", "--resume", str(out)])
    results = main(args + ["--epochs", "3", "--resume", str(out), "--resume_extend_epochs"])
    records = read_jsonl(out / "metrics.jsonl")
    train = {r["step"]: r for r in records if r["kind"] == "train"}
    assert sorted(train) == [1, 2, 3, 4, 5, 6]
    schedule = WarmupCosine(6, 1)  # 3 epochs x 2 steps, warm-up round(0.1 x 6) = 1
    assert train[5]["lr"] == pytest.approx(1e-3 * schedule(5)) and train[5]["lr"] > 0
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    assert [r["step"] for r in records if r["kind"] == "test"] == [4, 6]
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["test"] == results["test"] and saved["best_epoch"] in (1, 2, 3)
    assert json.loads((out / "hparams.json").read_text())["epochs"] == 3
    assert torch.load(out / "ckpt_last.pt", weights_only=True)["global_step"] == 6


def test_evaluating_non_finite_weights_stops_instead_of_reporting_metrics(data, stopped_run, tmp_path):
    payload = torch.load(stopped_run / "ckpt_last.pt", weights_only=True)
    payload["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                        for k, v in payload["model"].items()}
    torch.save(payload, tmp_path / "nan.pt")  # a NaN checkpoint as written before this was refused
    message = run_error(common_args(data, tmp_path / "eval") + ["--do_eval", "--init_model", str(tmp_path / "nan.pt")])
    assert message == ("error: test: 4 of 4 video features are not finite (NaN or inf; e.g. ['video8', 'video9', "
                       "'video10']): the model's weights have diverged (see the training log) or --precision "
                       "overflows (try --precision fp32); no metrics are computed from them")
    assert not (tmp_path / "eval" / "eval_results.json").exists()


# ------------------------------------------------------------------------------------------ used folders
def test_a_folder_holding_another_run_is_refused_and_overwrite_moves_it_aside(data, tmp_path):
    out = tmp_path / "run"
    first = common_args(data, out) + TRAIN + ["--epochs", "1", "--do_eval"]
    main(first)
    before = snapshot(out)
    for argv in (first, common_args(data, out) + ["--do_eval"]):  # training or evaluating there
        message = run_error(argv)
        assert message == (f"error: --output_dir {out} holds another run (ckpt_best.pt, ckpt_last.pt, "
                           "eval_results.json, hparams.json, metrics.jsonl); continue it with --resume, choose a new "
                           "folder, or pass --overwrite to move its files aside first")
        assert snapshot(out) == before
    main(common_args(data, out) + ["--do_eval", "--overwrite"])
    archives = list(out.glob("previous_run_*"))
    assert len(archives) == 1
    assert snapshot(archives[0]) == before and (archives[0] / "log.txt").is_file()  # all of it, moved
    assert sorted(p.name for p in run_files(out)) == ["eval_results.json", "hparams.json", "metrics.jsonl"]
    assert [r["kind"] for r in read_jsonl(out / "metrics.jsonl")] == ["test"]
    assert "--overwrite: moved the previous run's" in (out / "log.txt").read_text()


# ------------------------------------------------------------------------------------------ bad videos in workers
@pytest.mark.parametrize("split", ["train", "test"])
def test_too_many_bad_videos_in_a_dataloader_worker_end_in_their_one_line_message(data, tmp_path, split):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    bad = ["video1", "video6"] if split == "train" else ["video9"]
    for name in bad:  # present but undecodable: found only when a worker reads them
        (copy / "videos" / f"{name}.mp4").write_bytes(b"\x00" * 4000)
    argv = common_args(copy, tmp_path / "run") + ["--num_thread_reader", "1", "--max_bad_video_fraction", "0.1"]
    argv += TRAIN + ["--epochs", "1", "--no-eval_every_epoch"] if split == "train" else ["--do_eval"]
    message = run_error(argv)
    total = 8 if split == "train" else 4
    pattern = (rf"error: msrvtt {split}: 1 of {total} videos are missing or unreadable, more than "
               rf"--max_bad_video_fraction 0.1 allows \(first: \['(video\d+)'\]\)\. List them with "
               r"`python -m preprocess.check_videos`, fix or drop them from the annotations, or raise "
               r"--max_bad_video_fraction\.")
    match = re.fullmatch(pattern, message)
    assert match and match.group(1) in bad, message
    assert "Traceback" not in message and "worker" not in message


def test_skipped_training_videos_are_named_in_the_log_and_in_metrics_per_epoch(data, tmp_path):
    """video1 undecodable (found by a DataLoader worker), video6 missing (found when the split is built): the epoch
    that first skips them lists them, with what is wrong, in log.txt and its metrics.jsonl record; later epochs
    count 0 new."""
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "videos" / "video1.mp4").write_bytes(b"\x00" * 4000)
    (copy / "videos" / "video6.mp4").unlink()
    out = tmp_path / "run"
    argv = common_args(copy, out) + ["--num_thread_reader", "1", "--max_bad_video_fraction", "0.3"]
    with pytest.warns(UserWarning, match="video6"):
        main(argv + TRAIN + ["--epochs", "2", "--no-eval_every_epoch"])
    epochs = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [(r["skipped_videos"], r["skipped_videos_count"], r["skipped_videos_total"]) for r in epochs] == [
        ({"video1": "unreadable", "video6": "missing"}, 2, 2), ({}, 0, 2)]
    log = (out / "log.txt").read_text()
    assert re.search(r"WARNING epoch 1: skipped 2 bad training video\(s\) \(2 of 8 so far\): video1 \(unreadable\), "
                     r"video6 \(missing\)", log), log
    assert "epoch 2: skipped" not in log


def test_every_test_the_reliability_table_names_exists():
    """docs/RELIABILITY.md names the test of each case as `file::function` (or `::function`, of the file named
    before it in the row): each must be a test function of that file, or the table points at nothing."""
    root = Path(__file__).resolve().parents[1]
    missing, cited = [], 0
    for line in (root / "docs" / "RELIABILITY.md").read_text().splitlines():
        if not line.startswith("| "):
            continue
        current = None
        for file, function in re.findall(r"`(test_\w+\.py)?::(\w+)`", line):
            current = file or current
            cited += 1
            if current is None or not re.search(rf"^def {function}\(", (root / "tests" / current).read_text()
                                                if (root / "tests" / current).is_file() else "", re.MULTILINE):
                missing.append(f"{current}::{function}")
    assert cited >= 90 and not missing, missing
