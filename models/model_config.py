"""The model's configuration: every option and hyperparameter with its default, and the flags generated from it.

Flag names are the released implementation's where it has them. Three methods share one code base:
STOP (the defaults), DGL (`--temporal_prompt none`) and CLIP4Clip meanP on a frozen CLIP (`--prompt none`).
`ModelConfig` is the one source of these defaults: `add_model_args` registers one flag per field, checkpoints
save `dataclasses.asdict(config)`, and `ModelConfig.from_args` / `ModelConfig.from_dict` rebuild it.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from models.clip import ACTIVATIONS
from models.config_fields import add_config_args, option, str_to_bool
from models.conv3d import CONV_IMPLS

PROMPTS = ("dgl", "none")
TEMPORAL_PROMPTS = ("stop", "paper", "none")
STOP_PROMPTS = ("both", "spatial", "temporal")
TEMPORAL_PROMPT_ALIASES = {"group2-2": "stop"}  # the released implementation's name for STOP
SHARED_LATENT_SPACES = ("transformer", "linear")
VISUAL_OUTPUT_TYPES = ("global_prompt0", "average_global_prompt", "average_frame_cls_token",
                       "average_global_prompt_and_frame_cls_token")
SPATIAL_MASK_GRIDS = ("patch", "lattice")
CLIP_ACTIVATIONS = tuple(ACTIVATIONS)


def kernel_size(value: str | tuple) -> tuple[int, int, int]:
    """'3,11,11' (or a 3-sequence) -> (3, 11, 11): an odd Conv3d kernel (depth, height, width)."""
    try:
        sizes = tuple(int(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected three odd integers like 3,11,11, got {value!r}") from None
    if len(sizes) != 3 or any(s < 1 or s % 2 == 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected three odd positive integers like 3,11,11, got {value!r}")
    return sizes


COMPUTATION = "computation (same function, saved but free to change)"
HYPER = "model hyperparameters (the released values; saved in checkpoints)"
PAPER = "the paper's STOP (--temporal_prompt paper; values the paper does not give, docs/PAPER_STOP.md)"


def hyper(default, help: str, **extra):
    """A model hyperparameter (HYPER group)."""
    return option(default, help, group=HYPER, **extra)


def paper(default, help: str, **extra):
    """An option of the paper's STOP (PAPER group)."""
    return option(default, help, group=PAPER, **extra)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Resolved model options; `ModelConfig()` is the released STOP."""

    prompt: str = option("dgl", "dgl: DGL prompts (shared latent space, global prompts, adapters), optionally with "
                                "STOP's spatial-temporal prompting (--temporal_prompt); none: no prompts, frozen CLIP "
                                "with CLIP4Clip's meanP pooling (a zero-shot baseline)", PROMPTS)
    temporal_prompt: str = option("stop", "stop (alias group2-2): STOP as released (pixel-space spatial prompt, "
                                          "inter-frame prompt added to the local prompts); paper: STOP as the paper "
                                          "describes it (token-space spatial prompts on the top patches, prompt "
                                          "tokens inserted between frames that change; docs/PAPER_STOP.md); none: "
                                          "plain DGL", TEMPORAL_PROMPTS + tuple(TEMPORAL_PROMPT_ALIASES))
    stop_prompts: str = option("both", "ablation of STOP (stop or paper): both prompts, the spatial prompt only, or "
                                       "the temporal prompt only", STOP_PROMPTS)
    shared_latent_space: str = option(
        "transformer", "how the layer prompts are generated: one transformer block over an embedding table "
                       "(DGL-Transformer) or linear projections of shared visual prompts (DGL-Linear)",
        SHARED_LATENT_SPACES)
    text_prompt_length: int = option(8, "text prompts per layer: the first half after SOT, the rest after the words")
    local_each_frame_prompt_length: int = option(4, "local visual prompts per frame and layer")
    global_visual_prompt_length: int = option(4, "global visual prompts (inserted at layer 0, attended by every "
                                                 "frame)")
    unified_transformer_layers: int | None = option(
        None, "layers of both encoders that receive fresh prompts (default: every layer; --visual_prompt_layers / "
              "--text_prompt_layers set one encoder's)", type=int)
    visual_prompt_layers: int | None = option(
        None, "visual layers that receive fresh local prompts (default: --unified_transformer_layers, else every "
              "visual layer: 12 for ViT-B, 24 for ViT-L)", type=int)
    text_prompt_layers: int | None = option(
        None, "text layers that receive fresh prompts (default: --unified_transformer_layers, else every text "
              "layer: 12)", type=int)
    visual_output_type: str = option("global_prompt0", "video feature: global prompt 0, mean of the global prompts, "
                                                       "mean of the frame CLS tokens, or mean of both",
                                     VISUAL_OUTPUT_TYPES)
    lora: bool = option(True, "adapters (named LoRA in the released code) in every visual and text block")
    spatial_mask_grid: str = option("patch", "cells of the spatial region mask: patch = the ViT patches; lattice = "
                                             "the released code's layout, pixel (r, c) in cell (r mod g, c mod g) "
                                             "(for its checkpoints)", SPATIAL_MASK_GRIDS)
    clip_activation: str | None = option(
        None, "the CLIP's MLP activation: quick_gelu (OpenAI) or gelu (open_clip's LAION / DataComp models). Default: "
              "what the weights declare (a transformers folder's config.json, QuickGELU for OpenAI's archives), else "
              "quick_gelu (models.clip.load_clip logs which)", CLIP_ACTIVATIONS, type=str)
    max_frames: int = option(12, "frames sampled per video (the transformer latent space holds local prompts for "
                                 "exactly this many)", group="model inputs")
    max_words: int = option(32, "text length in tokens, SOT and EOT included", group="model inputs")
    conv_impl: str = option("auto", "algorithm of STOP's prompt Conv3d layers, the same function to float32 "
                                    "rounding: direct = nn.Conv3d; fft = exact FFT convolution (models/fast_conv.py); "
                                    "auto = FFT where its cost model says it is cheaper", CONV_IMPLS,
                            group=COMPUTATION, resume_free="the same function (ModelConfig's 'computation' group)")
    fft_chain: bool = option(True, "where the prompt convolutions take the FFT path: the spatial prompt's "
                                   "conv1..conv4 and the temporal prompt's conv1, conv2 stay on the zero-margined "
                                   "FFT grid between layers, and the spatial conv1 shares its input transform with "
                                   "the score conv (the same function to float32 rounding, fewer memory passes; "
                                   "false: each convolution on its own)",
                             group=COMPUTATION, resume_free="the same function (ModelConfig's 'computation' group)")
    checkpoint_activations: bool = option(False, "recompute each visual block's activations in the backward pass "
                                                 "instead of storing them (less memory, about one more forward of "
                                                 "the blocks; the same gradients)",
                                          group=COMPUTATION,
                                          resume_free="the same gradients (ModelConfig's 'computation' group)")
    spatial_top_k: int = hyper(6, "cells per frame the spatial region mask keeps")
    spatial_scale: float = hyper(0.05, "scale of the spatial (pixel) prompt")
    spatial_hidden_channels: int = hyper(9, "channels of the spatial prompt's hidden Conv3d layers")
    spatial_prompt_channels: int = hyper(16, "channels of the spatial prompt's last Conv3d")
    spatial_mlp_hidden: int = hyper(16, "hidden width of the spatial prompt's per-pixel MLP")
    spatial_kernel: tuple[int, int, int] = hyper((3, 11, 11), "Conv3d kernel (T, H, W) of the spatial prompt")
    spatial_score_kernel: tuple[int, int, int] = hyper((5, 11, 11), "Conv3d kernel of the region score")
    spatial_dropout: float = hyper(0.5, "dropout of the spatial prompt (applied three times, as released)")
    temporal_scale: float = hyper(0.05, "scale of the inter-frame prompt")
    temporal_hidden_channels: int = hyper(9, "channels of the inter-frame prompt's hidden Conv3d")
    temporal_mlp_hidden: int = hyper(16, "hidden width of the inter-frame prompt's patch MLP")
    temporal_kernel: tuple[int, int, int] = hyper((3, 15, 25), "Conv3d kernel (T, N, W) of the inter-frame prompt")
    temporal_weight_kernel: tuple[int, int, int] = hyper((5, 11, 11), "Conv3d kernel of the frame weights")
    adapter_width: int = hyper(32, "bottleneck width of the adapters")
    adapter_scale: float = hyper(0.1, "scale of the adapters' output")
    paper_alpha: float = paper(0.5, "weight of the CLS attention A against the conv energy M in the spatial score "
                                     "alpha A + (1 - alpha) M")
    paper_top_k: int = paper(6, "N_s: patches per frame that receive a spatial prompt")
    paper_attention_layer: int = paper(0, "the frozen block whose CLS-to-patch attention is A (0: the first "
                                           "block, on the frames' ln_pre tokens; L > 0 runs blocks 0..L-1 on the "
                                           "unprompted frames first)")
    paper_beta: float = paper(1.0, "extra weight (1 + beta r) of the selected patches in the temporal score W^t")
    paper_eta: float = paper(4.0, "prompt tokens inserted between two frames = min(cap, ceil(eta W^t))")
    paper_cap: int = paper(4, "the most prompt tokens inserted between two frames (slots per gap)")
    paper_spatial_scale: float = paper(0.05, "scale of the token-space spatial prompts")
    paper_temporal_scale: float = paper(0.05, "scale of the inserted prompt tokens")
    paper_kernel: tuple[int, int, int] = paper((3, 3, 3), "Conv3d kernel (frames, grid rows, grid columns) of the "
                                                           "paper's prompters and scores")
    paper_channels: int = paper(32, "output channels of the paper prompters' Conv3d")
    paper_score_channels: int = paper(8, "output channels of the paper's bias-free score Conv3d")
    paper_mlp_hidden: int = paper(32, "hidden width of the paper spatial prompter's MLP")
    paper_slot_hidden: int = paper(16, "hidden width of the paper temporal prompter's patches -> slots MLP")

    @classmethod
    def from_args(cls, args=None, **overrides) -> ModelConfig:
        """Options from an argparse-style namespace (or None): attributes it lacks or sets to None take the
        defaults; keyword overrides win over both."""
        names = [f.name for f in dataclasses.fields(cls)]
        values = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
        return cls.from_dict({**values, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """A config from saved values (e.g. a checkpoint's); unknown names raise TypeError."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown model options: {unknown}")
        return cls(**values)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (kernels as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def __post_init__(self):
        alias = TEMPORAL_PROMPT_ALIASES.get(self.temporal_prompt)
        if alias:
            object.__setattr__(self, "temporal_prompt", alias)
        for f in dataclasses.fields(self):
            if isinstance(f.default, bool):
                object.__setattr__(self, f.name, str_to_bool(getattr(self, f.name)))
            elif isinstance(f.default, tuple):
                try:
                    object.__setattr__(self, f.name, kernel_size(getattr(self, f.name)))
                except argparse.ArgumentTypeError as error:
                    raise ValueError(f"--{f.name}: {error}") from None
            choices, value = f.metadata["choices"], getattr(self, f.name)
            unset = value is None and f.default is None  # an option whose default is "not given"
            if choices and value not in choices and not unset:
                raise ValueError(f"--{f.name} {value!r} is not one of {list(choices)}")
        for name in ("text_prompt_length", "local_each_frame_prompt_length", "global_visual_prompt_length",
                     "spatial_top_k", "paper_attention_layer"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_frames", "spatial_hidden_channels", "spatial_prompt_channels", "spatial_mlp_hidden",
                     "temporal_hidden_channels", "temporal_mlp_hidden", "adapter_width", "paper_top_k", "paper_cap",
                     "paper_channels", "paper_score_channels", "paper_mlp_hidden", "paper_slot_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.max_words < 2:
            raise ValueError(f"--max_words must be >= 2 (SOT and EOT), got {self.max_words}")
        if not 0 <= self.spatial_dropout < 1:
            raise ValueError(f"--spatial_dropout must lie in [0, 1), got {self.spatial_dropout}")
        if not 0 <= self.paper_alpha <= 1:
            raise ValueError(f"--paper_alpha must lie in [0, 1], got {self.paper_alpha}")
        if not self.paper_beta >= 0:
            raise ValueError(f"--paper_beta must be >= 0, got {self.paper_beta}")
        if not 0 < self.paper_eta < float("inf"):
            raise ValueError(f"--paper_eta must be a finite number > 0, got {self.paper_eta}")
        for name in ("spatial_scale", "temporal_scale", "adapter_scale", "paper_spatial_scale",
                     "paper_temporal_scale"):
            if not abs(getattr(self, name)) < float("inf"):
                raise ValueError(f"--{name} must be a finite number, got {getattr(self, name)}")
        for name in ("unified_transformer_layers", "visual_prompt_layers", "text_prompt_layers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.visual_output_type in ("global_prompt0", "average_global_prompt") \
                and self.global_visual_prompt_length < 1:
            raise ValueError(f"--visual_output_type {self.visual_output_type} needs "
                             "--global_visual_prompt_length >= 1")
        if self.shared_latent_space == "linear" and self.text_prompt_length != 2 * self.local_each_frame_prompt_length:
            raise ValueError("the linear shared latent space projects each local prompt to one prefix and one postfix "
                             f"text prompt: --text_prompt_length must be 2 x --local_each_frame_prompt_length "
                             f"({2 * self.local_each_frame_prompt_length}), got {self.text_prompt_length}")

    def check_text_context(self, context_length: int) -> None:
        """ValueError naming --max_words when the texts would not fit a CLIP's text context of this length."""
        if self.max_words > context_length:
            raise ValueError(f"--max_words {self.max_words} exceeds the CLIP's text context ({context_length} tokens, "
                             "SOT and EOT included)")

    def prompt_depths(self, visual_layers: int, text_layers: int) -> tuple[int, int]:
        """(visual, text) layers that receive fresh prompts on a CLIP of these depths: --visual_prompt_layers /
        --text_prompt_layers, else --unified_transformer_layers, else every layer. ValueError naming the flag
        when one exceeds its encoder's depth."""
        depths = []
        for encoder, name, layers in (("visual", "visual_prompt_layers", visual_layers),
                                      ("text", "text_prompt_layers", text_layers)):
            given = name if getattr(self, name) is not None else "unified_transformer_layers"
            depth = getattr(self, given) or layers
            if depth > layers:
                raise ValueError(f"--{given} {depth} exceeds the CLIP's {encoder} depth ({visual_layers} visual, "
                                 f"{text_layers} text layers)")
            depths.append(depth)
        return depths[0], depths[1]

    @property
    def uses_prompts(self) -> bool:
        return self.prompt == "dgl"

    @property
    def uses_stop(self) -> bool:
        """STOP as released (pixel-space spatial prompt, inter-frame prompt on the local prompts)."""
        return self.uses_prompts and self.temporal_prompt == "stop"

    @property
    def uses_paper_stop(self) -> bool:
        """STOP as the paper describes it (token-space prompts, inserted prompt tokens)."""
        return self.uses_prompts and self.temporal_prompt == "paper"

    @property
    def uses_spatial_prompt(self) -> bool:
        return self.temporal_prompt in ("stop", "paper") and self.uses_prompts and self.stop_prompts != "temporal"

    @property
    def uses_temporal_prompt(self) -> bool:
        return self.temporal_prompt in ("stop", "paper") and self.uses_prompts and self.stop_prompts != "spatial"


def add_model_args(parser: argparse.ArgumentParser, defaults_from_config: bool = True) -> argparse.ArgumentParser:
    """Register one flag per ModelConfig field on `parser` and return it. With defaults_from_config False every
    flag defaults to None (= not given: the caller fills it in, e.g. from a checkpoint)."""
    return add_config_args(parser, ModelConfig, defaults_from_config, types={tuple: (kernel_size, "T,H,W")})
