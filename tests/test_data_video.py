"""Frame sampling, decoding, the CLIP transform and clip padding, on generated videos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dataloaders.sampling import segment_indices
from dataloaders.transforms import CLIP_MEAN, CLIP_STD, center_crop_offsets, frames_to_tensor, resized_size
from dataloaders.video_input import read_video_tensor
from dataloaders.video_reader import VideoReadError, inspect_video, read_frames
from tests.data_fixtures import coded_frames, frame_index, write_lossless_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "mp4": write_lossless_video(folder / "v30.mp4", coded_frames(20)),
        "short": write_lossless_video(folder / "v5.mp4", coded_frames(5)),
        "mkv": write_lossless_video(folder / "v12.mkv", coded_frames(12)),
        "faststart": write_lossless_video(folder / "fast.mp4", coded_frames(20), options={"movflags": "faststart"}),
    }


def test_segment_centres_by_hand():
    for sampling in ("release", "uniform"):
        assert segment_indices(24, 12, train=False, sampling=sampling) == list(range(1, 24, 2))
        assert segment_indices(36, 12, train=False, sampling=sampling) == list(range(1, 36, 3))
        assert segment_indices(12, 12, train=False, sampling=sampling) == list(range(12))
    # N=10, T=4, uniform: segments [0,2) [2,5) [5,7) [7,10) -> centres (s+e)//2
    assert segment_indices(10, 4, train=False, sampling="uniform") == [1, 3, 6, 8]
    # release: tick 2.5 -> int(1.25), int(3.75), int(6.25), int(8.75)
    assert segment_indices(10, 4, train=False) == [1, 3, 6, 8]
    # N=13, T=12: the release takes frame 7 where the uniform rule takes 6
    assert segment_indices(13, 12, train=False) == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
    assert segment_indices(13, 12, train=False, sampling="uniform") == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]


def test_short_video_gives_all_frames():
    for sampling in ("release", "uniform"):
        assert segment_indices(5, 12, train=False, sampling=sampling) == [0, 1, 2, 3, 4]
        assert segment_indices(5, 12, train=True, sampling=sampling) == [0, 1, 2, 3, 4]


def test_uniform_training_draws_cover_each_segment_and_stay_inside():
    generator = torch.Generator().manual_seed(0)
    seen = [set() for _ in range(4)]
    for _ in range(300):
        indices = segment_indices(10, 4, train=True, generator=generator, sampling="uniform")
        for segment, index in enumerate(indices):
            seen[segment].add(index)
    assert seen == [{0, 1}, {2, 3, 4}, {5, 6}, {7, 8, 9}]


def test_sampler_rejects_empty_video():
    with pytest.raises(ValueError, match="at least one frame"):
        segment_indices(0, 12, train=False)


def test_decoded_frames_are_the_sampled_ones(videos):
    frames = read_frames(str(videos["mp4"]), 4, train=False)
    assert frames.shape == (4, 16, 24, 3)
    assert [frame_index(f) for f in frames] == segment_indices(20, 4, train=False)
    np.testing.assert_array_equal(frames, coded_frames(20)[segment_indices(20, 4, train=False)])


def test_training_decode_matches_sampler_with_same_generator(videos):
    frames = read_frames(str(videos["mp4"]), 6, train=True, generator=torch.Generator().manual_seed(3))
    expected = segment_indices(20, 6, train=True, generator=torch.Generator().manual_seed(3))
    assert [frame_index(f) for f in frames] == expected


def test_container_without_frame_count_is_counted(videos):
    """An .mkv header has no frame count: the frames are counted from the packets first."""
    assert [frame_index(f) for f in read_frames(str(videos["mkv"]), 4)] == segment_indices(12, 4, False)
    assert inspect_video(str(videos["mkv"])).decoded == 12


def test_truncated_video_is_a_truncated_read_error_not_fewer_frames(videos, tmp_path):
    """Header (at the front) says 20 frames, the data is cut and decoding fails part way: the clip needs frames
    past the cut, so the read fails as a bad video (kind "truncated") instead of resampling silently."""
    data = videos["faststart"].read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    decodable = inspect_video(str(truncated)).decoded
    assert 4 <= decodable < 20
    with pytest.raises(VideoReadError, match=rf"after {decodable} of the 20 frames") as error:
        read_frames(str(truncated), 4)
    assert error.value.kind == "truncated"


def test_bytes_input_equals_file_input(videos):
    np.testing.assert_array_equal(read_frames(videos["mp4"].read_bytes(), 5), read_frames(str(videos["mp4"]), 5))


def test_clip_of_short_video_repeats_last_frame_and_masks_padding(videos):
    clip, mask = read_video_tensor(str(videos["short"]), 8, resolution=16)
    assert clip.shape == (8, 3, 16, 16) and clip.dtype == torch.float32
    assert mask.tolist() == [1] * 5 + [0] * 3 and mask.dtype == torch.long
    for padded in range(5, 8):
        torch.testing.assert_close(clip[padded], clip[4], rtol=0, atol=0)
    assert not torch.equal(clip[3], clip[4])


def test_transform_without_resize_by_hand(videos):
    """Short side already the resolution: centre crop then (x / 255 - mean) / std, computed by hand."""
    clip, _ = read_video_tensor(str(videos["mp4"]), 4, resolution=16)
    raw = coded_frames(20)[segment_indices(20, 4, False)]  # [4, 16, 24, 3]
    left = 4  # (24 - 16) / 2
    for t in range(4):
        for channel in range(3):
            for row, col in [(0, 0), (7, 5), (15, 15)]:
                value = raw[t, row, left + col, channel] / 255.0
                expected = (value - CLIP_MEAN[channel]) / CLIP_STD[channel]
                assert clip[t, channel, row, col].item() == pytest.approx(expected, abs=1e-6)


def test_resize_rule_and_crop_offsets_match_torchvision_conventions():
    assert resized_size(240, 320, 224) == (224, 298)
    assert resized_size(320, 240, 224) == (298, 224)
    assert resized_size(224, 398, 224) == (224, 398)
    assert center_crop_offsets(224, 398, 224) == (0, 87)
    assert center_crop_offsets(225, 224, 224) == (0, 0)  # round(0.5) -> 0, as torchvision
    assert center_crop_offsets(227, 224, 224) == (2, 0)


def test_resize_is_pil_bicubic_then_crop():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 30, 50, 3), dtype=np.uint8)
    out = frames_to_tensor(frames, 20)
    assert out.shape == (2, 3, 20, 20)
    reference = np.asarray(Image.fromarray(frames[1]).resize((33, 20), Image.Resampling.BICUBIC))
    top, left = center_crop_offsets(20, 33, 20)
    crop = torch.from_numpy(reference[top:top + 20, left:left + 20].copy()).permute(2, 0, 1) / 255.0
    expected = (crop - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    torch.testing.assert_close(out[1], expected, rtol=0, atol=1e-6)


def test_transform_rejects_wrong_layout():
    with pytest.raises(ValueError, match=r"uint8 frames \[K, H, W, 3\]"):
        frames_to_tensor(np.zeros((2, 3, 8, 8), dtype=np.uint8), 8)


@pytest.mark.parametrize("content, reason", [(None, "file not found"), (b"", "empty file"),
                                              (b"\x00garbage" * 100, "cannot be opened")])
def test_bad_files_raise_named_errors(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoReadError, match=reason) as error:
        read_frames(str(path), 4)
    assert error.value.video == str(path)


def test_empty_bytes_raise():
    with pytest.raises(VideoReadError, match="empty"):
        read_frames(b"", 4)
