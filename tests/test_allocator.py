"""--retain_freed_memory (utils/engine/runtime/allocator.py): freed large buffers are reused instead of page-faulted in
again, each setting measured in a fresh process; outside glibc nothing is changed."""

import os
import subprocess
import sys

import pytest

from utils.engine.runtime import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Page faults of two calls of the spatial prompt (ViT-B/32 pixels, 2 videos of 12 frames: FFT buffers of 50-100
# MB), after two untimed calls.
FAULTS = """
import resource, sys, torch
from models.model_config import ModelConfig
from models.spatial_prompt import SpatialPrompt
from utils.engine.runtime.allocator import retain_freed_memory
print(retain_freed_memory(sys.argv[1] == "true"), file=sys.stderr)
prompt = SpatialPrompt(32, 7, ModelConfig(max_frames=12)).eval().requires_grad_(False)
video = torch.randn(2, 12, 3, 224, 224)
faults = []
with torch.no_grad():
    for _ in range(4):
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        prompt(video)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults[2])
"""


def page_faults(retain: bool) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-c", FAULTS, str(retain).lower()], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return int(done.stdout.strip()), done.stderr.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="glibc only")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    default, said_default = page_faults(False)
    retained, said_retained = page_faults(True)
    assert "defaults" in said_default and "kept in the process" in said_retained
    assert default >= 2 * 100  # at least one fault per 2 MiB huge page of the buffers of each call
    assert retained * 10 < default


def test_without_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *_: pytest.fail("mallopt must not be called"))
    assert "unchanged" in allocator.retain_freed_memory(True)
    assert "defaults" in allocator.retain_freed_memory(False)
