"""The temporal benchmark's generated videos: counterfactual pairs that no single frame can tell apart.

Each pair is two videos and two captions, each caption true of exactly one of the two videos:

    direction     a clip and its reversal          "the red circle moves right" / "the red circle moves left"
    event_order   a clip and its reversal          "the red circle moves, then stops" / "... stays still, then moves"
    which_moves   the same objects and places      "the red circle moves" / "the blue square moves"
    speed         the same start and heading       "the red circle moves quickly" / "the red circle moves slowly"

Objects move on a torus (leaving one edge, they re-enter at the opposite one) from a start uniform over the
frame, so what any one frame index shows (where each object is) has the same distribution in both videos of a
pair: no single frame carries the answer (frame 0 of a which_moves or speed pair is the same picture in both).
For direction and event_order the two videos hold the same set of frames, so the mean of all the frames cannot
tell them apart either (the benchmark's models sample every frame: --max_frames NUM_FRAMES); for which_moves
and speed mean pooling can (a moving object smears), and the benchmark reports what it gets. Every scene has
two static distractor objects and a random dark background. The videos are coded losslessly (x264 qp 0): with
lossy coding a frame's artifacts depend on the frames before it, which differ between a clip and its reversal
(measured: up to 44 grey levels apart for the same picture).

Positions and sizes are fractions of the frame side, so a scene renders at any size. Each `PairVideo` keeps its
ground truth (every object's centre in every frame, which one moves); `true_claims` derives what a video shows
from those paths alone, so the tests can check that each caption is true of exactly one video of its pair.
Split s of seed S is drawn from the random stream "S/s/task": the splits never share a scene.

    python -m dataloaders.synthetic --task all --split test --num_pairs 200 --seed 0 --output_root DIR

writes DIR/videos/<id>.mp4 and, merged with the other splits already in DIR: MSRVTT_data.json (every caption),
the split's video list (train: MSRVTT_train.9k.csv; val: MSRVTT_val.csv; test: MSRVTT_JSFUSION_test.csv, one
caption per video, JSFusion's format), pairs.json ([{"task", "split", "videos": [a, b], "captions": [caption of
a, caption of b]}]) and metadata.json (video id -> task, split, claim, caption, background, and per object its
colour, shape, size, whether it moves, its centre and box in every frame and its motion in every frame gap).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .scenes import COLOURS, SHAPES, image_shape, shape_mask, write_video

TASKS = ("direction", "event_order", "which_moves", "speed")
SPLITS = ("train", "val", "test")
SPLIT_LISTS = {"train": "MSRVTT_train.9k.csv", "val": "MSRVTT_val.csv", "test": "MSRVTT_JSFUSION_test.csv"}
NUM_FRAMES = 6
OBJECT_KINDS = tuple((colour, shape) for colour in COLOURS for shape in SHAPES)
NUM_DISTRACTORS = 2
SIZE_RANGE = (0.08, 0.13)  # half-extent, fraction of the shorter side
SPEED_RANGE = (0.06, 0.11)  # fraction of the side per frame (direction, event_order, which_moves, speed "quickly")
SLOW_FACTOR = 3.0  # speed: "slowly" is the quick speed / SLOW_FACTOR
QUICK_ABOVE = 0.05  # true_claims: a mean speed above this (fraction of the side per frame) is "quickly"
# task -> claim value -> caption templates ({object}: "red circle"); the first is the val / test caption
CAPTIONS = {
    "direction": {word: (f"the {{object}} moves {word}", f"a {{object}} is moving {word}")
                  for word in ("right", "left", "down", "up")},
    "event_order": {"moves, then stops": ("the {object} moves, then stops", "a {object} moves and then stays still"),
                    "stays still, then moves": ("the {object} stays still, then moves",
                                                "a {object} stays still and then starts moving")},
    "which_moves": {"moves": ("the {object} moves", "the {object} is the one moving")},
    "speed": {"quickly": ("the {object} moves quickly", "a {object} moves fast"),
              "slowly": ("the {object} moves slowly", "a {object} moves at a slow pace")},
}


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One shape: `size` its half-extent (fraction of the shorter side), `path` its centre (x, y) in every
    frame, fractions of the width and height in [0, 1)."""

    colour: str
    shape: str
    size: float
    path: tuple[tuple[float, float], ...]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    def motion(self) -> np.ndarray:
        """float [T-1]: how far the centre moves in each frame gap on the torus (fraction of the side)."""
        steps = np.diff(np.asarray(self.path), axis=0)
        return np.linalg.norm((steps + 0.5) % 1.0 - 0.5, axis=1)

    @property
    def moves(self) -> bool:
        return bool(self.motion().max() > 1e-9)


