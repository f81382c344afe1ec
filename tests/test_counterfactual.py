"""The temporal benchmark's counterfactual pairs (dataloaders/counterfactual.py), checked from the files the
command writes: each caption true of exactly one video of its pair, and each task's counterfactual property."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dataloaders import counterfactual
from dataloaders.counterfactual import TASKS, PairVideo, make_split, true_claims
from dataloaders.synthetic import main
from dataloaders.video_reader import read_frames

NUM_PAIRS = 12


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    for split in ("train", "test"):
        assert main(["--task", "all", "--split", split, "--num_pairs", str(NUM_PAIRS), "--seed", "5",
                     "--output_root", str(root)]) == 0
    return root, json.loads((root / "pairs.json").read_text()), json.loads((root / "metadata.json").read_text())


def _video(metadata, video_id) -> PairVideo:
    return PairVideo.from_metadata(video_id, metadata[video_id])


def test_the_command_writes_pairs_metadata_and_the_msrvtt_layout(benchmark):
    root, pairs, metadata = benchmark
    test = [p for p in pairs if p["split"] == "test"]
    assert [p["task"] for p in test] == [t for t in TASKS for _ in range(NUM_PAIRS)]
    assert len(pairs) == 2 * len(test) and len(metadata) == 4 * len(test)
    listed = pd.read_csv(root / "MSRVTT_JSFUSION_test.csv")
    assert list(listed["video_id"]) == [v for p in test for v in p["videos"]]
    assert list(listed["sentence"]) == [c for p in test for c in p["captions"]]
    assert len(pd.read_csv(root / "MSRVTT_train.9k.csv")) == 8 * NUM_PAIRS
    sentences = json.loads((root / "MSRVTT_data.json").read_text())["sentences"]
    assert {s["video_id"] for s in sentences} == set(metadata)
    for video_id, entry in metadata.items():
        assert (root / "videos" / f"{video_id}.mp4").is_file()
        assert len(entry["motion"]) == counterfactual.NUM_FRAMES - 1
        for obj in entry["objects"]:
            assert len(obj["boxes"]) == len(obj["centres"]) == counterfactual.NUM_FRAMES


def test_every_caption_is_true_of_exactly_one_video_of_its_pair(benchmark):
    _, pairs, metadata = benchmark
    for pair in pairs:
        a, b = (_video(metadata, v) for v in pair["videos"])
        assert pair["captions"] == [a.captions()[0], b.captions()[0]] and pair["captions"][0] != pair["captions"][1]
        assert a.claim in true_claims(a) and a.claim not in true_claims(b)
        assert b.claim in true_claims(b) and b.claim not in true_claims(a)


def test_direction_and_event_order_pairs_are_a_clip_and_its_reversal(benchmark):
    root, pairs, metadata = benchmark
    reversal = [p for p in pairs if p["task"] in ("direction", "event_order")]
    for pair in reversal:
        a, b = (metadata[v] for v in pair["videos"])
        for obj_a, obj_b in zip(a["objects"], b["objects"]):
            assert obj_b["centres"] == obj_a["centres"][::-1]
    a, b = reversal[0]["videos"]
    frames_a, frames_b = (read_frames(str(root / "videos" / f"{v}.mp4"), counterfactual.NUM_FRAMES) for v in (a, b))
    np.testing.assert_array_equal(frames_a[::-1], frames_b)  # lossless coding: the same pictures, decoded


def test_which_moves_pairs_swap_the_moving_object_in_the_same_places(benchmark):
    _, pairs, metadata = benchmark
    for pair in (p for p in pairs if p["task"] == "which_moves"):
        a, b = (metadata[v] for v in pair["videos"])
        kinds = [[(o["colour"], o["shape"], o["size"], o["centres"][0]) for o in v["objects"]] for v in (a, b)]
        assert sorted(kinds[0]) == sorted(kinds[1])  # the same objects, each starting at the same place
        moving = [[(o["colour"], o["shape"]) for o in v["objects"] if o["moves"]] for v in (a, b)]
        assert len(moving[0]) == len(moving[1]) == 1 and moving[0] != moving[1]


def test_speed_pairs_share_start_and_heading_at_a_third_of_the_speed(benchmark):
    _, pairs, metadata = benchmark
    for pair in (p for p in pairs if p["task"] == "speed"):
        videos = [_video(metadata, v) for v in pair["videos"]]
        quick, slow = sorted(videos, key=lambda v: v.claim[2] != "quickly")
        q, s = quick.objects[-1], slow.objects[-1]
        assert q.path[0] == s.path[0] and quick.objects[:-1] == slow.objects[:-1]
        np.testing.assert_allclose(q.motion(), counterfactual.SLOW_FACTOR * s.motion(), rtol=1e-6)
        heading = [(np.diff(np.asarray(o.path), axis=0)[0] + 0.5) % 1 - 0.5 for o in (q, s)]
        np.testing.assert_allclose(heading[0], counterfactual.SLOW_FACTOR * heading[1], atol=1e-9)


def test_every_scene_has_static_distractors_and_its_positions_spread_over_the_frame():
    pairs = make_split("test", TASKS, 100, seed=0)
    for pair in pairs:
        assert sum(not o.moves for o in pair[0].objects) >= counterfactual.NUM_DISTRACTORS
    # where the moving object is in frame 3 (the whole test split): spread over the frame in both videos of pairs
    for letter in (0, 1):
        xs = np.array([[o for o in pair[letter].objects if o.moves][0].path[3][0] for pair in pairs])
        assert np.histogram(xs, bins=4, range=(0, 1))[0].min() > 60


def test_splits_and_seeds_draw_other_scenes_the_same_seed_the_same():
    first = make_split("val", ("speed",), 5, seed=1)
    assert first == make_split("val", ("speed",), 5, seed=1)
    for other in (make_split("test", ("speed",), 5, seed=1), make_split("val", ("speed",), 5, seed=2)):
        starts = {o.path[0] for a, _ in other for o in a.objects}
        assert not starts & {o.path[0] for a, _ in first for o in a.objects}


def test_a_split_written_with_other_settings_is_refused(tmp_path, capsys):
    assert main(["--task", "speed", "--split", "val", "--num_pairs", "2", "--output_root", str(tmp_path)]) == 0
    assert main(["--task", "speed", "--split", "val", "--num_pairs", "2", "--output_root", str(tmp_path)]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["--task", "speed", "--split", "val", "--num_pairs", "3", "--output_root", str(tmp_path)])
    assert exit_info.value.code == 2 and "delete the folder" in capsys.readouterr().err
