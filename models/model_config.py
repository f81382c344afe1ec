"""The model's command-line flags (the one source of their defaults) and the configuration resolved from them.

Flag names are the released implementation's. Three methods share one code base:
STOP (the defaults), DGL (`--temporal_prompt none`) and CLIP4Clip meanP on a frozen CLIP (`--prompt none`).
"""

from __future__ import annotations

import argparse
import dataclasses

from models.conv3d import CONV_IMPLS

# Registered by the data helper's add_data_args; the model only reads it (transformer latent space: one set of
# local prompts per frame).
DEFAULT_MAX_FRAMES = 12

PROMPTS = ("dgl", "none")
TEMPORAL_PROMPTS = ("stop", "none")
TEMPORAL_PROMPT_ALIASES = {"group2-2": "stop"}  # the released implementation's name for STOP
SHARED_LATENT_SPACES = ("transformer", "linear")
VISUAL_OUTPUT_TYPES = ("global_prompt0", "average_global_prompt", "average_frame_cls_token",
                       "average_global_prompt_and_frame_cls_token")
SPATIAL_MASK_GRIDS = ("patch", "lattice")


def str_to_bool(value: str | bool) -> bool:
    """'true'/'false' (also 1/0, yes/no, on/off) -> bool; the released `type=bool` read 'False' as True."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


def add_model_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the model flags on `parser` and return it."""
    group = parser.add_argument_group("model")
    group.add_argument("--prompt", choices=PROMPTS, default="dgl",
                       help="dgl: DGL prompts (shared latent space, global prompts, adapters), optionally with STOP's "
                            "spatial-temporal prompting (--temporal_prompt); none: no prompts, frozen CLIP with "
                            "CLIP4Clip's meanP pooling (a zero-shot baseline)")
    group.add_argument("--temporal_prompt", choices=TEMPORAL_PROMPTS + tuple(TEMPORAL_PROMPT_ALIASES), default="stop",
                       help="stop (alias group2-2): intra-frame spatial + inter-frame temporal prompts (STOP); "
                            "none: plain DGL")
    group.add_argument("--shared_latent_space", choices=SHARED_LATENT_SPACES, default="transformer",
                       help="how the layer prompts are generated: one transformer block over an embedding table "
                            "(DGL-Transformer) or linear projections of shared visual prompts (DGL-Linear)")
    group.add_argument("--text_prompt_length", type=int, default=8,
                       help="text prompts per layer: the first half after SOT, the rest after the words")
    group.add_argument("--local_each_frame_prompt_length", type=int, default=4,
                       help="local visual prompts per frame and layer")
    group.add_argument("--global_visual_prompt_length", type=int, default=4,
                       help="global visual prompts (inserted at layer 0, attended by every frame)")
    group.add_argument("--unified_transformer_layers", type=int, default=None,
                       help="layers that receive fresh prompts (default: every layer of the CLIP, 12 for ViT-B)")
    group.add_argument("--visual_output_type", choices=VISUAL_OUTPUT_TYPES, default="global_prompt0",
                       help="video feature: global prompt 0, mean of the global prompts, mean of the frame CLS "
                            "tokens, or mean of both")
    group.add_argument("--lora", type=str_to_bool, default=True, metavar="{true,false}",
                       help="adapters (named LoRA in the released code) in every visual and text block")
    group.add_argument("--spatial_mask_grid", choices=SPATIAL_MASK_GRIDS, default="patch",
                       help="cells of the spatial region mask: patch = the ViT patches; lattice = the released "
                            "code's layout, pixel (r, c) in cell (r mod g, c mod g) (for its checkpoints)")
    group.add_argument("--conv_impl", choices=CONV_IMPLS, default="auto",
                       help="algorithm of STOP's prompt Conv3d layers, the same function to float32 rounding: "
                            "direct = nn.Conv3d; fft = exact FFT convolution (models/fast_conv.py); auto = FFT where "
                            "its cost model says it is cheaper")
    group.add_argument("--checkpoint_activations", type=str_to_bool, default=False, metavar="{true,false}",
                       help="recompute each visual block's activations in the backward pass instead of storing "
                            "them (less memory, about one more forward of the blocks; the same gradients)")
    return parser


def model_defaults() -> dict:
    """The defaults registered by add_model_args."""
    return vars(add_model_args(argparse.ArgumentParser(add_help=False)).parse_args([]))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Resolved model options (build one with `ModelConfig.from_args`)."""

    prompt: str
    temporal_prompt: str
    shared_latent_space: str
    text_prompt_length: int
    local_each_frame_prompt_length: int
    global_visual_prompt_length: int
    unified_transformer_layers: int | None
    visual_output_type: str
    lora: bool
    spatial_mask_grid: str
    max_frames: int
    conv_impl: str
    checkpoint_activations: bool

    @classmethod
    def from_args(cls, args=None, **overrides) -> ModelConfig:
        """Options from an argparse-style namespace (or None); attributes it lacks take add_model_args' defaults,
        `max_frames` defaults to DEFAULT_MAX_FRAMES. Keyword overrides win over both."""
        values = model_defaults()
        values["max_frames"] = DEFAULT_MAX_FRAMES
        values.update({name: getattr(args, name) for name in values if getattr(args, name, None) is not None})
        values.update(overrides)
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown model options: {unknown}")
        return cls(**values)

    def __post_init__(self):
        alias = TEMPORAL_PROMPT_ALIASES.get(self.temporal_prompt)
        if alias:
            object.__setattr__(self, "temporal_prompt", alias)
        object.__setattr__(self, "lora", str_to_bool(self.lora))
        object.__setattr__(self, "checkpoint_activations", str_to_bool(self.checkpoint_activations))
        for name, allowed in (("prompt", PROMPTS), ("temporal_prompt", TEMPORAL_PROMPTS),
                              ("shared_latent_space", SHARED_LATENT_SPACES),
                              ("visual_output_type", VISUAL_OUTPUT_TYPES),
                              ("spatial_mask_grid", SPATIAL_MASK_GRIDS), ("conv_impl", CONV_IMPLS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} {getattr(self, name)!r} is not one of {list(allowed)}")
        for name in ("text_prompt_length", "local_each_frame_prompt_length", "global_visual_prompt_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.max_frames < 1:
            raise ValueError(f"--max_frames must be >= 1, got {self.max_frames}")
        if self.unified_transformer_layers is not None and self.unified_transformer_layers < 1:
            raise ValueError(f"--unified_transformer_layers must be >= 1, got {self.unified_transformer_layers}")
        if self.visual_output_type in ("global_prompt0", "average_global_prompt") \
                and self.global_visual_prompt_length < 1:
            raise ValueError(f"--visual_output_type {self.visual_output_type} needs "
                             "--global_visual_prompt_length >= 1")
        if self.shared_latent_space == "linear" and self.text_prompt_length != 2 * self.local_each_frame_prompt_length:
            raise ValueError("the linear shared latent space projects each local prompt to one prefix and one postfix "
                             f"text prompt: --text_prompt_length must be 2 x --local_each_frame_prompt_length "
                             f"({2 * self.local_each_frame_prompt_length}), got {self.text_prompt_length}")

    @property
    def uses_prompts(self) -> bool:
        return self.prompt == "dgl"

    @property
    def uses_stop(self) -> bool:
        return self.uses_prompts and self.temporal_prompt == "stop"
