"""CLIP's text encoder with DGL's deep text prompts and adapters (MODEL.md section 2).

Sequence: [SOT, Pt//2 prefix prompts, words 1 .. Lw-1, the other prompts (postfix)], causal, prompts without
positional embedding, the prompt slots overwritten with layer i's prompts before block i (i < Lt, the text prompt
depth). The feature is read at the EOT position shifted by the prefix length. Under the causal mask the postfix
prompts (after every EOT) never reach the feature: they exist because the released implementation has them, and
receive no gradient through this branch.
"""

from __future__ import annotations

import torch
from torch import nn

from models.adapter import Adapter, mlp_with_adapter
from models.clip import CLIP, attention
from models.model_config import ModelConfig


class PromptedTextEncoder(nn.Module):
    """ids [B, Lw] + text prompts [Lt, Pt, Wt] -> [B, E]. Holds only the adapters (config.lora); the frozen CLIP is
    passed in. Pt = config.text_prompt_length."""

    def __init__(self, width: int, layers: int, config: ModelConfig):
        super().__init__()
        self.prompt_length = config.text_prompt_length
        self.prefix_length = self.prompt_length // 2
        self.adapters = nn.ModuleList([Adapter(width, config.adapter_width, config.adapter_scale)
                                       for _ in range(layers)] if config.lora else [])

    def forward(self, clip: CLIP, ids: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        if prompts.shape[1] != self.prompt_length:
            raise ValueError(f"expected {self.prompt_length} text prompts per layer, got {prompts.shape[1]}")
        x = clip.embed_text(ids)  # [B, Lw, Wt]
        x = self.insert_prompts(x[:, :1], x[:, 1:], prompts[0])
        words = slice(1 + self.prefix_length, x.shape[1] - (self.prompt_length - self.prefix_length))
        for i, block in enumerate(clip.transformer.resblocks):
            if 0 < i < len(prompts):
                x = self.insert_prompts(x[:, :1], x[:, words], prompts[i])
            x = x + attention(block.attn, block.ln_1(x), is_causal=True)
            x = mlp_with_adapter(block, x, self.adapters[i] if self.adapters else None)
        eot = ids.argmax(dim=-1)
        # The released code reads the argmax of ids placed in the prompted layout: position j > 0 moves by the
        # prefix length (SOT at 0 stays).
        eot = eot + self.prefix_length * (eot > 0)
        x = clip.ln_final(x[torch.arange(x.shape[0], device=x.device), eot])
        return x @ clip.text_projection

    def insert_prompts(self, sot: torch.Tensor, words: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """[SOT [B, 1, D], prefix prompts, words [B, Lw - 1, D], postfix prompts] -> [B, Lw + Pt, D]."""
        batch = (sot.shape[0], -1, -1)
        prefix, postfix = prompts[: self.prefix_length], prompts[self.prefix_length:]
        return torch.cat([sot, prefix.expand(*batch), words, postfix.expand(*batch)], dim=1)