@dataclasses.dataclass(frozen=True)
class PairVideo:
    """One video of a counterfactual pair; `claim` = (task, object name, value) is what its caption says."""

    video_id: str
    task: str
    split: str
    claim: tuple[str, str, str]
    objects: tuple[SceneObject, ...]  # drawn in this order: the distractors, then the named object(s)
    background: tuple[int, int, int]

    @property
    def num_frames(self) -> int:
        return len(self.objects[0].path)

    def captions(self) -> list[str]:
        """Every caption of the claim; the first is the one of the val / test lists."""
        task, name, value = self.claim
        return [template.format(object=name) for template in CAPTIONS[task][value]]

    def object_masks(self, image_size: int | Sequence[int] = 64,
                     indices: Sequence[int] | None = None) -> np.ndarray:
        """bool [num_objects, T, H, W]: each object's pixels in each frame (ignoring occlusion); `indices`: only
        those frames (T = len(indices))."""
        height, width = image_shape(image_size)
        side = min(height, width)
        indices = range(self.num_frames) if indices is None else indices
        return np.stack([np.stack([shape_mask(o.shape, (o.path[t][0] * width, o.path[t][1] * height),
                                              o.size * side, (height, width), wrap=True) for t in indices])
                         for o in self.objects])

    def frames(self, image_size: int | Sequence[int] = 64, indices: Sequence[int] | None = None) -> np.ndarray:
        """uint8 [T, H, W, 3]: the objects in drawing order over the background; `indices`: only those frames."""
        masks = self.object_masks(image_size, indices)
        frames = np.empty((*masks.shape[1:], 3), dtype=np.uint8)
        frames[:] = self.background
        for obj, mask in zip(self.objects, masks):
            frames[mask] = COLOURS[obj.colour]
        return frames

    @classmethod
    def from_metadata(cls, video_id: str, entry: dict) -> PairVideo:
        """The video a metadata.json entry describes (what `metadata` wrote)."""
        objects = tuple(SceneObject(o["colour"], o["shape"], o["size"], tuple(map(tuple, o["centres"])))
                        for o in entry["objects"])
        return cls(video_id, entry["task"], entry["split"], tuple(entry["claim"]), objects, tuple(entry["background"]))

    def metadata(self) -> dict:
        """The ground truth as JSON: boxes are [x0, y0, x1, y1] fractions of the width / height (on the torus a
        box may reach past 0 or 1: the shape shows at the other edge too)."""
        objects = []
        for obj in self.objects:
            objects.append({"colour": obj.colour, "shape": obj.shape, "size": obj.size, "moves": obj.moves,
                            "centres": [list(p) for p in obj.path],
                            "boxes": [[x - obj.size, y - obj.size, x + obj.size, y + obj.size] for x, y in obj.path],
                            "motion": obj.motion().tolist()})
        return {"task": self.task, "split": self.split, "claim": list(self.claim), "caption": self.captions()[0],
                "background": list(self.background), "objects": objects,
                "motion": np.max([o.motion() for o in self.objects], axis=0).tolist()}


def true_claims(video: PairVideo) -> set[tuple[str, str, str]]:
    """Every claim of CAPTIONS that `video`'s paths make true (read from the paths, not from how it was made):
    per moving object, its heading (direction), the order of its moving and still halves (event_order), that it
    moves (which_moves) and how fast (speed)."""
    claims = set()
    for obj in video.objects:
        motion = obj.motion()
        if motion.max() <= 1e-9:
            continue
        claims.add(("which_moves", obj.name, "moves"))
        steps = (np.diff(np.asarray(obj.path), axis=0) + 0.5) % 1.0 - 0.5
        axis = int(np.abs(steps).sum(0).argmax())
        heading = steps[:, axis].sum()
        claims.add(("direction", obj.name, (("right", "left"), ("down", "up"))[axis][int(heading < 0)]))
        half = len(motion) // 2
        first, last = motion[:half].max() > 1e-9, motion[-half:].max() > 1e-9
        if first != last:
            claims.add(("event_order", obj.name, "moves, then stops" if first else "stays still, then moves"))
        claims.add(("speed", obj.name, "quickly" if motion[motion > 1e-9].mean() > QUICK_ABOVE else "slowly"))
    return claims


