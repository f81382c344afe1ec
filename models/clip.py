"""OpenAI CLIP (ViT image encoder + causal text encoder), loadable from OpenAI's released weights.

Module and parameter names are OpenAI's, so a state dict of `ViT-B-32.pt` loads as it is; a Hugging Face
transformers CLIP folder is converted to them (models/hf_clip.py). Every size is derived from the checkpoint's
tensor shapes (`CLIPConfig.from_state_dict`), so one loader serves ViT-B/32, ViT-B/16, ViT-L/14 and the tiny
configurations the tests use. The MLP activation is OpenAI's QuickGELU or GELU (open_clip's LAION / DataComp
models): `load_clip` takes it from what the weights declare, else from its `activation` argument, else
QuickGELU, and logs which. Tensors are batch-first ([N, L, D]) throughout.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models import hf_clip
from models.checkpoints import integer_dtype_message, integer_float_tensors
from models.file_digest import cached_sha256_of

OPENAI_URL = "https://openaipublic.azureedge.net/clip/models/{sha}/{file}"
# name -> (file name, SHA-256 of the file as published by OpenAI)
PRETRAINED = {
    "ViT-B/32": ("ViT-B-32.pt", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
    "ViT-B/16": ("ViT-B-16.pt", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
    "ViT-L/14": ("ViT-L-14.pt", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"),
    "ViT-L/14@336px": ("ViT-L-14-336px.pt", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"),
}
DEFAULT_PRETRAINED_DIR = "~/models/pretrained"
# A file named like one of PRETRAINED must have OpenAI's SHA-256 (as OpenAI's clip.load checks), unless this
# environment variable is 1 (a deliberately modified file kept under OpenAI's name).
SKIP_CHECKSUM_VARIABLE = "STOP_SKIP_CLIP_CHECKSUM"
# Non-tensor entries that OpenAI's TorchScript archives carry in their state dict.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
DEFAULT_ACTIVATION = "quick_gelu"  # for weights that declare none: OpenAI's (and the released STOP's) CLIPs
log = logging.getLogger(__name__)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}  # the MLP activation; nn.GELU is the exact (erf) GELU


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """Architecture of a ViT CLIP, as data."""

    embed_dim: int
    image_resolution: int
    vision_layers: int
    vision_width: int
    vision_patch_size: int
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int
    activation: str = DEFAULT_ACTIVATION  # of every MLP, a key of ACTIVATIONS

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown CLIP activation {self.activation!r} (one of {list(ACTIVATIONS)})")

    @classmethod
    def vit_b_32(cls) -> CLIPConfig:
        return cls(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)

    @classmethod
    def vit_b_16(cls) -> CLIPConfig:
        return cls(512, 224, 12, 768, 16, 77, 49408, 512, 8, 12)

    @classmethod
    def vit_l_14(cls, image_resolution: int = 224) -> CLIPConfig:
        """ViT-L/14 (image_resolution 336: ViT-L/14@336px): 24 visual layers of width 1024, 12 text layers."""
        return cls(768, image_resolution, 24, 1024, 14, 77, 49408, 768, 12, 12)

    @classmethod
    def tiny(cls) -> CLIPConfig:
        """A CLIP small enough for unit tests: 32 px images, 8 px patches (4x4 grid), width 64, 2 layers."""
        return cls(32, 32, 2, 64, 8, 77, 49408, 64, 1, 2)

    @property
    def vision_heads(self) -> int:
        return self.vision_width // 64

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], activation: str = DEFAULT_ACTIVATION
                        ) -> CLIPConfig:
        """Derive every size from the tensor shapes of an OpenAI-named ViT CLIP state dict (the activation, which
        no tensor shows, is given)."""
        needed = ["visual.conv1.weight", "visual.positional_embedding", "text_projection",
                  "positional_embedding", "token_embedding.weight", "ln_final.weight"]
        missing = [k for k in needed if k not in state_dict]
        if missing:
            if any(k.startswith("visual.layer1.") for k in state_dict):
                raise ValueError("This is a ResNet CLIP checkpoint; only ViT CLIPs are supported.")
            raise ValueError(f"Not a ViT CLIP state dict: missing {missing} "
                             f"(found {len(state_dict)} keys, e.g. {sorted(state_dict)[:5]}).")
        conv1 = state_dict["visual.conv1.weight"]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        width = state_dict["ln_final.weight"].shape[0]
        return cls(
            embed_dim=state_dict["text_projection"].shape[1],
            image_resolution=conv1.shape[-1] * grid,
            vision_layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
            vision_width=conv1.shape[0],
            vision_patch_size=conv1.shape[-1],
            context_length=state_dict["positional_embedding"].shape[0],
            vocab_size=state_dict["token_embedding.weight"].shape[0],
            transformer_width=width,
            transformer_heads=width // 64,
            transformer_layers=_count_blocks(state_dict, "transformer.resblocks."),
            activation=activation,
        )


def _count_blocks(state_dict: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})


def attention(attn: nn.MultiheadAttention, q_x: torch.Tensor, kv_x: torch.Tensor | None = None,
              attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
    """Multi-head attention with `attn`'s weights: queries from q_x [N, Lq, D], keys/values from kv_x [N, Lk, D]
    (q_x when None). attn_mask: bool (True = attend) or additive float, broadcastable to [N, heads, Lq, Lk].
    Returns [N, Lq, D]."""
    n, lq, d = q_x.shape
    h = attn.num_heads
    if kv_x is None:
        q, k, v = F.linear(q_x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    else:
        w_q, w_kv = attn.in_proj_weight.split([d, 2 * d])
        b_q, b_kv = attn.in_proj_bias.split([d, 2 * d])
        q = F.linear(q_x, w_q, b_q)
        k, v = F.linear(kv_x, w_kv, b_kv).chunk(2, dim=-1)
    q, k, v = (t.unflatten(-1, (h, d // h)).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    return attn.out_proj(out.transpose(1, 2).reshape(n, lq, d))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). x: [N, L, D]. `activation`: a key of
    ACTIVATIONS."""

    def __init__(self, d_model: int, n_head: int, activation: str = DEFAULT_ACTIVATION):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", ACTIVATIONS[activation]()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, is_causal: bool = False, read: int | None = None) -> torch.Tensor:
        """x [N, L, D] -> [N, L, D]; with `read` = n (no causal mask) only the first n tokens' outputs [N, n, D]:
        their queries against every token's keys and values, the same values to float32 rounding (a last block
        whose other outputs nobody reads)."""
        if read is None:
            x = x + attention(self.attn, self.ln_1(x), is_causal=is_causal)
        elif is_causal:
            raise ValueError("a block read at its first tokens takes no causal mask")
        else:
            normed = self.ln_1(x)
            x = x[:, :read] + attention(self.attn, normed[:, :read], normed)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, activation: str = DEFAULT_ACTIVATION):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, activation) for _ in range(layers)])

    def forward(self, x: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, is_causal=is_causal)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, activation: str = DEFAULT_ACTIVATION):
        super().__init__()
        self.input_resolution, self.patch_size = input_resolution, patch_size
        self.width, self.layers, self.heads, self.output_dim = width, layers, heads, output_dim
        self.grid_size = input_resolution // patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, activation)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding + class token + positional embedding + ln_pre: [N, 3, H, W] -> [N, 1 + g*g, W]."""
        x = self.conv1(images.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        return self.ln_pre(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, output_dim], read at the class token: the last block runs for it alone (`read=1`),
        the same values as OpenAI's whole last block to float32 rounding."""
        x = self.embed(images)
        *blocks, last = self.transformer.resblocks
        for block in blocks:
            x = block(x)
        return self.ln_post(last(x, read=1)[:, 0]) @ self.proj


class CLIP(nn.Module):
    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.context_length, self.vocab_size = config.context_length, config.vocab_size
        self.visual = VisionTransformer(config.image_resolution, config.vision_patch_size, config.vision_width,
                                        config.vision_layers, config.vision_heads, config.embed_dim,
                                        config.activation)
        self.transformer = Transformer(config.transformer_width, config.transformer_layers,
                                       config.transformer_heads, config.activation)
        self.token_embedding = nn.Embedding(config.vocab_size, config.transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.transformer_width))
        self.ln_final = nn.LayerNorm(config.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(config.transformer_width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self._initialize_parameters()

    def _initialize_parameters(self) -> None:
        """OpenAI's initialisation (for randomly built models; loaded weights overwrite it)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for transformer in (self.transformer, self.visual.transformer):
            proj_std = (transformer.width ** -0.5) * ((2 * transformer.layers) ** -0.5)
            for block in transformer.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=transformer.width ** -0.5)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.normal_(block.mlp.c_fc.weight, std=(2 * transformer.width) ** -0.5)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=self.transformer.width ** -0.5)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] normalised images -> [N, E] (not L2-normalised)."""
        return self.visual(images)

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Token + positional embedding: ids [N, L] (L <= context_length) -> [N, L, Wt]."""
        if ids.shape[1] > self.context_length:
            raise ValueError(f"text of {ids.shape[1]} tokens exceeds the context length {self.context_length}")
        return self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [N, L] (SOT ... EOT, zero padded) -> [N, E], read at the EOT (highest id) position."""
        x = self.ln_final(self.transformer(self.embed_text(ids), is_causal=True))
        return x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)] @ self.text_projection


