"""Trained-weight files: reading them safely, telling their layout apart, converting foreign layouts to ours.

Three layouts are recognised (`read_model_state`):
  checkpoint           a checkpoint of this project (utils/engine/training/checkpoint.py): a dict with
                       ``format == FORMAT``, ``model`` (our tensor names) and the configuration it was trained with
                       (``model_config``; checkpoints written before it existed hold it in ``args``)
  state dict           a plain {name: tensor} of this project's names (e.g. a converted released checkpoint)
  released checkpoint  the authors' implementation: ``{'state_dict': ...}`` with ``module.clip.*`` keys
                       (MODEL.md section 7), converted here: OpenAI CLIP keys keep their names under ``clip.``, the
                       prompt modules are renamed (PREFIXES) and the two ``[1, n, d]`` prompt tensors lose their
                       leading 1. Such checkpoints expect ``--spatial_mask_grid lattice``.
Files are read with torch's weights-only unpickler: a file cannot run code unless `trust_pickle` is given.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import torch

FORMAT = "stop-checkpoint/1"
RUN_FOLDER_CHECKPOINTS = ("ckpt_best.pt", "ckpt_last.pt")  # looked up, in this order, in a run folder

# Key fragments that only the released implementation's checkpoints have.
RELEASED_KEY_MARKERS = ("module.clip.", "TemporalPrompt", "unified_prompt_embedding", "PromptTransformer",
                        ".LoRA.", "prompt_embeddings", "visual_prompt_embedding", "text_prompt_proj_layer")
# released name prefix (after `clip.`) -> this project's prefix
PREFIXES = (
    ("visual.TemporalPrompt.Conv.0.", "video_encoder.spatial_prompt.conv1."),
    ("visual.TemporalPrompt.Conv.1.", "video_encoder.spatial_prompt.conv2."),
    ("visual.TemporalPrompt.Conv.2.", "video_encoder.spatial_prompt.act2."),
    ("visual.TemporalPrompt.Conv.3.", "video_encoder.spatial_prompt.conv3."),
    ("visual.TemporalPrompt.Conv.4.", "video_encoder.spatial_prompt.act3."),
    ("visual.TemporalPrompt.Conv.5.", "video_encoder.spatial_prompt.conv4."),
    ("visual.TemporalPrompt.MLP.", "video_encoder.spatial_prompt.mlp."),
    ("visual.TemporalPrompt.Cal_Net.", "video_encoder.spatial_prompt.score_conv."),
    ("visual.TemporalPrompt.Attention.", "video_encoder.temporal_prompt.attention."),
    ("visual.TemporalPrompt.InterConv.0.", "video_encoder.temporal_prompt.conv1."),
    ("visual.TemporalPrompt.InterConv.1.", "video_encoder.temporal_prompt.act1."),
    ("visual.TemporalPrompt.InterConv.2.", "video_encoder.temporal_prompt.conv2."),
    ("visual.TemporalPrompt.InterMLP.", "video_encoder.temporal_prompt.mlp."),
    ("visual.TemporalPrompt.Cal_Net_Inter.", "video_encoder.temporal_prompt.weight_conv."),
    ("unified_prompt_embedding.", "prompt_generator.embedding."),
    ("PromptTransformer.resblocks.0.", "prompt_generator.block."),
    ("unified_prompt_mlp.", "prompt_generator.text_mlp."),
    ("prefix_text_prompt_proj_layer.", "prompt_generator.prefix_proj."),
    ("postfix_text_prompt_proj_layer.", "prompt_generator.postfix_proj."),
)
# released [1, n, d] parameters -> [n, d]
SQUEEZED = (("visual.prompt_embeddings", "video_encoder.global_prompts"),
            ("visual_prompt_embedding", "prompt_generator.visual_embedding"))
ADAPTER_LAYERS = ("down", "act", "up")  # released LoRA.0, LoRA.1, LoRA.2
RELEASED_ADAPTER = re.compile(r"(visual\.)?transformer\.resblocks\.(\d+)\.LoRA\.([012])\.(\w+)$")
OUR_ADAPTER = re.compile(r"(video|text)_encoder\.adapters\.(\d+)\.(down|act|up)\.(\w+)$")
IGNORED = ("visual.position_ids",)  # a buffer of the released code that holds no weights


class CheckpointError(ValueError):
    """A weights file that cannot be read or does not fit the model; the message names the file and the fix."""


def integer_float_tensors(state: dict[str, Any], expected: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors of `state` stored in an integer (or bool) dtype where `expected` (the model's own
    state dict) holds floating-point values: weights written wrong, rounded, whose scores collapse to ties."""
    return sorted(k for k, v in state.items() if k in expected and expected[k].is_floating_point()
                  and isinstance(v, torch.Tensor) and not (v.is_floating_point() or v.is_complex()))