def _path(start: Sequence[float], velocity: np.ndarray, moving_gaps: Iterable[int],
          num_frames: int) -> tuple[tuple[float, float], ...]:
    """Centres [T] on the torus: from `start`, `velocity` added in each of `moving_gaps`."""
    moving = np.zeros(num_frames)
    moving[[g + 1 for g in moving_gaps]] = 1
    centres = (np.asarray(start) + np.cumsum(moving)[:, None] * velocity) % 1.0
    return tuple((float(x), float(y)) for x, y in centres)


def _reversed(obj: SceneObject) -> SceneObject:
    return dataclasses.replace(obj, path=obj.path[::-1])


def make_pair(task: str, rng: random.Random, split: str, index: int,
              num_frames: int = NUM_FRAMES) -> tuple[PairVideo, PairVideo]:
    """The two videos of pair `index` of `task`, drawn from `rng` (ids <split>_<task>_<index>_{a,b}; which
    claim comes first is random)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    kinds = rng.sample(OBJECT_KINDS, 2 + NUM_DISTRACTORS)
    sizes = [rng.uniform(*SIZE_RANGE) for _ in kinds]
    starts = [(rng.random(), rng.random()) for _ in kinds]
    background = tuple(rng.randint(0, 70) for _ in range(3))
    axis = rng.randrange(2)
    velocity = np.zeros(2)
    velocity[axis] = rng.choice((1, -1)) * rng.uniform(*SPEED_RANGE)
    heading = (("right", "left"), ("down", "up"))[axis][int(velocity[axis] < 0)]
    opposite = (("right", "left"), ("down", "up"))[axis][int(velocity[axis] > 0)]
    distractors = [SceneObject(*kind, size, (start,) * num_frames)
                   for kind, size, start in zip(kinds[2:], sizes[2:], starts[2:])]

    def shape(k: int, speed: np.ndarray | None, gaps: Iterable[int] = range(num_frames - 1)) -> SceneObject:
        path = _path(starts[k], speed, gaps, num_frames) if speed is not None else (starts[k],) * num_frames
        return SceneObject(*kinds[k], sizes[k], path)

    name, other = f"{kinds[0][0]} {kinds[0][1]}", f"{kinds[1][0]} {kinds[1][1]}"
    if task == "direction":
        forward = shape(0, velocity)
        scenes = [([forward], (task, name, heading)), ([_reversed(forward)], (task, name, opposite))]
    elif task == "event_order":
        forward = shape(0, velocity, range(num_frames // 2))
        scenes = [([forward], (task, name, "moves, then stops")),
                  ([_reversed(forward)], (task, name, "stays still, then moves"))]
    elif task == "which_moves":
        # the same drawing order in both videos: where the two overlap, the one on top tells nothing
        scenes = [([shape(0, velocity), shape(1, None)], (task, name, "moves")),
                  ([shape(0, None), shape(1, velocity)], (task, other, "moves"))]
    else:
        scenes = [([shape(0, velocity)], (task, name, "quickly")),
                  ([shape(0, velocity / SLOW_FACTOR)], (task, name, "slowly"))]
    if rng.random() < 0.5:
        scenes.reverse()
    return tuple(PairVideo(f"{split}_{task}_{index:04d}_{letter}", task, split, claim,
                           tuple(distractors + objects), background)
                 for letter, (objects, claim) in zip("ab", scenes))


def make_split(split: str, tasks: Sequence[str], num_pairs: int, seed: int,
               num_frames: int = NUM_FRAMES) -> list[tuple[PairVideo, PairVideo]]:
    """`num_pairs` pairs of each task of `split`, pair after pair, task after task; split s of task k of seed S
    from the random stream "S/s/k" (so splits and tasks never share a scene, and adding a task changes no other)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    pairs = []
    for task in tasks:
        rng = random.Random(f"{seed}/{split}/{task}")
        pairs += [make_pair(task, rng, split, index, num_frames) for index in range(num_pairs)]
    return pairs


