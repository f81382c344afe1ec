"""The text-video retrieval model: a frozen CLIP and the trainable prompt modules; the model also owns what it
learns (its learned state, CLIP locked or not) and how that is optimised (parameter groups). MODEL.md section 6.
Build it through models.factory (create_model, load_trained).

State-dict layout: `clip.*` (OpenAI's names, frozen), `prompt_generator.*`, `text_encoder.adapters.*`,
`video_encoder.{global_prompts, spatial_prompt.*, temporal_prompt.*, adapters.*}`.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from models.checkpoints import CheckpointError, integer_dtype_message, integer_float_tensors
from models.clip import CLIP
from models.model_config import ModelConfig
from models.prompt_generator import LayerPrompts, LinearPromptGenerator, TransformerPromptGenerator
from models.prompted_text import PromptedTextEncoder
from models.prompted_video import PromptedVideoEncoder, VideoDetails

WD_EXCLUDES = ("bias", "bias_and_1d")


class VideoTextModel(nn.Module):
    """STOP / DGL / meanP (see ModelConfig) on `clip`, whose parameters are frozen (requires_grad False).
    `config.clip_activation` must be None (the CLIP's, whichever it is) or the CLIP's activation."""

    def __init__(self, clip: CLIP, config: ModelConfig):
        super().__init__()
        activation = clip.config.activation
        if config.clip_activation not in (None, activation):
            raise ValueError(f"--clip_activation {config.clip_activation}, but this CLIP computes {activation}: load "
                             "its weights with that activation (models.clip.load_clip)")
        self.clip, self.config = clip, config
        for parameter in clip.parameters():
            parameter.requires_grad_(False)
        self.prompt_generator = self.text_encoder = self.video_encoder = None
        self._cached_prompts: tuple[tuple, LayerPrompts] | None = None
        if not config.uses_prompts:
            return
        visual, text_width = clip.visual, clip.transformer.width
        depths = config.prompt_depths(visual.layers, clip.transformer.layers)  # (visual, text)
        if config.shared_latent_space == "transformer":
            self.prompt_generator = TransformerPromptGenerator(
                visual.width, text_width, *depths, config.text_prompt_length, config.local_each_frame_prompt_length,
                config.max_frames)
        else:
            self.prompt_generator = LinearPromptGenerator(
                visual.width, text_width, *depths, config.local_each_frame_prompt_length, visual.patch_size)
        self.text_encoder = PromptedTextEncoder(text_width, clip.transformer.layers, config)
        self.video_encoder = PromptedVideoEncoder(visual, config)

    def prompts(self, num_frames: int) -> LayerPrompts:
        """The layer prompts (input independent): text [Lt, Pt, Wt], visual local [Lv, num_frames * Pl, W].
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
            features, details = self.mean_pooled_frames(video, video_mask), VideoDetails()
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

    def forward(self, ids: torch.Tensor, video: torch.Tensor, video_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(text features [B, E], video features [B, E], logit scale exp(clip.logit_scale)) of a batch, the prompts
        generated once for both encoders; the loss is models.loss.ContrastiveLoss."""
        prompts = self.prompts(video.shape[1]) if self.prompt_generator is not None else None
        return (self.encode_text(ids, prompts), self.encode_video(video, video_mask, prompts=prompts),
                self.clip.logit_scale.exp())

    # ------------------------------------------------------------------------------ what is learned
    def unlock_clip(self) -> None:
        """Train CLIP's own parameters too (`--no-freeze_clip`): they join the learned state and the clip_*
        parameter groups."""
        for parameter in self.clip.parameters():
            parameter.requires_grad_(True)

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of everything trained: all but the frozen CLIP."""
        return [(name, p) for name, p in self.named_parameters() if p.requires_grad]

    def trainable_parameter_counts(self) -> dict[str, int]:
        """Trained parameter count per module (first two levels of the name, e.g. `video_encoder.adapters`)."""
        counts = Counter()
        for name, parameter in self.named_trainable_parameters():
            counts[".".join(name.split(".")[:2])] += parameter.numel()
        return dict(counts)

    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must hold to rebuild this model on the same CLIP: every state_dict entry outside
        `clip.` (trained tensors, and randomly initialised ones that receive no gradient), plus CLIP's parameters
        when they are trained; detached CPU copies."""
        state = self.state_dict(keep_vars=True)
        return {name: value.detach().cpu().clone() for name, value in state.items()
                if not name.startswith("clip.") or value.requires_grad}

    def load_learned_state_dict(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load `state` (our names; CLIP tensors in it overwrite the CLIP's). Every entry of learned_state_dict
        must be present with this model's shape, a floating-point one in a floating-point dtype; `source` names the
        file in the CheckpointError otherwise."""
        own = self.state_dict()
        missing = sorted(set(self.learned_state_dict()) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"{source} does not match the model built from these flags: {len(missing)} missing tensors "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). Use the model flags "
                "of the run that wrote it (--temporal_prompt, --shared_latent_space, --max_frames, the prompt "
                "lengths, --lora, the CLIP).")
        wrong = [k for k, v in state.items() if v.shape != own[k].shape]
        if wrong:
            raise CheckpointError(f"{source}: shape mismatch for {wrong[:3]} (checkpoint {list(state[wrong[0]].shape)}"
                                  f", model {list(own[wrong[0]].shape)}); use the same model flags and CLIP as "
                                  "that run.")
        integer = integer_float_tensors(state, own)
        if integer:
            raise CheckpointError(integer_dtype_message(source, integer, state))
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)

    def param_groups(self, lr: float, coef_lr: float, weight_decay: float, wd_exclude: str = "bias") -> list[dict]:
        """AdamW parameter groups over the trainable parameters, each with a "name" (empty groups dropped):
        new_decay / new_no_decay (what STOP adds: lr), clip_decay / clip_no_decay (CLIP's own, trained only after
        unlock_clip: lr * coef_lr). Weight decay (`wd_exclude`): "bias" (as released) exempts biases only, which
        also decays prompt embeddings, PReLU slopes and LayerNorm weights (the released exclusion list names
        `LayerNorm.weight`, which CLIP's `ln_*` never match); "bias_and_1d" also exempts every 1-D tensor."""
        if wd_exclude not in WD_EXCLUDES:
            raise ValueError(f"--wd_exclude {wd_exclude!r} is not one of {list(WD_EXCLUDES)}")
        groups: dict[str, dict] = {}
        for name, param in self.named_trainable_parameters():
            origin = "clip" if name.startswith("clip.") else "new"
            decay = not name.endswith("bias") and not (wd_exclude == "bias_and_1d" and param.ndim <= 1)
            key = f"{origin}_{'decay' if decay else 'no_decay'}"
            group = groups.setdefault(key, {"name": key, "params": [], "param_names": [],
                                            "lr": lr * (coef_lr if origin == "clip" else 1.0),
                                            "weight_decay": weight_decay if decay else 0.0})
            group["params"].append(param)
            group["param_names"].append(name)
        return [groups[k] for k in ("new_decay", "new_no_decay", "clip_decay", "clip_no_decay") if k in groups]

