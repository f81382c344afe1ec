"""Acceptance: two short training runs with the same seed on one machine give identical losses step by step: the
CPU kernels of this code are run-to-run deterministic at a fixed thread count, so the default run, in this
process, and a --deterministic run in its own process with DataLoader workers agree bit for bit."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from main import main
from tests.conftest import step_logs, write_run_data
from tests.test_main import common_args

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_run_data(tmp_path_factory.mktemp("synthetic"))


def test_same_seed_same_losses_step_by_step(data, tmp_path):
    def args(name: str) -> list[str]:  # STOP, its prompt convolutions by FFT, 4 optimizer steps, each logged
        return common_args(data, tmp_path / name) + [
            "--do_train", "--temporal_prompt", "stop", "--conv_impl", "fft", "--epochs", "1", "--batch_size", "2",
            "--n_display", "1", "--no-eval_every_epoch", "--no-plot_curves", "--seed", "3"]

    main(args("default"))
    threads = torch.get_num_threads()
    other = args("other") + ["--deterministic", "--num_thread_reader", "2"]
    code = f"import torch; torch.set_num_threads({threads}); import main; main.main({other!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

    losses = step_logs(tmp_path / "default")
    assert len(losses) == 4 and len(set(losses)) == 4  # four steps, each its own loss
    assert step_logs(tmp_path / "other") == losses  # bit for bit
    weights = [torch.load(tmp_path / name / "ckpt_last.pt", weights_only=True)["model"] for name in ("default",
                                                                                                   "other")]
    assert all(torch.equal(value, weights[1][key]) for key, value in weights[0].items())


def test_deterministic_mode_is_switched_on_for_the_run_and_off_after(data, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("main._run_locked", lambda *a, **k: seen.append(torch.are_deterministic_algorithms_enabled())
                        or {})
    main(common_args(data, tmp_path / "run") + ["--do_eval", "--deterministic"])
    assert seen == [True] and not torch.are_deterministic_algorithms_enabled()
