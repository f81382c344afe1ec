"""STOP's intra-frame spatial prompt, in pixel space (MODEL.md section 4).

A video's normalised frames X [T, 3, H, W] form a 3-D volume (channels 3, depth T). A stack of "same"-padded
Conv3d layers and a per-pixel MLP make a prompt P; a separate score convolution ranks the cells of a g x g grid
and keeps the top k per frame as the region mask M. Output X + 0.05 P + 0.05 P M.
"""

from __future__ import annotations

import torch
from torch import nn

from models.conv3d import apply_conv3d, apply_conv3d_chain, shared_input_spectrum
from models.model_config import ModelConfig


def same_conv3d(in_channels: int, out_channels: int, kernel: tuple[int, int, int]) -> nn.Conv3d:
    """Stride-1 Conv3d with odd `kernel` and "same" zero padding."""
    return nn.Conv3d(in_channels, out_channels, kernel, stride=1, padding=tuple(k // 2 for k in kernel))


class SpatialPrompt(nn.Module):
    """video [B, T, 3, H, W] (H = W = grid * patch) -> (prompted video [B, T, 3, H, W], cell mask [B, T, g, g]).

    From `config`: the spatial_* hyperparameters, conv_impl and fft_chain (how the convolutions are computed, the
    same function either way) and spatial_mask_grid, the cell layout: `patch` = cell (i, j) is the ViT patch of
    rows i*p .. i*p+p-1 and columns j*p .. j*p+p-1; `lattice` = the released code's cells, pixel (r, c) in cell
    (r mod g, c mod g).
    """

    def __init__(self, patch_size: int, grid_size: int, config: ModelConfig):
        super().__init__()
        top_k, hidden, kernel = config.spatial_top_k, config.spatial_hidden_channels, config.spatial_kernel
        if not top_k < grid_size * grid_size:
            raise ValueError(f"the spatial mask keeps the top {top_k} cells per frame (--spatial_top_k), so it "
                             f"needs a grid of more than {top_k} cells; this CLIP has {grid_size} x {grid_size}")
        self.patch_size, self.grid_size, self.cell_layout = patch_size, grid_size, config.spatial_mask_grid
        self.top_k, self.scale, self.conv_impl = top_k, config.spatial_scale, config.conv_impl
        self.fft_chain = config.fft_chain
        channels, mlp_hidden = config.spatial_prompt_channels, config.spatial_mlp_hidden
        self.conv1 = same_conv3d(3, hidden, kernel)
        self.conv2 = same_conv3d(hidden, hidden, kernel)
        self.act2 = nn.PReLU()
        self.conv3 = same_conv3d(hidden, hidden, kernel)
        self.act3 = nn.PReLU()
        self.conv4 = same_conv3d(hidden, channels, kernel)
        self.mlp = nn.Sequential(nn.Linear(channels, mlp_hidden), nn.PReLU(), nn.Linear(mlp_hidden, 3))
        self.dropout = nn.Dropout(config.spatial_dropout)
        self.score_conv = same_conv3d(3, 1, config.spatial_score_kernel)
        self._folded_conv4: tuple[tuple, nn.Conv3d] | None = None  # (parameter key, mlp[0] o conv4): folded_conv4

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.grid_size * self.patch_size
        if video.shape[-3:] != (3, size, size):
            raise ValueError(f"frames must be [3, {size}, {size}] (the CLIP input resolution), got "
                             f"{list(video.shape[-3:])}")
        volume = video.transpose(1, 2)  # [B, 3, T, H, W]
        spectrum = shared_input_spectrum([self.conv1, self.score_conv], volume, self.conv_impl) \
            if self.fft_chain else None
        cell_mask = self.region_mask(volume, spectrum)
        prompt = self.prompt(volume, spectrum)
        pixel_mask = self.mask_to_pixels(cell_mask).unsqueeze(2)  # [B, T, 1, H, W]
        scaled = prompt * self.scale  # video + P s + P M s, in the released order of the additions
        return (video + scaled).addcmul_(scaled, pixel_mask), cell_mask

    def prompt(self, volume: torch.Tensor, spectrum: torch.Tensor | None = None) -> torch.Tensor:
        """volume [B, 3, T, H, W] (its transform `spectrum`, from shared_input_spectrum, or None) -> P [B, T, 3, H, W].
        The released code applies its last dropout twice.

        Without gradients and with the dropout inactive (evaluation), the MLP's first Linear is folded into conv4
        (`folded_conv4`: a linear map after a linear map is one) and the MLP runs on the channels-first volume, its
        last Linear as one matrix product per video: the same function to float32 rounding, without the per-pixel
        16 x 16 product and the channels-last copies. Otherwise (training, or gradients wanted) the layers as
        released."""
        layers = [self.conv1, self.conv2, self.act2, self.conv3, self.act3, self.conv4]
        if not torch.is_grad_enabled() and (not self.training or self.dropout.p == 0):
            hidden = apply_conv3d_chain(layers[:-1] + [self.folded_conv4(), self.mlp[1]], volume, self.conv_impl,
                                        self.fft_chain, spectrum)  # [B, mlp hidden, T, H, W], after the PReLU
            last, b = self.mlp[2], hidden.shape[0]  # per pixel: one [3, C] x [C, T*H*W] product per video
            prompt = torch.baddbmm(last.bias[:, None], last.weight.expand(b, -1, -1), hidden.flatten(2))
            return prompt.view(b, -1, *hidden.shape[2:]).transpose(1, 2)
        x = apply_conv3d_chain(layers, volume, self.conv_impl, self.fft_chain, spectrum)
        x = self.dropout(x).permute(0, 2, 3, 4, 1)  # [B, T, H, W, C]
        x = self.dropout(self.mlp(x)).permute(0, 1, 4, 2, 3)
        return self.dropout(x)

    def folded_conv4(self) -> nn.Conv3d:
        """mlp[0] o conv4 as one Conv3d without gradients: weight L W, bias L b + b_L (L, b_L: the Linear's). Kept
        while the four tensors are unchanged (storage and version counter: optimizer steps and `load_state_dict`
        rebuild it; like the FFT weight-spectrum cache, writes through `.data` are not seen), so that its FFT weight
        spectrum stays cached too."""
        conv, linear = self.conv4, self.mlp[0]
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device)
                    for p in (conv.weight, conv.bias, linear.weight, linear.bias))
        if self._folded_conv4 is None or self._folded_conv4[0] != key:
            # a normal tensor even when first built under torch.inference_mode (its version counter keys caches)
            with torch.inference_mode(False), torch.no_grad():
                folded = same_conv3d(conv.in_channels, linear.out_features, conv.kernel_size).to(conv.weight)
                folded.weight.copy_(torch.einsum("oc,cidhw->oidhw", linear.weight, conv.weight))
                folded.bias.copy_(linear.weight @ conv.bias + linear.bias)
            self._folded_conv4 = key, folded.requires_grad_(False)
        return self._folded_conv4[1]

    def region_mask(self, volume: torch.Tensor, spectrum: torch.Tensor | None = None) -> torch.Tensor:
        """volume [B, 3, T, H, W] (its transform `spectrum` or None) -> bool [B, T, g, g]: per frame, the cells
        whose mean score is strictly greater than the (k+1)-th largest. A hard threshold: no gradient reaches
        score_conv (computed without a graph)."""
        with torch.no_grad():
            score = apply_conv3d(self.score_conv, volume, self.conv_impl, spectrum).squeeze(1)  # [B, T, H, W]
            b, t = score.shape[:2]
            g, p = self.grid_size, self.patch_size
            if self.cell_layout == "patch":
                cells = score.view(b, t, g, p, g, p).mean(dim=(3, 5))
            else:
                cells = score.view(b, t, p, g, p, g).mean(dim=(2, 4))
            threshold = cells.flatten(2).topk(self.top_k + 1, dim=-1).values[..., -1]
            return cells > threshold[..., None, None]

    def mask_to_pixels(self, cell_mask: torch.Tensor) -> torch.Tensor:
        """bool [B, T, g, g] -> bool [B, T, H, W], each pixel taking its cell's value under the cell layout."""
        p = self.patch_size
        if self.cell_layout == "patch":
            return cell_mask.repeat_interleave(p, dim=-2).repeat_interleave(p, dim=-1)
        return cell_mask.repeat(1, 1, p, p)
