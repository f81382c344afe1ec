"""Convert a checkpoint saved by the released STOP implementation into this project's state dict, and load it.

The released code saves `{'state_dict': ...}` with keys `module.clip.<name>` (MODEL.md section 7). OpenAI CLIP
keys keep their names under `clip.`; the prompt modules are renamed (table below) and the two `[1, n, d]`
prompt tensors lose their leading 1. Checkpoints trained by the released code expect
`--spatial_mask_grid lattice`.

    python utils/convert_released_checkpoint.py released.pth.tar converted.pt [--without_clip]
"""

# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python utils/convert_released_checkpoint.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import logging
import re

import torch
from torch import nn

logger = logging.getLogger(__name__)

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


def read_released_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state dict of a released checkpoint file (`{'state_dict': ...}` or a bare state dict). The file is read
    with torch's weights-only unpickler; `trust_pickle` lifts that restriction."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as error:  # the weights-only unpickler raises several types
        raise ValueError(f"{path}: could not be read as a weights-only checkpoint ({error}). If you trust the file, "
                         "pass --trust_pickle (trust_pickle=True) to unpickle it fully.") from None
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path}: expected a state dict or {{'state_dict': ...}} of tensors")
    return state_dict


def load_released_checkpoint(model: nn.Module, path_or_state_dict: str | Path | dict,
                             trust_pickle: bool = False) -> nn.Module:
    """Load a released checkpoint (path or state dict, with or without `module.`) into `model` (a
    VideoTextModel). Every prompt-module tensor must be present with the model's shape; CLIP tensors are loaded
    when the checkpoint has them (the released code saves the frozen CLIP too)."""
    state_dict = path_or_state_dict
    if not isinstance(state_dict, dict):
        state_dict = read_released_checkpoint(path_or_state_dict, trust_pickle)
    converted = convert_released_state_dict(state_dict)
    expected = model.state_dict()
    missing = sorted(k for k in expected if not k.startswith("clip.") and k not in converted)
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(f"{k}: checkpoint {list(converted[k].shape)}, model {list(expected[k].shape)}"
                   for k in set(converted) & set(expected) if converted[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        problems = [f"missing in the checkpoint: {missing}" if missing else "",
                    f"not in this model: {unexpected}" if unexpected else "",
                    f"shape mismatches: {wrong}" if wrong else ""]
        raise ValueError("The released checkpoint does not fit this model (check --shared_latent_space, "
                         "--temporal_prompt, --max_frames, the prompt lengths, --lora and the CLIP): "
                         + "; ".join(p for p in problems if p))
    config = getattr(model, "config", None)
    if config is not None and config.uses_stop and config.spatial_mask_grid != "lattice":
        logger.warning("checkpoints trained by the released implementation use the lattice cell layout of the "
                       "spatial mask; build the model with --spatial_mask_grid lattice to reproduce them")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in converted.items()}, strict=False)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="checkpoint saved by the released STOP implementation")
    parser.add_argument("output", type=Path, help="where to write this project's state dict (torch.save)")
    parser.add_argument("--without_clip", action="store_true",
                        help="keep only the trained prompt modules, not the frozen CLIP weights")
    parser.add_argument("--trust_pickle", action="store_true",
                        help="unpickle the input fully (only for files you trust)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        converted = convert_released_state_dict(read_released_checkpoint(args.input, args.trust_pickle))
    except (FileNotFoundError, KeyError, ValueError) as error:
        parser.exit(1, f"error: {error}\n")
    if args.without_clip:
        converted = {k: v for k, v in converted.items() if not k.startswith("clip.")}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(converted, args.output)
    trained = sum(v.numel() for k, v in converted.items() if not k.startswith("clip."))
    logger.info(f"wrote {len(converted)} tensors ({trained:,} prompt-module parameters) to {args.output}")


if __name__ == "__main__":
    main()