def integer_dtype_message(source: str, names: list[str], state: dict[str, torch.Tensor]) -> str:
    """The one line for integer_float_tensors' `names` of `state` read from `source`."""
    return (f"{source}: {len(names)} floating-point tensors are stored as integers (e.g. {names[0]!r}: "
            f"{state[names[0]].dtype}), so their values are rounded; re-export the weights in float32 / float16")


class ModelState(NamedTuple):
    """What a weights file holds, in this project's names."""

    kind: str  # "checkpoint", "state dict" or "released checkpoint"
    state: dict[str, torch.Tensor]
    config: dict[str, Any] | None  # the saved model configuration (checkpoints only)
    args: dict[str, Any]  # the saved run arguments (checkpoints only, else empty)


def resolve_checkpoint_path(path: str | os.PathLike, names: tuple[str, ...] = RUN_FOLDER_CHECKPOINTS) -> Path:
    """A weights file, or the first of `names` in a run folder; FileNotFoundError when there is none."""
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        found = next((candidate / name for name in names if (candidate / name).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"no {' or '.join(names)} in folder {candidate}")
        return found
    if not candidate.is_file():
        raise FileNotFoundError(f"checkpoint not found: {candidate}")
    return candidate


def read_checkpoint_file(path: str | os.PathLike, trust_pickle: bool = False) -> Any:
    """torch.load on the CPU with the weights-only unpickler (unless `trust_pickle`); CheckpointError naming the
    file for a truncated, foreign or code-carrying file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as error:  # truncated, not a torch file, or refused by the weights-only unpickler
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(f"cannot read {path} as a checkpoint ({type(error).__name__}: {first_line})"
                              + ("" if trust_pickle else "; if it holds more than tensors and you trust it, "
                                 "convert it with utils/convert_released_checkpoint.py --trust_pickle")) from None


def is_checkpoint(payload: Any) -> bool:
    """Whether `payload` (a loaded file) is a checkpoint of this project."""
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def read_model_state(path: str | os.PathLike) -> ModelState:
    """The model tensors of any recognised layout (module docstring), in our names."""
    payload = read_checkpoint_file(path)
    if is_checkpoint(payload):
        return ModelState("checkpoint", payload["model"], payload.get("model_config"), dict(payload.get("args") or {}))
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: neither a checkpoint of this project nor a state dict of tensors")
    if any(marker in key for key in state for marker in RELEASED_KEY_MARKERS):
        try:
            return ModelState("released checkpoint", convert_released_state_dict(state), None, {})
        except KeyError as error:
            raise CheckpointError(f"{path}: {error.args[0]}") from None
    return ModelState("state dict", state, None, {})


def _from_released(name: str) -> str | None:
    """A released name without `module.clip.` -> ours (None for entries without weights)."""
    if name in IGNORED:
        return None
    for released, ours in SQUEEZED:
        if name == released:
            return ours
    for released, ours in PREFIXES:
        if name.startswith(released):
            return ours + name[len(released):]
    adapter = RELEASED_ADAPTER.match(name)
    if adapter:
        visual, layer, index, param = adapter.groups()
        return f"{'video' if visual else 'text'}_encoder.adapters.{layer}.{ADAPTER_LAYERS[int(index)]}.{param}"
    return "clip." + name


def _to_released(name: str) -> str:
    """One of our names -> the released name without `module.`."""
    for released, ours in SQUEEZED:
        if name == ours:
            return "clip." + released
    for released, ours in PREFIXES:
        if name.startswith(ours):
            return "clip." + released + name[len(ours):]
    adapter = OUR_ADAPTER.match(name)
    if adapter:
        branch, layer, part, param = adapter.groups()
        visual = "visual." if branch == "video" else ""
        return f"clip.{visual}transformer.resblocks.{layer}.LoRA.{ADAPTER_LAYERS.index(part)}.{param}"
    if name.startswith("clip."):
        return name
    raise KeyError(f"{name} has no counterpart in the released implementation")


def convert_released_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released keys (`module.clip.*` or `clip.*`) -> this project's state dict (float tensors as stored)."""
    converted = {}
    for key, value in state_dict.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if not name.startswith("clip."):
            raise KeyError(f"{key!r} is not a key of the released STOP implementation (expected `module.clip.*` "
                           "or `clip.*`)")
        ours = _from_released(name[len("clip."):])
        if ours is None:
            continue
        converted[ours] = value.squeeze(0) if any(ours == o for _, o in SQUEEZED) else value
    return converted


def to_released_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This project's state dict -> the released key names and shapes (without `module.`)."""
    return {_to_released(name): value.unsqueeze(0) if any(name == o for _, o in SQUEEZED) else value
            for name, value in state_dict.items()}


def read_released_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of a released checkpoint file (`{'state_dict': ...}` or a bare state dict), released names."""
    checkpoint = read_checkpoint_file(path, trust_pickle)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{path}: expected a state dict or {{'state_dict': ...}} of tensors")
    return state_dict
