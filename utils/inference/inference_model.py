"""A trained model ready for inference (infer.py): on its device, under its precision, with what it is.

`add_inference_model_args` registers the flags that name the weights and override the model options (every
model flag defaults to None = the checkpoint's value; what neither names takes ModelConfig's defaults);
`load_inference_model` builds it through models.load_trained. Without a checkpoint only the frozen-CLIP meanP
baseline (`--prompt none`) can be built: prompts are trained weights.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from models import ModelConfig, ModelInputs, TrainedModel, VideoTextModel, add_model_args, load_trained
from models.checkpoints import RUN_FOLDER_CHECKPOINTS
from models.clip import clip_weights_file
from models.file_digest import cached_sha256_of
from models.prompted_video import VideoDetails
from models.tokenizer import tokenize
from utils.engine.runtime.allocator import add_retain_freed_memory_flag, retain_freed_memory
from utils.engine.runtime.distributed import DEVICE_HELP, resolve_device
from utils.engine.runtime.precision import PRECISIONS, Precision, resolve_precision

log = logging.getLogger(__name__)

# The description entries that must agree for two models to give comparable embeddings (paths may differ;
# max_words only truncates texts).
IDENTITY_KEYS = ("checkpoint_sha256", "clip_sha256", "config", "image_resolution", "embed_dim")


def add_inference_model_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags that name and configure the model; model flags default to None (= from the checkpoint)."""
    group = parser.add_argument_group("trained model")
    group.add_argument("--checkpoint", default=None,
                       help=f"trained weights: a run folder ({' or '.join(RUN_FOLDER_CHECKPOINTS)} in it), a "
                            "checkpoint of ours, a state dict of this project's names or a checkpoint of the "
                            "released implementation (then give the model flags); omit only with --prompt none")
    group.add_argument("--pretrained_clip_name", default=None,
                       help="ViT-B/32, ViT-B/16, ViT-L/14 (looked up in --pretrained_dir), a path to CLIP weights "
                            "or a Hugging Face transformers CLIP folder (default: the one the checkpoint was trained "
                            "on, else ViT-B/32)")
    group.add_argument("--pretrained_dir", default=None,
                       help="folder of OpenAI's CLIP weights; default $STOP_PRETRAINED_DIR or ~/models/pretrained")
    group.add_argument("--device", default="auto", help=DEVICE_HELP)
    group.add_argument("--precision", choices=PRECISIONS, default=None,
                       help="autocast (utils/engine/runtime/precision.py); default amp on a GPU, fp32 on the CPU")
    add_retain_freed_memory_flag(group)
    add_model_args(parser, defaults_from_config=False)
    return parser


def normalised_config(config: dict[str, Any]) -> dict[str, Any]:
    """A saved configuration with the defaults of options it predates filled in (comparable across versions)."""
    return ModelConfig.from_dict(config).to_dict()


@dataclasses.dataclass
class InferenceModel:
    """The model in eval mode on `device`, with what inputs it expects and what it is (`description`)."""

    model: VideoTextModel
    inputs: ModelInputs
    device: torch.device
    precision: Precision
    description: dict[str, Any]

    @property
    def max_frames(self) -> int:
        return self.inputs.max_frames

    @property
    def max_words(self) -> int:
        return self.inputs.max_words

    @property
    def resolution(self) -> int:
        return self.inputs.resolution

    @torch.inference_mode()
    def encode_videos(self, video: torch.Tensor, video_mask: torch.Tensor, return_details: bool = False
                      ) -> torch.Tensor | tuple[torch.Tensor, VideoDetails]:
        """video [B, T, 3, R, R], video_mask [B, T] -> raw features float32 [B, E] on the CPU; with
        return_details also STOP's VideoDetails (region mask [B, T, g, g], frame weights [B, T]) on the CPU."""
        with self.precision.autocast():
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
            with self.precision.autocast():
                features.append(self.model.encode_text(ids).float().cpu())
        return torch.cat(features)

    def differences_from(self, description: dict[str, Any]) -> list[str]:
        """Names of the IDENTITY_KEYS on which `description` (of another model) differs from this model's."""
        other = {**description, "config": normalised_config(description.get("config") or {})}
        return [key for key in IDENTITY_KEYS if other.get(key) != self.description.get(key)]


def describe(trained: TrainedModel) -> dict[str, Any]:
    """What identifies a trained model's embeddings: weights and CLIP (paths and SHA-256 of the files holding the
    tensors: a transformers CLIP folder's weights file), configuration."""
    checkpoint, clip_path = trained.checkpoint, trained.clip_path
    return {"checkpoint": str(checkpoint.resolve()) if checkpoint else None,
            "checkpoint_sha256": cached_sha256_of(checkpoint) if checkpoint else None,
            "clip": str(clip_path.resolve()), "clip_sha256": cached_sha256_of(clip_weights_file(clip_path)),
            "config": trained.config.to_dict(), "max_words": trained.inputs.max_words,
            "image_resolution": trained.inputs.resolution, "embed_dim": trained.model.clip.visual.output_dim}


def load_inference_model(args: argparse.Namespace) -> InferenceModel:
    """Build the model named by the flags of add_inference_model_args (see the module docstring). Raises
    FileNotFoundError, models.CheckpointError or ValueError with a message for the user."""
    if args.checkpoint is None and (args.prompt or ModelConfig().prompt) != "none":
        raise ValueError("no --checkpoint: the STOP/DGL prompts are trained weights; pass --checkpoint (ckpt_best.pt "
                         "of a training run), or --prompt none for the frozen-CLIP meanP baseline")
    device = resolve_device(args.device)
    log.info(retain_freed_memory(args.retain_freed_memory))
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    overrides = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    trained = load_trained(args.checkpoint, overrides=overrides, clip=args.pretrained_clip_name,
                           pretrained_dir=args.pretrained_dir)
    trained.config.check_text_context(trained.model.clip.context_length)
    precision = resolve_precision(args.precision or ("amp" if device.type == "cuda" else "fp32"), device)
    return InferenceModel(trained.model.to(device).eval(), trained.inputs, device, precision, describe(trained))
