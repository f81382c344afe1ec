"""The GPU check (benchmarks/gpu_check.py, scripts/gpu_check.sh): its --device cpu --tiny run reports every check
with a status and its figures, the CPU-against-CPU comparisons pass, and a check that fails or crashes is reported
as failed (the report still written, the other checks run) rather than ending the run."""
from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> tuple[dict, str]:
    output = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--device", "cpu", "--tiny", "--output", str(output)],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((output / "gpu_check.json").read_text()), (output / "gpu_check.md").read_text()


def test_every_check_is_reported_with_a_status_and_its_figures(tiny_report):
    report, summary = tiny_report
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == list(gpu_check.CHECKS)
    for name, check in checks.items():
        assert check["status"] in gpu_check.STATUSES, name
        if check["status"] == "passed":
            assert check["figures"]["summary"] and check["reason"] is None, name
        else:
            assert check["reason"], name
        assert f"| {name} | {check['status']} |" in summary
    assert report["counts"] == {s: sum(c["status"] == s for c in checks.values()) for s in gpu_check.STATUSES}
    throughput = checks["throughput"]["figures"]["rows"]
    assert [row["global_batch"] for row in throughput] == [2, 4]
    for row in throughput:
        for case in ("encode", "train_unsplit", "train_micro_batches"):
            assert row[case]["videos_per_s"] > 0 and row[case]["peak_memory_mib"] > 0, (row["global_batch"], case)
        assert row["train_micro_batches"]["micro_batch_size"] == row["global_batch"] // 2
    loader = checks["data_loader"]["figures"]
    assert [r["workers"] for r in loader["loaders"]] == list(gpu_check.LOADER_WORKERS)
    assert all(r["steady_videos_per_s"] > 0 for r in loader["loaders"]) and loader["train_step_videos_per_s"] > 0
    conv = checks["conv_impl"]["figures"]
    assert len(conv["layers_forward_no_grad"]) == 8 and set(conv["auto_should_pick"].values()) <= {"direct", "fft"}
    assert checks["index"]["figures"]["exact_queries_per_s"] > 0


def test_the_cpu_against_cpu_comparisons_pass(tiny_report):
    checks = {c["name"]: c for c in tiny_report[0]["checks"]}
    features = checks["features"]
    assert features["status"] == "passed"
    for variant in gpu_check.VARIANTS:
        assert features["figures"][variant]["video_max_relative_error"] <= gpu_check.FEATURE_TOLERANCE
        assert features["figures"][variant]["text_max_relative_error"] <= gpu_check.FEATURE_TOLERANCE
    ddp = checks["ddp"]
    assert ddp["status"] == "passed" and ddp["figures"]["backend"] == "gloo" and ddp["figures"]["processes"] == 2
    assert ddp["figures"]["losses_group"] == pytest.approx(ddp["figures"]["losses_1_process"], rel=1e-4)
    amp = checks["amp"]["figures"]
    assert checks["amp"]["status"] == "passed" and amp["bf16"]["status"] == "passed"
    assert len(amp["bf16"]["losses"]) == 20 and amp["bf16"]["last_5_mean"] < amp["bf16"]["first_5_mean"]
    assert amp["fp16"]["status"] == "not_applicable" and "CUDA" in amp["fp16"]["reason"]


def run_in_process(tmp_path: Path, *checks: str) -> tuple[int, dict[str, dict], dict]:
    """gpu_check.main on the CPU, tiny, for `checks` -> (exit code, the checks by name, the whole report)."""
    code = gpu_check.main(["--device", "cpu", "--tiny", "--output", str(tmp_path), "--checks", *checks])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    return code, {c["name"]: c for c in report["checks"]}, report


def test_a_check_whose_criterion_fails_is_reported_as_failed_with_its_figures(tmp_path, monkeypatch):
    def perturbed(model, device):
        moved = copy.deepcopy(model).to(device)
        with torch.no_grad():
            moved.clip.visual.conv1.weight.mul_(1.01)
        return moved

    monkeypatch.setattr(gpu_check, "on_device", perturbed)
    code, checks, report = run_in_process(tmp_path, "features", "index")
    assert code == 1
    features = checks["features"]
    assert features["status"] == "failed" and "differ from the CPU's" in features["reason"]
    assert features["figures"]["dgl"]["video_max_relative_error"] > gpu_check.FEATURE_TOLERANCE
    assert checks["index"]["status"] == "passed"  # the checks after a failed one still run
    assert report["counts"] == {"passed": 1, "failed": 1, "not_applicable": 0}
    assert "| features | failed |" in (tmp_path / "gpu_check.md").read_text()


def test_a_crashing_check_is_reported_as_failed_not_raised(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the search broke")

    monkeypatch.setattr(gpu_check, "exact_top_k", broken)
    code, checks, _ = run_in_process(tmp_path, "index", "features")
    assert code == 1
    assert checks["index"]["status"] == "failed" and checks["index"]["reason"] == "RuntimeError: the search broke"
    assert "broken" in checks["index"]["figures"]["traceback"]
    assert checks["features"]["status"] == "passed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks that a machine without CUDA says so")
def test_without_a_gpu_every_check_of_the_cuda_run_is_not_applicable(tmp_path):
    assert gpu_check.main(["--device", "cuda", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [c["name"] for c in report["checks"]] == list(gpu_check.CHECKS)
    assert all(c["status"] == "not_applicable" and c["reason"].startswith("no CUDA device")
               for c in report["checks"])
