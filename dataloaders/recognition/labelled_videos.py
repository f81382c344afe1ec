"""One split of an action-recognition dataset: its videos, the class of each, and every class of the dataset."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch

from ..annotations import DataFileError


@dataclasses.dataclass
class LabelledVideos:
    """`video_ids[i]` (the name the video is looked up by in the video folder, as for retrieval) has class
    `labels[i]`, an index into `class_names` (the dataset's classes in its published order; every split of a
    dataset has the same list, so a class index means the same class in training and evaluation).
    `class_texts` (optional, same length as `class_names`): the text of each class where the format gives one
    (Something-Something v2's templates); otherwise dataloaders.recognition.class_text makes it from the name."""

    video_ids: list[str]
    labels: list[int]
    class_names: list[str]
    class_texts: list[str] | None = None

    def __post_init__(self):
        if len(self.video_ids) != len(self.labels):
            raise ValueError("video_ids and labels differ in length")
        if not self.video_ids:
            raise DataFileError("the split has no videos: check the split files")
        if self.class_texts is not None and len(self.class_texts) != len(self.class_names):
            raise ValueError("class_texts and class_names differ in length")
        bad = [label for label in self.labels if not 0 <= label < len(self.class_names)]
        if bad:
            raise ValueError(f"labels {bad[:3]} are outside the {len(self.class_names)} classes")

    def subset(self, indices: Iterable[int]) -> LabelledVideos:
        """The given videos only (in the given order), with the same classes."""
        keep = list(indices)
        return dataclasses.replace(self, video_ids=[self.video_ids[i] for i in keep],
                                   labels=[self.labels[i] for i in keep])

    def k_shot(self, shots: int, seed: int) -> LabelledVideos:
        """`shots` videos of every class, drawn at random (a fixed function of `seed`), in dataset order.
        ValueError naming the class when one has fewer than `shots` videos."""
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.video_ids), generator=generator).tolist()
        chosen: dict[int, list[int]] = {label: [] for label in range(len(self.class_names))}
        for index in order:
            picks = chosen[self.labels[index]]
            if len(picks) < shots:
                picks.append(index)
        short = [(self.class_names[c], len(p)) for c, p in chosen.items() if len(p) < shots]
        if short:
            raise ValueError(f"--shots {shots}: {len(short)} classes have fewer training videos (e.g. "
                             f"{short[0][0]!r} has {short[0][1]}); lower --shots")
        return self.subset(sorted(i for picks in chosen.values() for i in picks))


def class_index(class_names: list[str], path: str) -> dict[str, int]:
    """{class name: index} of a published class list; DataFileError naming `path` for a repeated name."""
    index: dict[str, int] = {}
    for position, name in enumerate(class_names):
        if name in index:
            raise DataFileError(f"{path}: class {name!r} is listed twice (entries {index[name] + 1} and "
                                f"{position + 1})")
        index[name] = position
    return index
