"""File-system faults end main.py and infer.py with one `error: PATH: reason` line (utils/engine/run/cli.py), no
traceback, and lose nothing: a full disk while a checkpoint is written (the old one survives), a read-only output
folder, a file where the run's tensorboard/ folder goes. Programming errors keep their traceback."""
from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

import pytest
import torch

import infer
from main import main
from tests.conftest import meanp_index_argv, one_line_error, write_run_data
from tests.test_main import common_args
from utils.engine.run.cli import errors_as_one_line

TRAIN = ["--do_train", "--batch_size", "4", "--n_display", "1", "--epochs", "1"]  # 8 pairs: 2 steps


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_run_data(tmp_path_factory.mktemp("synthetic"))


def test_only_os_errors_and_user_errors_become_one_line():
    with pytest.raises(SystemExit, match=r"^error: runs/x/ckpt_last.pt: No space left on device$"):
        with errors_as_one_line():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/x/ckpt_last.pt")
    with pytest.raises(SystemExit, match=r"^error: a -> b: Permission denied$"):
        with errors_as_one_line():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "a", None, "b")
    for bug in (TypeError("a bug"), KeyError("a bug"), RuntimeError("a bug")):
        with pytest.raises(type(bug)):
            with errors_as_one_line():
                raise bug


def test_a_full_disk_while_a_checkpoint_is_written_is_one_line_and_the_old_checkpoint_survives(data, tmp_path,
                                                                                                monkeypatch):
    out = tmp_path / "run"
    save, saved = torch.save, []

    def save_until_the_disk_is_full(payload, file):
        if saved:  # the second checkpoint: half of it fits
            file.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        save(payload, file)
        saved.append(payload["global_step"])

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    message = one_line_error(main, common_args(data, out) + TRAIN + ["--save_steps", "1", "--no-eval_every_epoch"])
    assert message == f"error: {out / 'ckpt_last.pt'}: No space left on device"
    monkeypatch.undo()
    assert saved == [1] and torch.load(out / "ckpt_last.pt", weights_only=True)["global_step"] == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def read_only(folder: Path, monkeypatch) -> None:
    """Make the existing `folder` read-only: mode 0o555. As root, whom the mode does not stop, creating an entry
    in the folder (a file, a folder, a rename into it) is made to fail as the kernel fails it for other users:
    PermissionError (EACCES) naming the path."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return

    def refuse(path, creates: bool) -> None:
        if creates and not isinstance(path, int) and Path(os.fsdecode(path)).absolute().parent == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def guarded(function, creates):
        def call(path, *args, **kwargs):
            refuse(path, creates(path, *args, **kwargs))
            return function(path, *args, **kwargs)
        return call

    def opens_for_writing(path, mode="r", *args, **kwargs) -> bool:
        return any(c in mode for c in "wxa+") and not os.path.exists(path)

    monkeypatch.setattr(os, "open", guarded(os.open, lambda path, flags, *a, **k: bool(flags & os.O_CREAT)
                                           and not os.path.exists(path)))
    monkeypatch.setattr(os, "mkdir", guarded(os.mkdir, lambda path, *a, **k: not os.path.exists(path)))
    monkeypatch.setattr(builtins, "open", guarded(builtins.open, opens_for_writing))
    monkeypatch.setattr(io, "open", guarded(io.open, opens_for_writing))
    for name in ("replace", "rename"):
        function = getattr(os, name)
        monkeypatch.setattr(os, name, lambda source, target, *a, _f=function, **k: (
            refuse(target, True), _f(source, target, *a, **k))[1])


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    folder = tmp_path / "read_only"
    folder.mkdir()
    read_only(folder, monkeypatch)
    yield folder
    monkeypatch.undo()
    folder.chmod(0o755)


def test_read_only_emulation_refuses_what_a_read_only_folder_refuses(read_only_folder):
    for write in (lambda: (read_only_folder / "a").write_text("x"), lambda: (read_only_folder / "d").mkdir(),
                  lambda: open(read_only_folder / "b", "wb"), lambda: os.open(read_only_folder / "c", os.O_CREAT)):
        with pytest.raises(PermissionError):
            write()
    assert list(read_only_folder.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "eval", "resume"])
def test_a_read_only_run_folder_is_one_line_naming_it(data, tmp_path, read_only_folder, monkeypatch, command):
    argv = common_args(data, read_only_folder) + (["--do_eval"] if command == "eval" else TRAIN)
    if command == "resume":
        read_only_folder.chmod(0o755)
        monkeypatch.undo()
        main(common_args(data, read_only_folder) + TRAIN + ["--stop_after_steps", "1"])
        read_only(read_only_folder, monkeypatch)
        argv += ["--resume", str(read_only_folder)]
    before = sorted(read_only_folder.iterdir())
    message = one_line_error(main, argv)
    assert message.startswith(f"error: {read_only_folder}/") and message.endswith(": Permission denied"), message
    assert sorted(read_only_folder.iterdir()) == before


def test_read_only_output_folders_of_infer_are_one_line_naming_them(meanp_store, read_only_folder):
    clip, videos, store = meanp_store
    for argv, path in [
        (meanp_index_argv(clip, videos, read_only_folder), read_only_folder / ".lock"),
        (["search", "--store", str(store), "--gallery", str(read_only_folder / "out.html"), "a dog"],
         read_only_folder / "out.html"),
        (["embed-text", "--store", str(store), "--output", str(read_only_folder / "t.npy"), "a dog"],
         read_only_folder / "t.npy"),
    ]:
        assert one_line_error(infer.main, argv) == f"error: {path}: Permission denied", argv
    assert list(read_only_folder.iterdir()) == []


def test_a_file_where_the_tensorboard_folder_goes_is_one_line(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "tensorboard").write_text("not a folder")
    message = one_line_error(main, common_args(data, out) + TRAIN + ["--tensorboard"])
    assert message == f"error: {out / 'tensorboard'}: not a folder, where --tensorboard writes its events: move it " \
                      "away or leave out --tensorboard"
    assert (out / "tensorboard").read_text() == "not a folder"
