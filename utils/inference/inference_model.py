"""A trained model rebuilt for inference: a checkpoint of ours (utils/checkpoint.py) + the CLIP weights.

The model flags (models.add_model_args), --max_frames and --max_words are restored from the arguments saved in
the checkpoint; flags given on the command line override them; what neither names takes the defaults. Without
a checkpoint only the frozen-CLIP meanP baseline (`--prompt none`) can be built: prompts are trained weights.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
from pathlib import Path
from typing import Any, ContextManager

import torch

from models import ModelConfig, VideoTextModel, add_model_args
from models.clip import CLIP, load_clip, resolve_clip_path
from models.model_config import DEFAULT_MAX_FRAMES, model_defaults
from models.prompted_video import VideoDetails
from models.tokenizer import tokenize
from utils.checkpoint import is_our_checkpoint, load_checkpoint, load_learned_state

DEFAULT_MAX_WORDS = 32
CHECKPOINT_NAMES = ("ckpt_best.pt", "ckpt_last.pt")  # looked up, in this order, in a run folder
# The description entries that must agree for two models to give comparable embeddings (paths may differ;
# max_words only truncates texts).
IDENTITY_KEYS = ("checkpoint_sha256", "clip_sha256", "config", "image_resolution", "embed_dim")
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def add_trained_model_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags that name and configure the model; model flags default to None (= from the checkpoint)."""
    group = parser.add_argument_group("trained model")
    group.add_argument("--checkpoint", default=None,
                       help="trained weights: ckpt_best.pt / ckpt_last.pt of a run (or its folder: ckpt_best.pt "
                            "is used), or a state dict of this project's names (e.g. a converted released "
                            "checkpoint; then give the model flags); omit only with --prompt none")
    group.add_argument("--pretrained_clip_name", default=None,
                       help="ViT-B/32, ViT-B/16 (looked up in --pretrained_dir) or a path to CLIP weights "
                            "(default: the one the checkpoint was trained on, else ViT-B/32)")
    group.add_argument("--pretrained_dir", default=None,
                       help="folder of OpenAI's CLIP weights; default $STOP_PRETRAINED_DIR or ~/models/pretrained")
    group.add_argument("--max_frames", type=int, default=None,
                       help=f"frames sampled per video (default: the checkpoint's, else {DEFAULT_MAX_FRAMES})")
    group.add_argument("--max_words", type=int, default=None,
                       help=f"text length in tokens (default: the checkpoint's, else {DEFAULT_MAX_WORDS})")
    group.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1 ...")
    group.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                       help="autocast dtype; auto: fp16 on CUDA, fp32 on the CPU")
    add_model_args(parser)
    parser.set_defaults(**{name: None for name in model_defaults()})
    return parser


def resolve_checkpoint(path: str) -> Path:
    """A checkpoint file, or the first of CHECKPOINT_NAMES in a run folder; SystemExit when there is none."""
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        found = next((candidate / name for name in CHECKPOINT_NAMES if (candidate / name).is_file()), None)
        if found is None:
            raise SystemExit(f"error: --checkpoint: no {' or '.join(CHECKPOINT_NAMES)} in folder {candidate}")
        return found
    if not candidate.is_file():
        raise SystemExit(f"error: --checkpoint: checkpoint not found: {candidate}")
    return candidate


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"error: --device {name!r} is not a device (auto, cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def _read_trained_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model tensors, saved run arguments) of our checkpoint, or of a plain state dict (no arguments)."""
    payload = load_checkpoint(path, "--checkpoint")
    if is_our_checkpoint(payload):
        return payload["model"], dict(payload.get("args") or {})
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload, {}
    raise SystemExit(f"error: --checkpoint {path}: neither a checkpoint of this project nor a state dict of "
                     "tensors (convert a released STOP checkpoint with utils/convert_released_checkpoint.py)")


def _load_clip(name: str, pretrained_dir: str | None) -> CLIP:
    try:
        return load_clip(name, pretrained_dir)
    except FileNotFoundError as error:
        raise SystemExit("error: " + " ".join(str(error).splitlines())) from None
    except ValueError as error:
        raise SystemExit(f"error: cannot load CLIP weights: {error}") from None