def build_clip(state_dict: dict[str, torch.Tensor], activation: str = DEFAULT_ACTIVATION) -> CLIP:
    """Build a float32 CLIP in eval mode from an OpenAI-named state dict, every size taken from its shapes, the
    MLPs computing `activation`. ValueError for missing, foreign or mis-shaped tensors, or float weights stored
    in an integer dtype."""
    state_dict = {k: v for k, v in state_dict.items() if k not in _OPENAI_EXTRA_KEYS}
    model = CLIP(CLIPConfig.from_state_dict(state_dict, activation))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        problems = [f"missing keys: {missing}" if missing else "",
                    f"unexpected keys: {unexpected}" if unexpected else "",
                    f"keys with inconsistent shapes: {wrong}" if wrong else ""]
        raise ValueError("The weights do not form a ViT CLIP: " + "; ".join(p for p in problems if p))
    integer = integer_float_tensors(state_dict, expected)
    if integer:
        raise ValueError(integer_dtype_message("the CLIP weights", integer, state_dict))
    model.load_state_dict({k: v.float() for k, v in state_dict.items()})
    return model.eval()


def resolve_clip_path(name_or_path: str, pretrained_dir: str | None = None) -> Path:
    """A released model name (`ViT-B/32`) -> `<pretrained_dir>/ViT-B-32.pt`; anything else is a path."""
    if name_or_path in PRETRAINED:
        directory = pretrained_dir or os.environ.get("STOP_PRETRAINED_DIR", DEFAULT_PRETRAINED_DIR)
        return Path(directory).expanduser() / PRETRAINED[name_or_path][0]
    return Path(name_or_path).expanduser()


