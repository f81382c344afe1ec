"""Text-video retrieval data: `build_dataset(args, split)` for the dataset `--datatype` names, and the flags.

Every dataset is a RetrievalDataset (see retrieval_dataset.py for the item format and the evaluation views);
the registry maps a --datatype to the function that reads its annotation files.
"""

from __future__ import annotations

import argparse

from . import activitynet, custom_csv, didemo, lsmdc, msrvtt, msvd, vatex
from .annotations import SPLITS, Annotations, DataFileError, load_split
from .recognition import RECOGNITION_DATASETS
from .retrieval_dataset import FRAME_ORDERS, BadVideoError, BadVideoWarning, RetrievalDataset, frame_order
from .sources import FolderSource, LMDBSource, video_source
from .video_backends import VIDEO_BACKENDS
from .video_input import read_video_tensor
from .video_options import video_options
from .video_reader import VideoReadError, read_frames

# --datatype -> function (args, split) -> Annotations
DATASETS = {
    "msrvtt": msrvtt.load_annotations,
    "activitynet": activitynet.load_annotations,
    "didemo": didemo.load_annotations,
    "vatex": vatex.load_annotations,
    "msvd": msvd.load_annotations,
    "lsmdc": lsmdc.load_annotations,
    "csv": custom_csv.load_annotations,
}

__all__ = ["DATASETS", "SPLITS", "Annotations", "BadVideoError", "BadVideoWarning", "DataFileError",
           "FolderSource", "LMDBSource", "RetrievalDataset", "VideoReadError", "add_data_args", "build_dataset",
           "load_annotations", "read_frames", "read_video_tensor", "video_source"]


def add_data_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the data flags (names of the released implementation where it has them)."""
    group = parser.add_argument_group("data")
    group.add_argument("--datatype", default="msrvtt", choices=sorted(set(DATASETS) | set(RECOGNITION_DATASETS)),
                       help=f"dataset format: retrieval {', '.join(DATASETS)}; --task recognition "
                            f"{', '.join(RECOGNITION_DATASETS)} (docs/RECOGNITION.md)")
    group.add_argument("--data_path", default=None,
                       help="MSR-VTT: MSRVTT_data.json; other datasets: the folder of annotation files")
    group.add_argument("--features_path", default=None, help="folder of the (compressed) videos")
    group.add_argument("--lmdb_dataset", default=None,
                       help="read videos from this LMDB (preprocess/folder_to_lmdb.py) instead of --features_path")
    group.add_argument("--train_csv", default=None, help="MSR-VTT: MSRVTT_train.9k.csv or .7k.csv; csv: training pairs")
    group.add_argument("--val_csv", default=None, help="MSR-VTT: MSRVTT_JSFUSION_test.csv; csv: validation pairs")
    group.add_argument("--test_csv", default=None, help="MSR-VTT and csv: the test split if not --val_csv")
    group.add_argument("--frame_sampling", default="release", choices=("release", "uniform"),
                       help="release: the released multi_segments_sampling (segments of N // T frames; "
                            "evaluation at int(tick / 2 + tick * x), tick = N / T); uniform: segments that cover "
                            "every frame, centre / random frame of each (see docs/DATA.md)")
    group.add_argument("--video_backend", default="pyav", choices=VIDEO_BACKENDS,
                       help="the video decoder: pyav (default), opencv or torchcodec (where it installs): the same "
                            "frames, each library's own YUV -> RGB conversion (docs/DATA.md)")
    orders = f"{', '.join(FRAME_ORDERS)} (or the released 0, 1, 2)"
    group.add_argument("--train_frame_order", default="natural", type=_frame_order_flag, metavar="ORDER",
                       help=f"{orders}: order of each training clip's frames: as sampled, reversed, or shuffled "
                            "by a new permutation per draw (frame-order ablations)")
    group.add_argument("--eval_frame_order", default="natural", type=_frame_order_flag, metavar="ORDER",
                       help=f"{orders}: order of each clip's frames at evaluation (val and test): as sampled, "
                            "reversed, or shuffled by a fixed per-video permutation (frame-order ablations)")
    group.add_argument("--expand_msrvtt_sentences", action=argparse.BooleanOptionalAction, default=False,
                       help="MSR-VTT training: one item per (video, caption) pair instead of per video")
    group.add_argument("--max_bad_video_fraction", type=float, default=0.05,
                       help="stop with an error when more than this fraction of a split's videos is missing or "
                            "unreadable (they are skipped with a warning below it)")
    group.add_argument("--holdout_val_videos", type=int, default=0,
                       help="if > 0: take this many training videos (a fixed random choice) out of training and "
                            "use them as the val split, for model selection without the test set")
    return parser


def _frame_order_flag(value: str) -> str:
    try:
        return frame_order(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def load_annotations(args, split: str) -> Annotations:
    """The annotations of `split` of --datatype, with --holdout_val_videos applied."""
    return load_split(DATASETS[args.datatype], args, split)


def build_dataset(args, split: str, resolution: int) -> RetrievalDataset:
    """The `split` ("train", "val" or "test") of --datatype as a RetrievalDataset (``video_options``)."""
    return RetrievalDataset(load_annotations(args, split), video_source(args), **video_options(args, split, resolution))
