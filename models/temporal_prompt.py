"""STOP's inter-frame temporal prompt (MODEL.md section 5).

From a video's patch tokens after ln_pre, Z [T, N, W]: self-attention over all T*N tokens, then
* frame weights w [T]: a Conv3d over the (T, N, W) volume, boosted on the spatial mask's cells, averaged per frame
  and min-max normalised per video;
* the prompt: Conv3d -> PReLU -> Conv3d over the volume, an MLP over the N patches to Pl tokens, scaled by (1 + w),
  times 0.05. It is added to every layer's local prompts.
"""

from __future__ import annotations

import torch
from torch import nn

from models.clip import attention
from models.conv3d import apply_conv3d, apply_conv3d_chain
from models.model_config import ModelConfig
from models.spatial_prompt import same_conv3d


def normalise_per_video(weights: torch.Tensor) -> torch.Tensor:
    """Min-max normalise [B, T] to [0, 1] along T, each video on its own. A video whose weights are all equal
    (max == min, e.g. a single frame) gets zeros instead of the released code's NaN."""
    low = weights.amin(dim=1, keepdim=True)
    spread = weights.amax(dim=1, keepdim=True) - low
    return (weights - low) / torch.where(spread > 0, spread, torch.ones_like(spread))


class TemporalPrompt(nn.Module):
    """(tokens [B, T, 1 + N, W], cell mask [B, T, g, g]) -> (prompt [B, T * Pl, W], frame weights [B, T]).
    From `config`: Pl (local_each_frame_prompt_length), the temporal_* hyperparameters, conv_impl and fft_chain
    (how the convolutions are computed, the same function either way)."""

    def __init__(self, width: int, num_patches: int, config: ModelConfig):
        super().__init__()
        self.prompt_length, self.scale = config.local_each_frame_prompt_length, config.temporal_scale
        self.conv_impl, self.fft_chain = config.conv_impl, config.fft_chain
        hidden, kernel = config.temporal_hidden_channels, config.temporal_kernel
        self.attention = nn.MultiheadAttention(width, width // 64)
        self.weight_conv = same_conv3d(1, 1, config.temporal_weight_kernel)
        self.conv1 = same_conv3d(1, hidden, kernel)
        self.act1 = nn.PReLU()
        self.conv2 = same_conv3d(hidden, 1, kernel)
        self.mlp = nn.Sequential(nn.Linear(num_patches, config.temporal_mlp_hidden), nn.PReLU(),
                                 nn.Linear(config.temporal_mlp_hidden, self.prompt_length))

    def forward(self, tokens: torch.Tensor, cell_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, _, width = tokens.shape
        patches = tokens[:, :, 1:].flatten(1, 2)  # [B, T*N, W]
        volume = attention(self.attention, patches).view(b, 1, t, -1, width)  # [B, 1, T, N, W]
        weights = self.frame_weights(volume, cell_mask)
        prompt = apply_conv3d_chain([self.conv1, self.act1, self.conv2], volume, self.conv_impl,
                                    self.fft_chain).squeeze(1)  # [B, T, N, W]
        prompt = self.mlp(prompt.transpose(2, 3)).transpose(2, 3)  # [B, T, Pl, W]
        prompt = prompt + prompt * weights[:, :, None, None]
        return prompt.reshape(b, t * self.prompt_length, width) * self.scale, weights

    def frame_weights(self, volume: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
        """volume [B, 1, T, N, W], cell mask [B, T, g, g] -> w [B, T] in [0, 1]."""
        response = apply_conv3d(self.weight_conv, volume, self.conv_impl).squeeze(1)  # [B, T, N, W]
        response = response + response * cell_mask.flatten(2).unsqueeze(-1)
        return normalise_per_video(response.mean(dim=(2, 3)))