def _missing_weights_message(name_or_path: str, path: Path) -> str:
    lines = [f"CLIP weights not found: {path}"]
    entry = PRETRAINED.get(name_or_path) or next((v for v in PRETRAINED.values() if v[0] == path.name), None)
    if entry:
        file, sha = entry
        lines += [f"Download {file} from OpenAI ({OPENAI_URL.format(sha=sha, file=file)})",
                  f"and put it at {path} (or pass --pretrained_dir DIR). Expected SHA-256: {sha}"]
    else:
        lines.append("Pass an OpenAI TorchScript archive (.pt), a torch.save state dict, a .safetensors file or a "
                     "Hugging Face transformers CLIP folder (config.json + model.safetensors); a hub name such as "
                     "openai/clip-vit-base-patch32 is not downloaded: download the folder and pass its path.")
    return "\n".join(lines)


def check_openai_checksum(path: Path) -> None:
    """ValueError when the file at `path` has the name of one of OpenAI's CLIPs (PRETRAINED) but not its
    published SHA-256 (a damaged download, a bit flip, another file under that name); other names, and every
    file while $STOP_SKIP_CLIP_CHECKSUM is 1, are not checked."""
    entry = next(((file, sha) for file, sha in PRETRAINED.values() if file == path.name), None)
    if entry is None or os.environ.get(SKIP_CHECKSUM_VARIABLE) == "1":
        return
    file, expected = entry
    found = cached_sha256_of(path)
    if found != expected:
        raise ValueError(f"SHA-256 {found} is not OpenAI's {expected} for {file}: the file is damaged or another "
                         f"file under its name; download it again ({OPENAI_URL.format(sha=expected, file=file)}), "
                         f"or set {SKIP_CHECKSUM_VARIABLE}=1 to load a deliberately modified file")


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def read_clip_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an OpenAI TorchScript archive, a torch.save state dict or a .safetensors file (as stored).
    ValueError for a file that is none of these (truncated, another format, code-carrying pickle)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        if _is_torchscript_archive(path):
            return torch.jit.load(str(path), map_location="cpu").state_dict()
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated archives, foreign files and refused pickles raise many types
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise ValueError(f"not a readable CLIP weights file (a TorchScript archive, a torch.save state dict or "
                         f".safetensors; {type(error).__name__}: {first_line}); is it complete?") from None
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict of CLIP weights.")
    return state_dict


class ClipWeights(NamedTuple):
    """What CLIP weights hold: OpenAI-named tensors (as stored) and the activation they declare (None: none)."""

    state_dict: dict[str, torch.Tensor]
    activation: str | None
    declared_by: str | None  # what declares it, for messages


