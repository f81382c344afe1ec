"""Missing, empty and corrupt videos: never zero tensors in training, named warnings, counts, a limit."""

from __future__ import annotations

import shutil

import pytest
import torch

from dataloaders import BadVideoError, BadVideoWarning, build_dataset
from tests.data_fixtures import RESOLUTION, msrvtt_args, synthetic_root


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    return synthetic_root(tmp_path_factory.getbasetemp())


@pytest.fixture()
def damaged(synthetic, tmp_path):
    """A copy of the generated dataset with video1 deleted, video2 emptied and video3 overwritten with junk."""
    root = tmp_path / "damaged"
    shutil.copytree(synthetic, root)
    (root / "videos" / "video1.mp4").unlink()
    (root / "videos" / "video2.mp4").write_bytes(b"")
    (root / "videos" / "video3.mp4").write_bytes(b"\x00\x01junk" * 500)
    return root


def test_missing_videos_reported_when_built(damaged):
    with pytest.warns(BadVideoWarning, match=r"1 of 12 videos not found in .*videos \(e.g. video1\)"):
        dataset = build_dataset(msrvtt_args(damaged, "--max_bad_video_fraction", "0.5"), "train", RESOLUTION)
    assert dataset.bad_video_ids == ["video1"]


def test_training_resamples_bad_videos_with_named_warnings(damaged):
    with pytest.warns(BadVideoWarning):
        dataset = build_dataset(msrvtt_args(damaged, "--max_bad_video_fraction", "0.5", "--max_frames", "4"),
                                "train", RESOLUTION)
    torch.manual_seed(0)
    with pytest.warns(BadVideoWarning) as caught:
        items = {index: dataset[index] for index in (1, 2, 3, 4)}
    messages = " ".join(str(w.message) for w in caught)
    assert "video2.mp4: empty file (0 bytes)" in messages and "video3.mp4: cannot be opened" in messages
    for index, item in items.items():
        assert item["video_index"] not in (1, 2, 3)
        assert item["video"].abs().sum() > 0 and torch.isfinite(item["video"]).all()
        if index == 4:
            assert item["video_index"] == 4
    assert dataset.bad_video_ids == ["video1", "video2", "video3"]


def test_too_many_bad_videos_stop_with_a_clear_error(damaged):
    with pytest.warns(BadVideoWarning):
        dataset = build_dataset(msrvtt_args(damaged, "--max_bad_video_fraction", "0.2"), "train", RESOLUTION)
    with pytest.warns(BadVideoWarning), pytest.raises(BadVideoError, match=r"3 of 12 videos .* more than "
                                                                           r"--max_bad_video_fraction 0.2"):
        for index in range(12):
            dataset[index]
    with pytest.warns(BadVideoWarning), pytest.raises(BadVideoError, match="preprocess.check_videos"):
        build_dataset(msrvtt_args(damaged, "--max_bad_video_fraction", "0.05"), "train", RESOLUTION)


def test_bad_videos_found_by_workers_are_counted_in_the_main_process(damaged):
    with pytest.warns(BadVideoWarning):
        dataset = build_dataset(msrvtt_args(damaged, "--max_bad_video_fraction", "0.5", "--max_frames", "2"),
                                "train", RESOLUTION)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    indices = torch.cat([batch["video_index"] for batch in loader])
    assert len(indices) == 12 and not set(indices.tolist()) & {1, 2, 3}
    assert dataset.bad_video_ids == ["video1", "video2", "video3"]


def test_video_view_marks_bad_videos_invalid(damaged):
    args = msrvtt_args(damaged, "--max_bad_video_fraction", "0.5", "--max_frames", "3")
    with pytest.warns(BadVideoWarning):
        dataset = build_dataset(args, "train", RESOLUTION)
    view = dataset.video_view()
    with pytest.warns(BadVideoWarning, match="video3.mp4"):
        bad = view[3]
    assert not bad["valid"] and torch.isfinite(bad["video"]).all() and bad["video_mask"].sum() == 3
    assert not view[1]["valid"] and view[0]["valid"]
