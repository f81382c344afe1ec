"""Every command the README documents starts as `python path/to/script.py` from any working directory."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["main.py", "infer.py", "preprocess/compress_video.py", "preprocess/check_videos.py",
           "preprocess/folder_to_lmdb.py", "utils/convert_released_checkpoint.py", "scripts/demo/tiny_clip_pretrain.py",
           "scripts/demo/direction_experiment.py", "scripts/demo/recognition_experiment.py",
           "scripts/demo/temporal_benchmark.py", "scripts/demo/shortcut_probes.py", "scripts/demo/prompt_mechanism.py",
           "scripts/demo/benchmark_report.py", "scripts/demo/demo_report.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_runs_from_another_directory(script, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