@dataclasses.dataclass
class TrainedModel:
    """The model in eval mode on `device`, with what inputs it expects and what it is (`description`)."""

    model: VideoTextModel
    device: torch.device
    autocast_dtype: torch.dtype | None
    max_frames: int
    max_words: int
    description: dict[str, Any]

    @property
    def resolution(self) -> int:
        return self.model.clip.visual.input_resolution

    def autocast(self) -> ContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def encode_videos(self, video: torch.Tensor, video_mask: torch.Tensor, return_details: bool = False
                      ) -> torch.Tensor | tuple[torch.Tensor, VideoDetails]:
        """video [B, T, 3, R, R], video_mask [B, T] -> raw features float32 [B, E] on the CPU; with
        return_details also STOP's VideoDetails (region mask [B, T, g, g], frame weights [B, T]) on the CPU."""
        with self.autocast():
            features, details = self.model.encode_video(video.to(self.device), video_mask.to(self.device),
                                                        return_details=True)
        if not return_details:
            return features.float().cpu()
        return features.float().cpu(), VideoDetails(*(None if d is None else d.cpu() for d in details))

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """texts -> raw features float32 [len(texts), E] on the CPU (tokenised to max_words, truncated)."""
        features = []
        for start in range(0, len(texts), batch_size):
            ids = tokenize(texts[start:start + batch_size], self.max_words).to(self.device)
            with self.autocast():
                features.append(self.model.encode_text(ids).float().cpu())
        return torch.cat(features)

    def differences_from(self, description: dict[str, Any]) -> list[str]:
        """Names of the IDENTITY_KEYS on which `description` (of another model) differs from this model's."""
        return [key for key in IDENTITY_KEYS if description.get(key) != self.description.get(key)]


def load_trained_model(args: argparse.Namespace) -> TrainedModel:
    """Build the model named by the flags of add_trained_model_args (see the module docstring)."""
    checkpoint = resolve_checkpoint(args.checkpoint) if args.checkpoint else None
    state, saved = _read_trained_state(checkpoint) if checkpoint else ({}, {})

    def option(name: str, default):
        value = getattr(args, name, None)
        return value if value is not None else saved.get(name, default)

    max_frames, max_words = option("max_frames", DEFAULT_MAX_FRAMES), option("max_words", DEFAULT_MAX_WORDS)
    try:
        config = ModelConfig.from_args(None, max_frames=max_frames,
                                       **{name: option(name, default) for name, default in model_defaults().items()})
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if checkpoint is None and config.uses_prompts:
        raise SystemExit("error: no --checkpoint: the STOP/DGL prompts are trained weights; pass --checkpoint "
                         "(ckpt_best.pt of a training run), or --prompt none for the frozen-CLIP meanP baseline")
    clip_name = option("pretrained_clip_name", "ViT-B/32")
    saved_dir = saved.get("pretrained_dir")
    pretrained_dir = args.pretrained_dir or (saved_dir if saved_dir and Path(saved_dir).is_dir() else None)
    clip = _load_clip(clip_name, pretrained_dir)
    pretrained = list(clip.parameters()) + list(clip.buffers())
    model = VideoTextModel(clip, config)
    if checkpoint:
        load_learned_state(model, state, pretrained, f"--checkpoint {checkpoint}")
    device = resolve_device(args.device)
    precision = args.precision if args.precision != "auto" else ("fp16" if device.type == "cuda" else "fp32")
    clip_path = resolve_clip_path(clip_name, pretrained_dir)
    description = {
        "checkpoint": str(checkpoint.resolve()) if checkpoint else None,
        "checkpoint_sha256": file_sha256(checkpoint) if checkpoint else None,
        "clip": str(clip_path.resolve()), "clip_sha256": file_sha256(clip_path),
        "config": dataclasses.asdict(config), "max_words": max_words,
        "image_resolution": clip.visual.input_resolution, "embed_dim": clip.visual.output_dim,
    }
    return TrainedModel(model.to(device).eval(), device, PRECISIONS[precision], max_frames, max_words, description)