def _replace_json(path: str, value) -> None:
    """Write `value` as JSON to `path` through a temporary file renamed over it (never a partial file)."""
    with open(path + ".part", "w") as file:
        json.dump(value, file, indent=1)
    os.replace(path + ".part", path)


def _read_json(path: str, default):
    if not os.path.exists(path):
        return default
    with open(path) as file:
        return json.load(file)


def write_split(output_root: str, split: str, tasks: Sequence[str], num_pairs: int, seed: int,
                image_size: int | Sequence[int] = 64, num_frames: int = NUM_FRAMES, fps: int = 4,
                progress: bool = True) -> list[tuple[PairVideo, PairVideo]]:
    """Write `split` into `output_root` (the layout of the module docstring), merged with the splits already
    there. Videos already written with the same settings are kept, so an interrupted call resumes; a split
    written before with other settings is refused (ValueError naming the folder)."""
    if min(image_shape(image_size)) % 2 or max(image_shape(image_size)) % 2:
        raise ValueError(f"frame sides must be even for yuv420p, got {image_shape(image_size)}")
    settings = {"tasks": list(tasks), "num_pairs": num_pairs, "seed": seed,
                "image_size": list(image_shape(image_size)), "num_frames": num_frames, "fps": fps}
    written = os.path.join(output_root, "benchmark_splits.json")
    splits = _read_json(written, {})
    if split in splits and splits[split] != settings:
        raise ValueError(f"{output_root} holds a {split} split written with {splits[split]}, not {settings}: "
                         f"delete the folder or write to another --output_root")
    pairs = make_split(split, tasks, num_pairs, seed, num_frames)
    os.makedirs(os.path.join(output_root, "videos"), exist_ok=True)
    videos = [video for pair in pairs for video in pair]
    for video in tqdm(videos, desc=f"writing {split} videos", disable=not progress):
        path = os.path.join(output_root, "videos", f"{video.video_id}.mp4")
        if not os.path.exists(path):
            write_video(path + ".part.mp4", video.frames(image_size), fps, lossless=True)
            os.replace(path + ".part.mp4", path)
    metadata = {k: v for k, v in _read_json(os.path.join(output_root, "metadata.json"), {}).items()
                if v["split"] != split}
    metadata.update({v.video_id: {**v.metadata(), "captions": v.captions()} for v in videos})
    _replace_json(os.path.join(output_root, "metadata.json"), metadata)
    pair_list = [p for p in _read_json(os.path.join(output_root, "pairs.json"), []) if p["split"] != split]
    pair_list += [{"task": a.task, "split": split, "videos": [a.video_id, b.video_id],
                   "captions": [a.captions()[0], b.captions()[0]]} for a, b in pairs]
    _replace_json(os.path.join(output_root, "pairs.json"), pair_list)
    sentences = [{"video_id": video_id, "caption": caption, "sen_id": 0}
                 for video_id, entry in metadata.items() for caption in entry["captions"]]
    for sen_id, sentence in enumerate(sentences):
        sentence["sen_id"] = sen_id
    _replace_json(os.path.join(output_root, "MSRVTT_data.json"),
                  {"videos": [{"video_id": k, "split": v["split"]} for k, v in metadata.items()],
                   "sentences": sentences})
    ids = [v.video_id for v in videos]
    if split == "train":
        table = pd.DataFrame({"video_id": ids})
    else:
        table = pd.DataFrame({"key": [f"ret{i}" for i in range(len(ids))], "vid_key": ids, "video_id": ids,
                              "sentence": [v.captions()[0] for v in videos]})
    table.to_csv(os.path.join(output_root, SPLIT_LISTS[split] + ".part"), index=False)
    os.replace(os.path.join(output_root, SPLIT_LISTS[split] + ".part"), os.path.join(output_root, SPLIT_LISTS[split]))
    _replace_json(written, {**splits, split: settings})
    return pairs
