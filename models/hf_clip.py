"""CLIP as Hugging Face transformers saves it: a folder with config.json and model.safetensors or pytorch_model.bin
(the openai/clip-vit-base-patch32 layout of `CLIPModel.save_pretrained`), converted here to OpenAI's names.

transformers' CLIPModel computes what OpenAI's CLIP computes, under other names: separate q/k/v projections
where nn.MultiheadAttention holds one `in_proj` ([3W, W], q then k then v), and the two output projections stored
as Linear weights [E, W] where OpenAI keeps the matrices [W, E]. Its MLP activation is the towers' `hidden_act`
in config.json (quick_gelu for OpenAI's models, gelu for LAION's and most others). models.clip.load_clip reads
such a folder with these functions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # looked up in this order
# transformers' hidden_act -> the activation of models.clip (the two that CLIP checkpoints use)
HIDDEN_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}
# transformers' defaults (CLIPTextConfig, CLIPVisionConfig) for what a config.json leaves out
TOWERS = {"text_config": {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "hidden_size": 512,
                          "num_attention_heads": 8},
          "vision_config": {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "hidden_size": 768,
                            "num_attention_heads": 12}}
HEAD_WIDTH = 64  # models.clip derives the heads as width / 64, as in every OpenAI CLIP

RENAMED = {
    "logit_scale": "logit_scale",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
}
TRANSPOSED = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}
PREFIXES = (("text_model.final_layer_norm.", "ln_final."), ("vision_model.pre_layrnorm.", "visual.ln_pre."),
            ("vision_model.post_layernorm.", "visual.ln_post."))
BLOCK = re.compile(r"(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)$")
BLOCK_PREFIXES = (("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."),
                  ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."))
QKV = re.compile(r"self_attn\.([qkv])_proj\.(weight|bias)$")
IGNORED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")  # buffers, no weights


def read_config(folder: Path) -> str:
    """The activation that `folder`'s config.json gives both towers ("quick_gelu" or "gelu"). ValueError naming
    config.json for a missing or unreadable file, another model type, a tower's settings that are not an object,
    an unsupported hidden_act, towers that differ, a layer_norm_eps other than 1e-5 or attention heads that are
    not 64 wide."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"no {CONFIG_FILE} in this folder: a folder of CLIP weights must be a Hugging Face "
                         f"transformers CLIP folder ({CONFIG_FILE} + {' or '.join(WEIGHT_FILES)})")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{CONFIG_FILE} is not readable JSON ({type(error).__name__}: {error})") from None
    if not isinstance(config, dict) or config.get("model_type") != "clip":
        found = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{CONFIG_FILE}: model_type {found!r}: not a transformers CLIPModel (model_type 'clip')")
    activations = set()
    for tower, defaults in TOWERS.items():
        # Old configs keep (some) values in <tower>_dict, which transformers lets override <tower>.
        given = {key: config.get(key) or {} for key in (tower, tower + "_dict")}
        wrong = next((key for key, value in given.items() if not isinstance(value, dict)), None)
        if wrong:
            raise ValueError(f"{CONFIG_FILE}: {wrong} must be a JSON object of the tower's settings, got "
                             f"{type(given[wrong]).__name__} {given[wrong]!r:.60}")
        values = {**defaults, **given[tower], **given[tower + "_dict"]}
        act, eps = values["hidden_act"], values["layer_norm_eps"]
        if act not in HIDDEN_ACTS:
            raise ValueError(f"{CONFIG_FILE}: {tower}.hidden_act {act!r} is not supported (one of "
                             f"{sorted(HIDDEN_ACTS)})")
        if eps != 1e-5:
            raise ValueError(f"{CONFIG_FILE}: {tower}.layer_norm_eps {eps} is not supported (1e-05, as in every "
                             "OpenAI CLIP)")
        if values["hidden_size"] != HEAD_WIDTH * values["num_attention_heads"]:
            raise ValueError(f"{CONFIG_FILE}: {tower} has {values['num_attention_heads']} attention heads of width "
                             f"{values['hidden_size']} / {values['num_attention_heads']}; only {HEAD_WIDTH}-wide "
                             "heads (every OpenAI CLIP) are supported")
        activations.add(HIDDEN_ACTS[act])
    if len(activations) > 1:
        raise ValueError(f"{CONFIG_FILE}: the text and vision towers use different activations "
                         f"({sorted(activations)}); one CLIP computes with one")
    return activations.pop()


def weights_file(folder: Path) -> Path:
    """The weights file of a transformers CLIP folder; ValueError when it has none."""
    found = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if found is None:
        sharded = " (sharded weights, *.index.json, are not supported: save them as one file)" if any(
            folder.glob("*.index.json")) else ""
        raise ValueError(f"no {' or '.join(WEIGHT_FILES)} beside {CONFIG_FILE}{sharded}")
    return found


def _block_prefix(block: re.Match) -> str:
    """`(text|vision)_model.encoder.layers.{i}.` -> OpenAI's `[visual.]transformer.resblocks.{i}.`"""
    return f"{'visual.' if block[1] == 'vision' else ''}transformer.resblocks.{block[2]}."


def _renamed(name: str, prefixes: tuple[tuple[str, str], ...]) -> str | None:
    return next((ours + name[len(theirs):] for theirs, ours in prefixes if name.startswith(theirs)), None)


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIPModel state dict -> the same tensors under OpenAI's names (q, k, v concatenated into
    `attn.in_proj_*`, the projections transposed). ValueError for tensors a CLIPModel does not have, and for
    q / k / v projections that are missing or not of a projection's shape (naming the tensor)."""
    converted, projections, unknown = {}, {}, []
    for name, value in state_dict.items():
        block = BLOCK.match(name)
        if name in IGNORED:
            continue
        if name in RENAMED:
            converted[RENAMED[name]] = value
        elif name in TRANSPOSED:
            converted[TRANSPOSED[name]] = value.t().contiguous()
        elif renamed := _renamed(name, PREFIXES):
            converted[renamed] = value
        elif block and (qkv := QKV.match(block[3])):
            projections.setdefault(f"{_block_prefix(block)}attn.in_proj_{qkv[2]}", {})[qkv[1]] = (name, value)
        elif block and (renamed := _renamed(block[3], BLOCK_PREFIXES)):
            converted[_block_prefix(block) + renamed] = value
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(f"{len(unknown)} tensors that a transformers CLIPModel does not have, e.g. {unknown[:3]}")
    for name, parts in projections.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"{name}: the q, k and v projections are not all there (found {sorted(parts)})")
        for part in "qkv":
            _check_projection_shape(*parts[part], parts["q"][1])
        converted[name] = torch.cat([parts[part][1] for part in "qkv"])
    return converted


def _check_projection_shape(name: str, value: torch.Tensor, q: torch.Tensor) -> None:
    """ValueError naming `name` unless it has the shape of a layer's q / k / v projection: weight [W, W], bias
    [W], W the width that the layer's q projection reads (weight) or gives (bias)."""
    width = q.shape[-1] if q.dim() else 0
    expected = (width, width) if name.endswith("weight") else (width,)
    if tuple(value.shape) != expected:
        raise ValueError(f"{name} has shape {list(value.shape)}, expected {list(expected)}: a layer's q, k and v "
                         f"projections are {'[width, width] matrices' if len(expected) == 2 else '[width] biases'} "
                         f"(the weights file is damaged or not a CLIPModel's)")
