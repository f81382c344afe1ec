"""--video_backend (dataloaders/video_backends.py): OpenCV (and torchcodec where it loads) read the same frames as
PyAV (count and indices, evaluation and training sampling), pixels within a colour conversion's few levels; the
same failure kinds; a backend that cannot load is refused by name."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from dataloaders import build_dataset
from dataloaders.synthetic import write_video
from dataloaders.video_backends import READERS, VIDEO_BACKENDS, check_backend
from dataloaders.video_input import read_video_tensor
from dataloaders.video_reader import VideoReadError, read_frames
from tests.data_fixtures import RESOLUTION, coded_frames, frame_index, msrvtt_args, synthetic_root


def loadable(backend: str) -> bool:
    try:
        return check_backend(backend) == backend
    except ValueError:
        return False


OTHERS = [pytest.param(b, marks=pytest.mark.skipif(not loadable(b), reason=f"{b} does not load here"))
          for b in VIDEO_BACKENDS if b != "pyav"]


@pytest.fixture(scope="module")
def coded_video(tmp_path_factory) -> str:
    """27 frames (yuv420p H.264, as compress_video writes them) whose red level tells the frame's index."""
    path = tmp_path_factory.mktemp("backends") / "coded.mp4"
    write_video(str(path), coded_frames(27, 32, 48), fps=3)
    return str(path)


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("segments", [12, 40])  # 40 > 27 frames: every frame once
def test_the_same_frames_as_pyav(coded_video, backend, train, segments):
    reference = read_frames(coded_video, segments, train, torch.Generator().manual_seed(3))
    frames = READERS[backend](coded_video, segments, train, torch.Generator().manual_seed(3))
    assert frames.shape == reference.shape and frames.dtype == np.uint8
    assert [frame_index(f) for f in frames] == [frame_index(f) for f in reference]
    difference = np.abs(frames.astype(int) - reference.astype(int))
    assert difference.mean() < 2 and difference.max() <= 16  # the YUV -> RGB conversion only (docs/DATA.md)


@pytest.mark.parametrize("backend", OTHERS)
def test_bytes_and_clips_like_pyav(coded_video, backend):
    with open(coded_video, "rb") as file:
        data = file.read()
    np.testing.assert_array_equal(READERS[backend](data, 5), READERS[backend](coded_video, 5))
    clip, mask = read_video_tensor(coded_video, 30, 24, backend=backend)  # 27 real frames, 3 repeats
    reference, reference_mask = read_video_tensor(coded_video, 30, 24)
    assert clip.shape == reference.shape == (30, 3, 24, 24) and torch.equal(mask, reference_mask)
    assert (clip - reference).abs().mean() < 0.05  # normalised units: about 2 levels of 255


@pytest.mark.parametrize("backend", OTHERS)
def test_bad_files_fail_with_the_same_kinds(tmp_path, backend):
    cases = {"missing": tmp_path / "absent.mp4", "empty": tmp_path / "empty.mp4"}
    cases["empty"].write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    for kind, path in list(cases.items()) + [("unreadable", garbage)]:
        with pytest.raises(VideoReadError) as error:
            READERS[backend](str(path), 4)
        assert error.value.kind == kind and str(path) in str(error.value)


def test_the_dataset_reads_with_the_chosen_backend(tmp_path_factory):
    root = synthetic_root(tmp_path_factory.getbasetemp())
    datasets = {b: build_dataset(msrvtt_args(root, "--video_backend", b), "test", RESOLUTION)
                for b in ("pyav", "opencv")}
    assert datasets["opencv"].video_backend == "opencv"
    items = {b: d.load_video(0, train=False) for b, d in datasets.items()}
    assert torch.equal(items["opencv"][1], items["pyav"][1])
    assert (items["opencv"][0] - items["pyav"][0]).abs().mean() < 0.05


def test_unknown_or_unloadable_backends_are_refused():
    with pytest.raises(ValueError, match=r"--video_backend 'decord' is not one of \['pyav', 'opencv', 'torchcodec'\]"):
        check_backend("decord")
    if importlib.util.find_spec("torchcodec") is None:
        with pytest.raises(ValueError, match=r"^--video_backend torchcodec: torchcodec.decoders cannot be loaded here "
                                             r"\(No module named 'torchcodec'\); .* or use --video_backend pyav$"):
            check_backend("torchcodec")
