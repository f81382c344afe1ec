"""The text-video retrieval model: a frozen CLIP, the trainable prompt modules, similarity and loss
(MODEL.md section 6).

State-dict layout: `clip.*` (OpenAI's names, frozen), `prompt_generator.*`, `text_encoder.adapters.*`,
`video_encoder.{global_prompts, spatial_prompt.*, temporal_prompt.*, adapters.*}`.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from models.clip import CLIP
from models.model_config import ModelConfig
from models.prompt_generator import LayerPrompts, LinearPromptGenerator, TransformerPromptGenerator
from models.prompted_text import PromptedTextEncoder
from models.prompted_video import PromptedVideoEncoder, VideoDetails


class VideoTextModel(nn.Module):
    """STOP / DGL / meanP (see ModelConfig) on `clip`, whose parameters are frozen (requires_grad False)."""

    def __init__(self, clip: CLIP, config: ModelConfig):
        super().__init__()
        self.clip, self.config = clip, config
        for parameter in clip.parameters():
            parameter.requires_grad_(False)
        self.prompt_generator = self.text_encoder = self.video_encoder = None
        self._cached_prompts: tuple[tuple, LayerPrompts] | None = None
        if not config.uses_prompts:
            return
        visual, text_width = clip.visual, clip.transformer.width
        deepest = min(visual.layers, clip.transformer.layers)
        layers = config.unified_transformer_layers or deepest
        if layers > deepest:
            raise ValueError(f"--unified_transformer_layers {layers} exceeds the CLIP's depth ({visual.layers} "
                             f"visual, {clip.transformer.layers} text layers)")
        if config.shared_latent_space == "transformer":
            self.prompt_generator = TransformerPromptGenerator(
                visual.width, text_width, layers, config.text_prompt_length, config.local_each_frame_prompt_length,
                config.max_frames)
        else:
            self.prompt_generator = LinearPromptGenerator(
                visual.width, text_width, layers, config.local_each_frame_prompt_length, visual.patch_size)
        self.text_encoder = PromptedTextEncoder(text_width, clip.transformer.layers, config.text_prompt_length,
                                                config.lora)
        self.video_encoder = PromptedVideoEncoder(
            visual, config.local_each_frame_prompt_length, config.global_visual_prompt_length,
            config.visual_output_type, config.uses_stop, config.lora, config.spatial_mask_grid, config.conv_impl,
            config.checkpoint_activations)

    def prompts(self, num_frames: int) -> LayerPrompts:
        """The layer prompts (input independent): text [Lp, Pt, Wt], visual local [Lp, num_frames * Pl, W].
        Without gradients (evaluation) they are generated once and reused while the generator's parameters are
        unchanged (same storage and version counter: optimizer steps, load_state_dict and in-place copies
        invalidate them) and under the same autocast setting."""
        if self.prompt_generator is None:
            raise ValueError("--prompt none (meanP) has no prompts")
        if torch.is_grad_enabled():
            return self.prompt_generator(num_frames)
        device = next(self.prompt_generator.parameters()).device.type
        autocast = (torch.get_autocast_dtype(device) if torch.amp.is_autocast_available(device)
                    and torch.is_autocast_enabled(device) else None)
        key = (num_frames, autocast, tuple((p.data_ptr(), p._version) for p in self.prompt_generator.parameters()))
        if self._cached_prompts is None or self._cached_prompts[0] != key:
            self._cached_prompts = (key, self.prompt_generator(num_frames))
        return self._cached_prompts[1]

    def encode_text(self, ids: torch.Tensor, prompts: LayerPrompts | None = None) -> torch.Tensor:
        """ids [B, L] (SOT ... EOT, zero padded) -> raw features [B, E]."""
        if ids.ndim != 2:
            raise ValueError(f"text ids must be [B, L], got shape {list(ids.shape)}")
        if self.text_encoder is None:
            return self.clip.encode_text(ids)
        prompts = prompts if prompts is not None else self.prompts(self.config.max_frames)
        return self.text_encoder(self.clip, ids, prompts.text)

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor, return_details: bool = False,
                     prompts: LayerPrompts | None = None) -> torch.Tensor | tuple[torch.Tensor, VideoDetails]:
        """video [B, T, 3, H, W] (normalised frames), video_mask [B, T] (1 = real frame) -> raw features [B, E];
        with return_details also VideoDetails (STOP's region mask [B, T, g, g] and frame weights [B, T])."""
        size = self.clip.visual.input_resolution
        if video.ndim != 5 or video.shape[2:] != (3, size, size):
            raise ValueError(f"video must be [B, T, 3, {size}, {size}], got shape {list(video.shape)}")
        if video_mask.shape != video.shape[:2]:
            raise ValueError(f"video_mask must be [B, T] = {list(video.shape[:2])}, got {list(video_mask.shape)}")
        if self.video_encoder is None:
            features, details = self.mean_pooled_frames(video, video_mask), VideoDetails(None, None)
        else:
            prompts = prompts if prompts is not None else self.prompts(video.shape[1])
            features, details = self.video_encoder(self.clip.visual, video, prompts.visual, return_details=True)
        return (features, details) if return_details else features

    def mean_pooled_frames(self, video: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        """CLIP4Clip meanP: mean over the real frames of the L2-normalised CLIP frame features -> [B, E]."""
        frames = self.clip.encode_image(video.flatten(0, 1)).unflatten(0, video.shape[:2])  # [B, T, E]
        frames = frames / frames.norm(dim=-1, keepdim=True)
        mask = video_mask.to(frames.dtype).unsqueeze(-1)
        return (frames * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)

    def forward(self, ids: torch.Tensor, video: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE loss of a batch of matching (text, video) pairs; the prompts are generated once."""
        prompts = self.prompts(video.shape[1]) if self.prompt_generator is not None else None
        return self.loss_from_features(self.encode_text(ids, prompts), self.encode_video(video, video_mask,
                                                                                         prompts=prompts))

    @staticmethod
    def similarity(text_features: torch.Tensor, video_features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity [Nt, Nv] of raw features [Nt, E] and [Nv, E]."""
        return F.normalize(text_features, dim=-1) @ F.normalize(video_features, dim=-1).t()

    def loss_from_features(self, text_features: torch.Tensor, video_features: torch.Tensor) -> torch.Tensor:
        """Mean of the text->video and video->text cross-entropies of exp(logit_scale) * cosine, pair i matching
        pair i. Pass all-gathered features to train on the global batch."""
        if text_features.shape[0] != video_features.shape[0]:
            raise ValueError(f"{text_features.shape[0]} texts and {video_features.shape[0]} videos: the loss needs "
                             "matching pairs")
        logits = self.clip.logit_scale.exp() * self.similarity(text_features, video_features)
        targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of everything trained: all but the frozen CLIP."""
        return [(name, p) for name, p in self.named_parameters() if p.requires_grad]

    def trainable_parameter_counts(self) -> dict[str, int]:
        """Trained parameter count per module (first two levels of the name, e.g. `video_encoder.adapters`)."""
        counts = Counter()
        for name, parameter in self.trainable_parameters():
            counts[".".join(name.split(".")[:2])] += parameter.numel()
        return dict(counts)


def build_model(args, clip: CLIP) -> VideoTextModel:
    """The model described by `args` (argparse-style, or None; missing attributes take add_model_args' defaults)
    on a loaded `clip` (models.clip.load_clip)."""
    return VideoTextModel(clip, ModelConfig.from_args(args))
