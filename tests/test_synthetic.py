"""The generated dataset: determinism, the opposite-direction test pairs, rendering, the files it writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dataloaders.synthetic import (
    COLOURS,
    DIRECTIONS,
    OPPOSITE,
    SHAPES,
    VideoSpec,
    main,
    render_frame,
    synthetic_videos,
)
from dataloaders.video_reader import read_frames
from scripts.demo.tiny_clip_pretrain import positioned_stills
from tests.data_fixtures import SYNTHETIC, synthetic_root


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    return synthetic_root(tmp_path_factory.getbasetemp())


def test_same_seed_same_videos_other_seed_other_videos():
    assert synthetic_videos(20, 10, seed=3) == synthetic_videos(20, 10, seed=3)
    assert synthetic_videos(20, 10, seed=3) != synthetic_videos(20, 10, seed=4)


@pytest.mark.parametrize("split", ["test", "train"])
def test_test_split_is_opposite_direction_pairs_differing_only_in_frame_order(split):
    """The test split always, the training split with train_pairs (main.py --train_group_size 2)."""
    videos = synthetic_videos(0, 12, seed=1) if split == "test" else synthetic_videos(12, 0, 1, train_pairs=True)
    assert [v.video_id for v in videos] == [f"video{i}" for i in range(12)] and {v.split for v in videos} == {split}
    for first, second in zip(videos[::2], videos[1::2]):
        assert second.direction == OPPOSITE[first.direction]
        assert (first.colour, first.shape, first.size, first.cross, first.background) == \
            (second.colour, second.shape, second.size, second.cross, second.background)
        np.testing.assert_array_equal(first.frames(6, 32)[::-1], second.frames(6, 32))
        assert first.captions()[0] != second.captions()[0]
    assert len({(v.colour, v.shape, v.direction) for v in videos}) == 12


def test_captions_say_colour_shape_and_direction():
    video = synthetic_videos(1, 0, seed=0)[0]
    start, end = DIRECTIONS[video.direction][:2]
    assert video.captions()[0] == f"a {video.colour} {video.shape} moves from {start} to {end}"
    assert len(set(video.captions())) == 3


@pytest.mark.parametrize("shape, area", [("circle", np.pi * 64), ("square", 17 * 17), ("triangle", 8 * 17)])
def test_render_frame_draws_the_shape_where_asked(shape, area):
    image = render_frame("red", shape, position=(20, 12), size=8, image_size=(32, 48), background=(1, 2, 3))
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    inside = np.all(image == COLOURS["red"], axis=-1)
    assert abs(inside.sum() - area) / area < 0.15
    ys, xs = np.nonzero(inside)
    assert abs(xs.mean() - 20) < 1 and np.all(image[~inside] == (1, 2, 3))
    assert ys.min() >= 4 and ys.max() <= 20


def test_motion_goes_the_captioned_way():
    for direction, (_, _, axis, sign) in DIRECTIONS.items():
        video = VideoSpec("v", "train", "blue", "square", direction, 0.1, 0.5, (0, 0, 0))
        frames = video.frames(5, 40)
        centres = [np.nonzero(np.all(f == COLOURS["blue"], axis=-1))[1 - axis].mean() for f in frames]
        assert np.all(np.sign(np.diff(centres)) == sign)


def test_demo_stills_match_their_captions():
    """The demo's tiny-CLIP pre-training stills (scripts/demo/tiny_clip_pretrain.py): colour, shape and side."""
    images, captions = positioned_stills(8, seed=0, frame_size=32)
    assert images.shape == (8, 32, 32, 3) and len(captions) == 8
    for image, caption in zip(images, captions):
        _, colour, shape, _, _, side = caption.split()
        pixels = np.all(image == COLOURS[colour], axis=-1)
        assert shape in SHAPES and pixels.sum() > 10
        rows, cols = np.nonzero(pixels)
        centre = cols.mean() if side in ("left", "right") else rows.mean()
        assert (centre > 16) == (side in ("right", "bottom")), (caption, centre)  # in the captioned half


def test_written_dataset_has_msrvtt_layout_and_decodable_videos(synthetic):
    train = pd.read_csv(synthetic / "MSRVTT_train.9k.csv")
    test = pd.read_csv(synthetic / "MSRVTT_JSFUSION_test.csv")
    data = json.loads((synthetic / "MSRVTT_data.json").read_text())
    metadata = json.loads((synthetic / "synthetic_metadata.json").read_text())
    assert list(train.columns) == ["video_id"] and len(train) == SYNTHETIC["num_train"]
    assert list(test.columns) == ["key", "vid_key", "video_id", "sentence"] and len(test) == SYNTHETIC["num_test"]
    assert len(data["videos"]) == 18 and len(data["sentences"]) == 54
    spec = metadata[SYNTHETIC["num_train"]]
    assert test.loc[0, "video_id"] == spec["video_id"] and spec["colour"] in test.loc[0, "sentence"]
    frames = read_frames(str(synthetic / "videos" / f"{spec['video_id']}.mp4"), SYNTHETIC["num_frames"])
    assert frames.shape == (SYNTHETIC["num_frames"], 32, 32, 3)
    # the shape's colour survives H.264 (yuv420p): the most saturated pixel of the first frame is close to it
    pixel = frames[0].reshape(-1, 3)[np.argmax(np.ptp(frames[0].reshape(-1, 3).astype(int), axis=1))]
    assert np.abs(pixel.astype(int) - COLOURS[spec["colour"]]).max() < 60


def test_command_line(tmp_path):
    assert main(["--output_root", str(tmp_path), "--num_train", "2", "--num_test", "2", "--image_size", "16",
                 "24", "--num_frames", "3"]) == 0
    assert read_frames(str(tmp_path / "videos" / "video3.mp4"), 3).shape == (3, 16, 24, 3)
