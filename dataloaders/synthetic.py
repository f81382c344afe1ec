"""A small generated video-text dataset in MSR-VTT's layout, for tests and the demo.

Each video shows one coloured shape moving across a plain background, captioned e.g. "a red circle moves from
left to right". The test split is made of opposite-direction pairs that share colour, shape, size, position
and background, so each video of a pair is the other played backwards: their captions can only be told apart
from the order of the frames. Everything is deterministic from the seed.

    python -m dataloaders.synthetic --output_root DIR --num_train 200 --num_test 40 --seed 0

(With --task, the same command writes the temporal benchmark's counterfactual pairs instead: see
dataloaders/counterfactual.py. The direction videos below are the demo's until docs/RESULTS.md's older tables.)

writes DIR/videos/video{i}.mp4, DIR/MSRVTT_train.9k.csv, DIR/MSRVTT_data.json, DIR/MSRVTT_JSFUSION_test.csv
and DIR/synthetic_metadata.json (colour, shape, direction of every video). The recognition layout (`main.py
--task recognition --datatype csv`, docs/RECOGNITION.md) is DIR/recognition_<classes>_{train,test}.csv
(`path,label`, paths relative to DIR/videos) and DIR/recognition_<classes>_classes.txt (`--class_list`) for two
class sets (RECOGNITION_CLASSES): the motion direction (4 classes, e.g. "shape_moves_from_left_to_right") and
direction x shape (12, "circle_moves_from_left_to_right"); with --class_template "a {name}" a class reads "a
circle moves from left to right".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
from collections.abc import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import counterfactual
from .scenes import COLOURS, SHAPES, image_shape, render_frame, write_video

# direction -> (start side, end side, axis, sign): axis 0 moves along x, axis 1 along y.
DIRECTIONS = {
    "left to right": ("left", "right", 0, 1),
    "right to left": ("right", "left", 0, -1),
    "top to bottom": ("top", "bottom", 1, 1),
    "bottom to top": ("bottom", "top", 1, -1),
}
OPPOSITE = {"left to right": "right to left", "right to left": "left to right",
            "top to bottom": "bottom to top", "bottom to top": "top to bottom"}
CAPTION_TEMPLATES = ("a {colour} {shape} moves from {start} to {end}",
                     "a {colour} {shape} is moving from the {start} to the {end}",
                     "the {colour} {shape} goes from {start} to {end}")


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    """One generated video: what moves where. `size` is the shape's half-extent and `cross` its position
    across the motion (both as fractions of the frame side), `background` the RGB background."""

    video_id: str
    split: str
    colour: str
    shape: str
    direction: str
    size: float
    cross: float
    background: tuple[int, int, int]

    def captions(self) -> list[str]:
        start, end = DIRECTIONS[self.direction][:2]
        return [t.format(colour=self.colour, shape=self.shape, start=start, end=end) for t in CAPTION_TEMPLATES]

    def frames(self, num_frames: int, image_size: int | Sequence[int] = 64) -> np.ndarray:
        """uint8 [num_frames, H, W, 3]: the shape crossing the frame from one side to the other."""
        height, width = image_shape(image_size)
        axis, sign = DIRECTIONS[self.direction][2:]
        extent = (width, height)
        half = self.size * min(height, width)
        frames = []
        for t in np.linspace(0.0, 1.0, num_frames):
            along = half + (t if sign > 0 else 1 - t) * (extent[axis] - 1 - 2 * half)
            across = half + self.cross * (extent[1 - axis] - 1 - 2 * half)
            position = (along, across) if axis == 0 else (across, along)
            frames.append(render_frame(self.colour, self.shape, position, half, (height, width), self.background))
        return np.stack(frames)


RECOGNITION_CLASSES = ("direction", "direction_shape")


def recognition_label(shape: str, direction: str, classes: str) -> str:
    """The class of a video of `shape` moving in `direction` in the recognition layout `classes`
    (RECOGNITION_CLASSES)."""
    if classes not in RECOGNITION_CLASSES:
        raise ValueError(f"unknown recognition classes {classes!r}; expected one of {RECOGNITION_CLASSES}")
    start, end = DIRECTIONS[direction][:2]
    return f"{'shape' if classes == 'direction' else shape}_moves_from_{start}_to_{end}"


def recognition_class_list(classes: str) -> list[str]:
    """Every class of the recognition layout `classes`, shapes outer, directions inner."""
    return list(dict.fromkeys(recognition_label(shape, direction, classes) for shape in SHAPES
                              for direction in DIRECTIONS))


def _random_look(rng: random.Random) -> tuple[float, float, tuple[int, int, int]]:
    return rng.uniform(0.1, 0.18), rng.random(), tuple(rng.randint(0, 70) for _ in range(3))


def synthetic_videos(num_train: int, num_test: int, seed: int = 0, train_pairs: bool = False) -> list[VideoSpec]:
    """The specs of all videos: video0..video{num_train-1} for training with random colour, shape and
    direction (with `train_pairs`, in opposite-direction pairs video{2k}, video{2k+1} like the test set, for
    main.py --train_group_size 2); then the test videos, in opposite-direction pairs identical but for the
    direction (an odd count leaves the last one unpaired)."""
    rng = random.Random(seed)
    videos = []
    while len(videos) < num_train:
        size, cross, background = _random_look(rng)
        colour, shape, direction = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(list(DIRECTIONS))
        for direction_of_video in (direction, OPPOSITE[direction])[: 1 + train_pairs][: num_train - len(videos)]:
            videos.append(VideoSpec(f"video{len(videos)}", "train", colour, shape, direction_of_video, size, cross,
                                    background))
    objects = [(c, s, d) for c in COLOURS for s in SHAPES for d in ("left to right", "top to bottom")]
    rng.shuffle(objects)
    for pair in range((num_test + 1) // 2):
        colour, shape, direction = objects[pair % len(objects)]
        size, cross, background = _random_look(rng)
        for direction_of_pair in (direction, OPPOSITE[direction])[: num_test - 2 * pair]:
            videos.append(VideoSpec(f"video{len(videos)}", "test", colour, shape, direction_of_pair, size, cross,
                                    background))
    return videos


def write_dataset(output_root: str, num_train: int, num_test: int, seed: int = 0,
                  image_size: int | Sequence[int] = 64, num_frames: int = 12, fps: int = 4,
                  progress: bool = True, train_pairs: bool = False) -> list[VideoSpec]:
    """Write the videos, MSR-VTT-style annotation files and the recognition CSVs under `output_root`; returns
    the video specs.
    Videos already there are kept (delete the folder to regenerate)."""
    if min(image_shape(image_size)) % 2 or max(image_shape(image_size)) % 2:
        raise ValueError(f"frame sides must be even for yuv420p, got {image_shape(image_size)}")
    videos = synthetic_videos(num_train, num_test, seed, train_pairs)
    os.makedirs(os.path.join(output_root, "videos"), exist_ok=True)
    for spec in tqdm(videos, desc="writing videos", disable=not progress):
        path = os.path.join(output_root, "videos", f"{spec.video_id}.mp4")
        if not os.path.exists(path):
            write_video(path + ".part.mp4", spec.frames(num_frames, image_size), fps)
            os.replace(path + ".part.mp4", path)
    train = [v for v in videos if v.split == "train"]
    test = [v for v in videos if v.split == "test"]
    pd.DataFrame({"video_id": [v.video_id for v in train]}).to_csv(
        os.path.join(output_root, "MSRVTT_train.9k.csv"), index=False)
    sentences = [{"video_id": v.video_id, "caption": caption} for v in videos for caption in v.captions()]
    for sen_id, sentence in enumerate(sentences):
        sentence["sen_id"] = sen_id
    data = {"videos": [{"video_id": v.video_id, "split": v.split} for v in videos], "sentences": sentences}
    with open(os.path.join(output_root, "MSRVTT_data.json"), "w") as file:
        json.dump(data, file)
    pd.DataFrame({"key": [f"ret{i}" for i in range(len(test))], "vid_key": [f"msr{v.video_id[5:]}" for v in test],
                  "video_id": [v.video_id for v in test], "sentence": [v.captions()[0] for v in test]}
                 ).to_csv(os.path.join(output_root, "MSRVTT_JSFUSION_test.csv"), index=False)
    for classes in RECOGNITION_CLASSES:
        for split, specs in (("train", train), ("test", test)):
            pd.DataFrame({"path": [f"{v.video_id}.mp4" for v in specs],
                          "label": [recognition_label(v.shape, v.direction, classes) for v in specs]}
                         ).to_csv(os.path.join(output_root, f"recognition_{classes}_{split}.csv"), index=False)
        with open(os.path.join(output_root, f"recognition_{classes}_classes.txt"), "w") as file:
            file.write("".join(f"{name}\n" for name in recognition_class_list(classes)))
    with open(os.path.join(output_root, "synthetic_metadata.json"), "w") as file:
        json.dump([dataclasses.asdict(v) for v in videos], file, indent=1)
    return videos


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_root", required=True)
    parser.add_argument("--num_train", type=int, default=200)
    parser.add_argument("--num_test", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_size", type=int, nargs="+", default=[64], metavar="SIDE",
                        help="frame size in pixels: one side for square frames, or HEIGHT WIDTH")
    parser.add_argument("--num_frames", type=int, default=None,
                        help=f"frames per video (12; with --task {counterfactual.NUM_FRAMES})")
    parser.add_argument("--fps", type=int, default=4)
    parser.add_argument("--train_pairs", action="store_true",
                        help="training videos in opposite-direction pairs too (video2k, video2k+1), rows next to "
                             "each other in MSRVTT_train.9k.csv: train with main.py --train_group_size 2")
    benchmark = parser.add_argument_group("the temporal benchmark's pairs (dataloaders/counterfactual.py)")
    benchmark.add_argument("--task", choices=(*counterfactual.TASKS, "all"), default=None,
                           help="write this task's pairs (all: the four) instead of the direction videos")
    benchmark.add_argument("--split", choices=counterfactual.SPLITS, default="test",
                           help="the split to write (each from its own random stream of --seed)")
    benchmark.add_argument("--num_pairs", type=int, default=200, help="pairs per task")
    args = parser.parse_args(argv)
    if len(args.image_size) not in (1, 2):
        parser.error("--image_size takes SIDE or HEIGHT WIDTH")
    size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
    if args.task is not None:
        if args.num_pairs < 1:
            parser.error("--num_pairs must be >= 1")
        tasks = counterfactual.TASKS if args.task == "all" else (args.task,)
        try:
            pairs = counterfactual.write_split(args.output_root, args.split, tasks, args.num_pairs, args.seed, size,
                                               args.num_frames or counterfactual.NUM_FRAMES, args.fps)
        except ValueError as error:
            parser.exit(2, f"error: {error}\n")
        print(f"wrote {len(pairs)} {args.split} pairs ({', '.join(tasks)}) to {args.output_root}")
        return 0
    videos = write_dataset(args.output_root, args.num_train, args.num_test, args.seed, size, args.num_frames or 12,
                           args.fps, train_pairs=args.train_pairs)
    print(f"wrote {len(videos)} videos, the MSR-VTT annotation files and the recognition CSVs to {args.output_root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
