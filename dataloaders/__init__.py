"""Text-video retrieval data: `build_dataset(args, split)` for the dataset `--datatype` names, and the flags.

Every dataset is a RetrievalDataset (see retrieval_dataset.py for the item format and the evaluation views);
the registry maps a --datatype to the function that reads its annotation files.
"""

from __future__ import annotations

import argparse
import dataclasses

from models.config_fields import add_config_args, config_from_args, option

from . import activitynet, custom_csv, didemo, lsmdc, msrvtt, msvd, vatex
from .annotations import SPLITS, Annotations, DataFileError, load_split
from .recognition import RECOGNITION_DATASETS
from .retrieval_dataset import FRAME_ORDERS, BadVideoError, BadVideoWarning, RetrievalDataset, frame_order
from .sources import FolderSource, LMDBSource, video_source
from .video_backends import VIDEO_BACKENDS
from .video_input import read_video_tensor
from .video_options import video_options
from .video_reader import VideoReadError, read_frames

DATA = "data"
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

__all__ = ["DATASETS", "SPLITS", "Annotations", "DataConfig", "BadVideoError", "BadVideoWarning", "DataFileError",
           "FolderSource", "LMDBSource", "RetrievalDataset", "VideoReadError", "add_data_args", "build_dataset",
           "load_annotations", "read_frames", "read_video_tensor", "video_source"]


def _frame_order_flag(value: str) -> str:
    try:
        return frame_order(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


ORDERS = f"{', '.join(FRAME_ORDERS)} (or the released 0, 1, 2)"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Every data flag (names of the released implementation where it has them), with its default, range and
    whether a --resume may change it; ``add_data_args`` registers them, ``DataConfig.from_args`` reads them."""

    datatype: str = option("msrvtt", f"dataset format: retrieval {', '.join(DATASETS)}; --task recognition "
                                     f"{', '.join(RECOGNITION_DATASETS)} (docs/RECOGNITION.md)",
                           tuple(sorted(set(DATASETS) | set(RECOGNITION_DATASETS))), DATA)
    data_path: str | None = option(None, "MSR-VTT: MSRVTT_data.json; other datasets: the folder of annotation files",
                                   group=DATA, type=str)
    features_path: str | None = option(None, "folder of the (compressed) videos", group=DATA, type=str)
    lmdb_dataset: str | None = option(None, "read videos from this LMDB (preprocess/folder_to_lmdb.py) instead of "
                                            "--features_path", group=DATA, type=str)
    train_csv: str | None = option(None, "MSR-VTT: MSRVTT_train.9k.csv or .7k.csv; csv: training pairs", group=DATA,
                                   type=str)
    val_csv: str | None = option(None, "MSR-VTT: MSRVTT_JSFUSION_test.csv; csv: validation pairs", group=DATA,
                                 type=str)
    test_csv: str | None = option(None, "MSR-VTT and csv: the test split if not --val_csv", group=DATA, type=str)
    frame_sampling: str = option("release", "release: the released multi_segments_sampling (segments of N // T "
                                            "frames; evaluation at int(tick / 2 + tick * x), tick = N / T); uniform: "
                                            "segments that cover every frame, centre / random frame of each (see "
                                            "docs/DATA.md)", ("release", "uniform"), DATA)
    video_backend: str = option("pyav", "the video decoder: pyav, opencv or torchcodec (where it installs): the "
                                        "same frames, each library's own YUV -> RGB conversion (docs/DATA.md)",
                                VIDEO_BACKENDS, DATA)
    train_frame_order: str = option("natural", f"{ORDERS}: order of each training clip's frames: as sampled, "
                                               "reversed, or shuffled by a new permutation per draw (frame-order "
                                               "ablations)", group=DATA, type=_frame_order_flag, metavar="ORDER")
    eval_frame_order: str = option("natural", f"{ORDERS}: order of each clip's frames at evaluation (val and test): "
                                              "as sampled, reversed, or shuffled by a fixed per-video permutation "
                                              "(frame-order ablations)", group=DATA, type=_frame_order_flag,
                                   metavar="ORDER")
    expand_msrvtt_sentences: bool = option(False, "MSR-VTT training: one item per (video, caption) pair instead of "
                                                  "per video", group=DATA, action=argparse.BooleanOptionalAction)
    max_bad_video_fraction: float = option(
        0.05, "stop with an error when more than this fraction of a split's videos is missing or unreadable (they "
              "are skipped with a warning below it)", group=DATA, within=(0, 1),
        resume_free="when bad videos stop the run (below it they are skipped alike)")
    holdout_val_videos: int = option(0, "if > 0: take this many training videos (a fixed random choice) out of "
                                        "training and use them as the val split, for model selection without the "
                                        "test set", group=DATA, at_least=0)

    @classmethod
    def from_args(cls, args) -> DataConfig:
        return config_from_args(cls, args)


def add_data_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register one flag per DataConfig field and return ``parser``."""
    return add_config_args(parser, DataConfig)


def load_annotations(args, split: str) -> Annotations:
    """The annotations of `split` of --datatype, with --holdout_val_videos applied."""
    return load_split(DATASETS[args.datatype], args, split)


def build_dataset(args, split: str, resolution: int) -> RetrievalDataset:
    """The `split` ("train", "val" or "test") of --datatype as a RetrievalDataset (``video_options``)."""
    return RetrievalDataset(load_annotations(args, split), video_source(args), **video_options(args, split, resolution))
