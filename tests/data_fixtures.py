"""Small generated videos and datasets shared by the data and preprocessing tests (written once per session)."""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np

from dataloaders import add_data_args
from dataloaders.synthetic import write_dataset
from models import add_model_args

RESOLUTION = 32  # the frame size the data tests ask for (main.py passes the model's input resolution)
SYNTHETIC = {"num_train": 12, "num_test": 6, "seed": 0, "image_size": 32, "num_frames": 8, "fps": 4}


def synthetic_root(base: Path) -> Path:
    """A generated MSR-VTT-layout dataset under `base` (pytest's session temp folder), written on first use."""
    root = base / "synthetic"
    if not (root / "done").exists():
        write_dataset(str(root), progress=False, **SYNTHETIC)
        (root / "done").touch()
    return root


def data_args(*argv: str, **overrides) -> argparse.Namespace:
    """The parsed data flags and the model's input flags (--max_frames, --max_words), as main.py parses them."""
    args = add_data_args(add_model_args(argparse.ArgumentParser())).parse_args(list(argv))
    for name, value in overrides.items():
        setattr(args, name, value)
    return args


def msrvtt_args(root: Path, *argv: str, **overrides) -> argparse.Namespace:
    return data_args("--datatype", "msrvtt", "--data_path", str(root / "MSRVTT_data.json"),
                     "--features_path", str(root / "videos"), "--train_csv", str(root / "MSRVTT_train.9k.csv"),
                     "--val_csv", str(root / "MSRVTT_JSFUSION_test.csv"), *argv, **overrides)


def coded_frames(num_frames: int, height: int = 16, width: int = 24) -> np.ndarray:
    """uint8 [T, H, W, 3] whose red channel is 10 * frame index + 5 (so a decoded frame tells its index) and
    green channel 9 * column (so crops can be located)."""
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    frames[..., 0] = (10 * np.arange(num_frames) + 5)[:, None, None]
    frames[..., 1] = (9 * np.arange(width))[None, None, :]
    frames[..., 2] = 77
    return frames


def write_lossless_video(path: Path, frames: np.ndarray, fps: int = 4, options: dict | None = None) -> Path:
    """Encode RGB frames losslessly (H.264 RGB, qp 0) so decoded pixels equal `frames` exactly. An .mkv has
    no frame count in its header; options={"movflags": "faststart"} puts an mp4's header first."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("libx264rgb", rate=fps, options={"qp": "0"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "rgb24"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def frame_index(decoded_frame: np.ndarray) -> int:
    """The index coded into a frame of coded_frames()."""
    return int(round((float(decoded_frame[..., 0].mean()) - 5) / 10))
