"""Action-recognition data: `build_recognition_dataset(args, split, resolution)` for the format --datatype names
(with --task recognition), and the recognition flags.

Every format reader turns its published split files into LabelledVideos (video ids, class indices, the class
list); RecognitionDataset (recognition_dataset.py) reads the videos as the retrieval datasets do, with the
class of each and the text of every class (class_text.py).
"""

from __future__ import annotations

import argparse

from ..annotations import load_split
from ..sources import video_source
from ..video_options import video_options
from . import hmdb51, kinetics, labelled_csv, ssv2, ucf101
from .class_text import DEFAULT_TEMPLATE, check_template, class_texts
from .labelled_videos import LabelledVideos
from .recognition_dataset import MultiViewVideoView, RecognitionDataset

# --datatype -> (function (args, split) -> LabelledVideos, the default --class_template)
RECOGNITION_DATASETS = {
    "ucf101": (ucf101.load_videos, DEFAULT_TEMPLATE),
    "hmdb51": (hmdb51.load_videos, DEFAULT_TEMPLATE),
    "kinetics400": (kinetics.load_videos, DEFAULT_TEMPLATE),
    "ssv2": (ssv2.load_videos, "{name}"),  # its class texts are sentences already
    "csv": (labelled_csv.load_videos, DEFAULT_TEMPLATE),
}
__all__ = ["RECOGNITION_DATASETS", "LabelledVideos", "MultiViewVideoView", "RecognitionDataset",
           "add_recognition_args", "build_recognition_dataset", "check_recognition_args", "load_labelled_videos"]


def add_recognition_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the flags of --task recognition (docs/RECOGNITION.md)."""
    group = parser.add_argument_group("action recognition (--task recognition)")
    group.add_argument("--split", type=int, default=1,
                       help="UCF101 and HMDB51: which of the published train/test splits, 1..3")
    group.add_argument("--shots", type=int, default=0,
                       help="few-shot training: this many training videos per class, a fixed random choice "
                            "(--shots_seed); 0: all")
    group.add_argument("--shots_seed", type=int, default=0, help="the seed of the --shots choice")
    group.add_argument("--class_template", default=None,
                       help="the text a class is scored by, {name} standing for its name in words (CamelCase and "
                            "underscores split); default 'a video of a person {name}' ('{name}' for ssv2, whose "
                            "class names are sentences)")
    group.add_argument("--class_list", default=None,
                       help="csv: a file of the class names, one a line (default: the training CSV's labels, "
                            "sorted)")
    group.add_argument("--test_views", type=int, default=1,
                       help="multi-view testing: score each evaluated video as this many temporal clips of "
                            "--max_frames frames (shifted within the segments) and average their scores")
    return parser


def check_recognition_args(args) -> None:
    """ValueError naming the flag for a recognition flag out of range."""
    if args.datatype in ("ucf101", "hmdb51") and args.split not in (1, 2, 3):
        raise ValueError(f"--split must be 1, 2 or 3 (the published {args.datatype} splits), got {args.split}")
    if args.datatype not in ("ucf101", "hmdb51") and args.split != 1:
        raise ValueError(f"--split chooses a split of ucf101 or hmdb51; --datatype {args.datatype} has one")
    if args.class_list and args.datatype != "csv":
        raise ValueError(f"--class_list is for --datatype csv; {args.datatype} reads its published class list")
    for flag in ("shots", "shots_seed"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    if args.test_views < 1:
        raise ValueError(f"--test_views must be >= 1, got {args.test_views}")
    if args.class_template is not None:
        check_template(args.class_template)


def load_labelled_videos(args, split: str) -> LabelledVideos:
    """The videos of `split` of --datatype; --holdout_val_videos takes a fixed random choice of training videos
    as the val split, and --shots then keeps that many videos per class for training."""
    videos = load_split(RECOGNITION_DATASETS[args.datatype][0], args, split)
    if split == "train" and args.shots:
        videos = videos.k_shot(args.shots, args.shots_seed)
    return videos


def build_recognition_dataset(args, split: str, resolution: int) -> RecognitionDataset:
    """The `split` ("train", "val" or "test") of --datatype as a RecognitionDataset of frames sampled and ordered
    by the same flags as retrieval (dataloaders.video_options), with --test_views clips per evaluated video and
    the class texts of --class_template."""
    videos = load_labelled_videos(args, split)
    template = args.class_template or RECOGNITION_DATASETS[args.datatype][1]
    texts = class_texts(videos.class_names, template, videos.class_texts)
    return RecognitionDataset(videos, texts, video_source(args), views=1 if split == "train" else args.test_views,
                              **video_options(args, split, resolution))
