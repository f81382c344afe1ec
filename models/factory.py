"""The one place that builds models: `create_model` (a configuration + CLIP weights -> a fresh model) and
`load_trained` (a trained-weights file of any recognised layout -> the model it describes, with what its
inputs must be).

    model = create_model(ModelConfig(temporal_prompt="none"), "ViT-B/32", pretrained_dir="/models")
    trained = load_trained("runs/x")          # ckpt_best.pt of a run folder, its configuration and CLIP
    trained.model, trained.inputs             # inputs: resolution, frames, words
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

from models.checkpoints import CheckpointError, ModelState, read_model_state, resolve_checkpoint_path
from models.clip import CLIP, load_clip, resolve_clip_path
from models.model_config import ModelConfig
from models.video_text_model import VideoTextModel

DEFAULT_CLIP = "ViT-B/32"
log = logging.getLogger(__name__)


class ModelInputs(NamedTuple):
    """What the model's inputs must be: frames of `resolution` px, `max_frames` frames, `max_words` tokens."""

    resolution: int
    max_frames: int
    max_words: int


def model_inputs(model: VideoTextModel) -> ModelInputs:
    return ModelInputs(model.clip.visual.input_resolution, model.config.max_frames, model.config.max_words)


def create_model(config: ModelConfig | None = None, clip: CLIP | str | os.PathLike = DEFAULT_CLIP,
                 pretrained_dir: str | None = None) -> VideoTextModel:
    """A new model of `config` (default: the released STOP) on `clip`: a loaded CLIP, or a name (`ViT-B/32`,
    looked up in `pretrained_dir`) or path of CLIP weights (models.clip.load_clip, with config.clip_activation).
    The prompt modules are at their random initialisation; CLIP is frozen (model.unlock_clip() trains it too)."""
    config = config or ModelConfig()
    if not isinstance(clip, CLIP):
        clip = load_clip(str(clip), pretrained_dir, config.clip_activation)
    return VideoTextModel(clip, config)


def build_model(args, clip: CLIP) -> VideoTextModel:
    """create_model with the configuration of argparse-style `args` (or None: the defaults)."""
    return create_model(ModelConfig.from_args(args), clip)


@dataclasses.dataclass
class TrainedModel:
    """A model rebuilt from trained weights, with where it came from."""

    model: VideoTextModel
    kind: str | None  # "checkpoint", "state dict", "released checkpoint"; None without weights (meanP)
    checkpoint: Path | None  # the weights file
    clip_path: Path | None  # the CLIP weights file or folder (None when a loaded CLIP was passed in)
    saved_args: dict[str, Any]  # the run arguments saved in the checkpoint (empty for other layouts)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def inputs(self) -> ModelInputs:
        return model_inputs(self.model)


def saved_config(state: ModelState) -> dict[str, Any]:
    """The configuration a weights file records: a checkpoint's `model_config`, or (older checkpoints) the model
    options among its saved arguments; {} for the other layouts."""
    if state.config is not None:
        return dict(state.config)
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return {k: v for k, v in state.args.items() if k in names and v is not None}


def load_trained(path: str | os.PathLike | None, config: ModelConfig | None = None,
                 overrides: dict[str, Any] | None = None, clip: CLIP | str | os.PathLike | None = None,
                 pretrained_dir: str | None = None) -> TrainedModel:
    """The model that trained weights describe, with those weights loaded.

    path: a weights file of any layout models.checkpoints recognises (our checkpoints, plain state dicts,
      released checkpoints), or a run folder (its ckpt_best.pt, else ckpt_last.pt); None builds the frozen-CLIP
      meanP baseline only (the prompts are trained weights).
    config: the configuration to build (the weights must fit it). Without it: the configuration saved in the
      checkpoint (defaults for layouts that save none), with `overrides` (option name -> value) applied.
    clip / pretrained_dir: the CLIP (loaded, a name or a path); default the checkpoint's `pretrained_clip_name`
      (and its `pretrained_dir` where that folder exists), else ViT-B/32. A name or path is loaded with the
      configuration's clip_activation (a checkpoint's saved one when rebuilding it); a checkpoint that records
      another activation than the CLIP's is warned about.
    Raises FileNotFoundError (no such file), CheckpointError (unreadable, or not fitting the configuration),
    ValueError (an invalid configuration).
    """
    checkpoint = resolve_checkpoint_path(path) if path is not None else None
    state = read_model_state(checkpoint) if checkpoint is not None else ModelState(None, {}, None, {})
    if config is None:
        try:
            config = ModelConfig.from_dict({**saved_config(state), **(overrides or {})})
        except TypeError as error:
            raise CheckpointError(f"{checkpoint}: {error}") from None
    if checkpoint is None and config.uses_prompts:
        raise ValueError("no trained weights: the STOP/DGL prompts are trained weights; pass a checkpoint "
                         "(ckpt_best.pt of a training run), or build the frozen-CLIP meanP baseline (prompt none)")
    clip_path = None
    if not isinstance(clip, CLIP):
        name = str(clip or state.args.get("pretrained_clip_name") or DEFAULT_CLIP)
        saved_dir = state.args.get("pretrained_dir")
        pretrained_dir = pretrained_dir or (saved_dir if saved_dir and Path(saved_dir).is_dir() else None)
        clip_path = resolve_clip_path(name, pretrained_dir)
        clip = load_clip(name, pretrained_dir, config.clip_activation)
    model = create_model(config, clip)
    trained_on, activation = saved_config(state).get("clip_activation"), model.clip.config.activation
    if trained_on not in (None, activation):
        log.warning(f"{checkpoint} was trained on a CLIP computing {trained_on}, this CLIP computes {activation}: "
                    "its features will differ from the run's (--clip_activation)")
    if checkpoint is not None:
        model.load_learned_state_dict(state.state, f"{checkpoint} ({state.kind})")
    if state.kind == "released checkpoint" and config.uses_stop and config.spatial_mask_grid != "lattice":
        log.warning("checkpoints trained by the released implementation use the lattice cell layout of the "
                    "spatial mask; build the model with --spatial_mask_grid lattice to reproduce them")
    return TrainedModel(model, state.kind, checkpoint, clip_path, state.args)
