"""The recognition layout of the counterfactual pairs (dataloaders/counterfactual_recognition.py): each video's
class is what its own pixels' paths show, the two videos of a pair have different classes and sit on consecutive
lines, and one frame cannot tell them apart."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dataloaders import counterfactual, counterfactual_recognition
from dataloaders.counterfactual import PairVideo, true_claims, write_split
from dataloaders.video_reader import read_frames

NUM_PAIRS = 6


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("recognition")
    for split in ("train", "test"):
        write_split(str(root), split, ["which_moves", "direction", "speed"], NUM_PAIRS, seed=3, image_size=32,
                    progress=False)
    written = {class_set: counterfactual_recognition.write_recognition_layout(root, class_set)
               for class_set in counterfactual_recognition.CLASS_SETS}
    return root, written, json.loads((root / "metadata.json").read_text())


def _shown_class(video: PairVideo, class_set: str) -> str:
    """The class read from the video's paths (true_claims), not from how it was made."""
    (claim,) = [c for c in true_claims(video) if c[0] == class_set]
    return f"{claim[1].replace(' ', '_')}_moves" if class_set == "which_moves" else f"object_moves_{claim[2]}"


@pytest.mark.parametrize("class_set", counterfactual_recognition.CLASS_SETS)
def test_each_video_has_the_class_its_motion_shows_and_a_pair_two_classes(layout, class_set):
    root, written, metadata = layout
    written = written[class_set]
    names = (root / f"recognition_{class_set}_classes.txt").read_text().splitlines()
    assert len(names) == {"which_moves": 12, "direction": 4}[class_set] == len(set(names))
    assert set(written) == {"train", "test", "classes"}
    pairs = json.loads((root / "pairs.json").read_text())
    for split in ("train", "test"):
        table = pd.read_csv(written[split])
        expected = [v for p in pairs if p["task"] == class_set and p["split"] == split for v in p["videos"]]
        assert list(table["path"]) == [f"{v}.mp4" for v in expected]  # only this task; pairs on consecutive lines
        assert all((root / "videos" / path).is_file() for path in table["path"])
        for (path, label) in zip(table["path"], table["label"]):
            video_id = path.removesuffix(".mp4")
            assert label in names and label == _shown_class(PairVideo.from_metadata(video_id, metadata[video_id]),
                                                            class_set)
        labels = list(table["label"])
        assert all(labels[i] != labels[i + 1] for i in range(0, len(labels), 2))
    if class_set == "direction":
        test_labels = pd.read_csv(written["test"])["label"]
        assert len(set(test_labels)) > 1  # the headings vary, not only the order within a pair


def test_one_frame_of_a_test_pair_cannot_tell_its_two_classes_apart(layout):
    root, written, _ = layout
    for class_set in counterfactual_recognition.CLASS_SETS:
        paths = list(pd.read_csv(written[class_set]["test"])["path"])
        for a, b in zip(paths[::2], paths[1::2]):
            frames_a, frames_b = (read_frames(str(root / "videos" / p), counterfactual.NUM_FRAMES) for p in (a, b))
            if class_set == "which_moves":  # the same picture at the start, and every frame alike in law
                np.testing.assert_array_equal(frames_a[0], frames_b[0])
            else:  # the same pictures, in the opposite order
                np.testing.assert_array_equal(frames_a[::-1], frames_b)


def test_a_folder_without_the_tasks_pairs_is_refused(tmp_path):
    write_split(str(tmp_path), "test", ["speed"], 2, seed=0, image_size=32, progress=False)
    with pytest.raises(ValueError, match=r"no which_moves pairs: write them with python -m dataloaders.synthetic"):
        counterfactual_recognition.write_recognition_layout(tmp_path, "which_moves")
    with pytest.raises(ValueError, match="unknown recognition class set 'speed'"):
        counterfactual_recognition.write_recognition_layout(tmp_path, "speed")