def read_clip_weights(path: Path) -> ClipWeights:
    """The weights at `path`: a transformers CLIP folder (converted; the activation its config.json gives), an
    OpenAI TorchScript archive (QuickGELU, as every archive OpenAI ships), a torch.save state dict or a
    .safetensors file (which declare none). ValueError for anything else."""
    if path.is_dir():
        activation = hf_clip.read_config(path)
        file = hf_clip.weights_file(path)
        try:
            state_dict = hf_clip.convert_state_dict(read_clip_state_dict(file))
        except ValueError as error:
            raise ValueError(f"{file.name}: {error}") from None
        return ClipWeights(state_dict, activation, f"{hf_clip.CONFIG_FILE} (hidden_act)")
    if _is_torchscript_archive(path):
        return ClipWeights(read_clip_state_dict(path), "quick_gelu", "an OpenAI TorchScript archive")
    return ClipWeights(read_clip_state_dict(path), None, None)


def clip_weights_file(path: Path) -> Path:
    """The file that holds the tensors of the CLIP weights at `path` (itself, or a transformers folder's)."""
    return hf_clip.weights_file(path) if path.is_dir() else path


def choose_activation(requested: str | None, weights: ClipWeights, path: Path) -> str:
    """The activation to build `weights` with, logged: the declared one (`requested` must then agree), else
    `requested`, else DEFAULT_ACTIVATION (a warning that says how to choose GELU). ValueError on a contradiction."""
    if requested is not None and requested not in ACTIVATIONS:
        raise ValueError(f"--clip_activation {requested!r} is not one of {list(ACTIVATIONS)}")
    if weights.activation is not None:
        if requested not in (None, weights.activation):
            raise ValueError(f"--clip_activation {requested} contradicts the weights: {weights.declared_by} says "
                             f"{weights.activation}; drop the flag")
        log.info(f"CLIP {path}: {weights.activation} activation, as {weights.declared_by} says")
        return weights.activation
    if requested is not None:
        log.info(f"CLIP {path}: {requested} activation (--clip_activation)")
        return requested
    log.warning(f"CLIP {path}: {DEFAULT_ACTIVATION} activation, the default for weights that do not declare one "
                "(OpenAI's CLIPs); GELU CLIPs such as open_clip's LAION / DataComp models need --clip_activation gelu")
    return DEFAULT_ACTIVATION


def load_clip(name_or_path: str, pretrained_dir: str | None = None, activation: str | None = None) -> CLIP:
    """Load a float32 CLIP in eval mode from a released name (`ViT-B/32`, ..., resolved in `pretrained_dir`,
    default ~/models/pretrained or $STOP_PRETRAINED_DIR), a file path or a transformers CLIP folder.
    activation ("quick_gelu" or "gelu", --clip_activation): for weights that declare none; None takes the
    declared one, else DEFAULT_ACTIVATION (choose_activation). FileNotFoundError when there are no such weights,
    ValueError naming the path for weights that are not a ViT CLIP or declare another activation, and for a file
    named like an OpenAI CLIP without its SHA-256 (check_openai_checksum)."""
    path = resolve_clip_path(name_or_path, pretrained_dir)
    if not path.exists():
        raise FileNotFoundError(_missing_weights_message(name_or_path, path))
    try:
        check_openai_checksum(path)
        weights = read_clip_weights(path)
        return build_clip(weights.state_dict, choose_activation(activation, weights, path))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def save_clip_torchscript(model: CLIP, path: str | Path) -> None:
    """Save `model` as OpenAI ships CLIP: a TorchScript archive (encode_image / encode_text traced) holding
    fp16 weights and the `input_resolution`, `context_length`, `vocab_size` entries. `load_clip` reads it (as
    QuickGELU, like every OpenAI archive: a GELU model is refused)."""
    config = model.config
    if config.activation != "quick_gelu":
        raise ValueError(f"a {config.activation} CLIP cannot be saved as an OpenAI archive (read as QuickGELU): save "
                         "its state dict and load it with --clip_activation gelu")
    model = copy.deepcopy(model).float().eval()
    for key, value in (("input_resolution", config.image_resolution), ("context_length", config.context_length),
                       ("vocab_size", config.vocab_size)):
        model.__dict__.pop(key, None)
        model.register_buffer(key, torch.tensor(value))
    images = torch.zeros(1, 3, config.image_resolution, config.image_resolution)
    ids = torch.zeros(1, config.context_length, dtype=torch.long)
    ids[0, :2] = torch.tensor([config.vocab_size - 2, config.vocab_size - 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace_module(model, {"encode_image": images, "encode_text": ids})
    torch.jit.save(traced.half(), str(path))
