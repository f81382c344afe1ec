"""Trainer: a stop after k steps + resume equals an uninterrupted run; schedule and optimizer groups.

The helpers here (a tiny DGL model on a tiny random CLIP, an in-memory pair dataset, ``run_training``) are also
used by tests/test_ddp.py and tests/test_checkpoint.py.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from models import build_model
from models.clip import CLIP, CLIPConfig
from utils.distributed import DistContext
from utils.optimization import WarmupCosine, param_groups
from utils.precision import resolve_precision
from utils.run_log import JsonLines
from utils.training import TrainConfig, Trainer

FRAMES, WORDS = 2, 8


def tiny_model(seed: int = 0, dropout: float = 0.0) -> torch.nn.Module:
    """A DGL model on a random tiny CLIP, plus one trainable parameter that never gets a gradient (like STOP's
    region-score conv) so the DDP path with unused parameters is exercised. ``dropout`` > 0 adds dropout on the
    text features (DGL itself has none) so that tests see the model's random stream."""
    torch.manual_seed(seed)
    clip = CLIP(CLIPConfig.tiny())
    model = build_model(argparse.Namespace(max_frames=FRAMES, temporal_prompt="none"), clip)
    model.register_parameter("never_used", torch.nn.Parameter(torch.ones(3)))
    if dropout:
        clip.ln_final.register_forward_hook(lambda module, _, out: F.dropout(out, dropout, module.training))
    return model


class PairDataset(Dataset):
    """``n`` random (caption ids, video) pairs with the item format and evaluation views of dataloaders."""

    def __init__(self, n: int, seed: int = 0, resolution: int = 32):
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 1000, (n, WORDS), generator=gen)
        self.ids[:, 0] = 49406
        self.ids[:, -1] = 49407
        self.videos = torch.randn(n, FRAMES, 3, resolution, resolution, generator=gen)
        self.video_ids = [f"video{i}" for i in range(n)]
        self.captions = [f"caption {i}" for i in range(n)]
        self.caption_to_video = torch.arange(n)
        self.valid = torch.ones(n, dtype=torch.bool)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        # A random draw per item, like the training frame sampler: must be reproducible under resume.
        jitter = 1 + 0.01 * torch.rand(())
        return {"text": self.ids[i], "video": self.videos[i] * jitter,
                "video_mask": torch.ones(FRAMES, dtype=torch.long), "video_index": i}

    def text_view(self):
        return [{"text": self.ids[i], "caption_index": i} for i in range(len(self))]

    def video_view(self):
        return [{"video": self.videos[i], "video_mask": torch.ones(FRAMES, dtype=torch.long), "video_index": i,
                 "valid": bool(self.valid[i])} for i in range(len(self))]


def train_config(**overrides) -> TrainConfig:
    values = dict(batch_size=4, epochs=2, lr=1e-2, coef_lr=1e-3, wd=0.2, wd_exclude="bias", warmup_proportion=0.25,
                  gradient_accumulation_steps=1, clip_grad_norm=1.0, seed=7, num_workers=0, n_display=1)
    values.update(overrides)
    return TrainConfig(**values)


def make_trainer(out_dir: Path, ctx: DistContext | None = None, n: int = 12, dropout: float = 0.0,
                 **overrides) -> Trainer:
    ctx = ctx or DistContext()
    model = tiny_model(dropout=dropout).to(ctx.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1000 + ctx.rank)  # the per-rank random stream main.py sets up after building the model
    return Trainer(model, PairDataset(n), ctx, train_config(**overrides), resolve_precision("fp32", ctx.device),
                   list(model.clip.parameters()) + list(model.clip.buffers()), output_dir=str(out_dir),
                   metrics=JsonLines(out_dir / "metrics.jsonl", enabled=ctx.is_main))


def step_logs(out_dir: Path, key: str = "loss") -> list[float]:
    """``key`` ("loss", "grad_norm", "lr", ...) of every logged training step."""
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in lines if r["kind"] == "train"]


def learned(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v for k, v in trainer.checkpoint(with_training_state=False)["model"].items()}


@pytest.mark.parametrize("stop_at", [4, 6])  # mid-epoch, and after the last step of epoch 1
def test_resume_equals_uninterrupted(tmp_path, stop_at):
    # 12 pairs, batch 2 -> 6 steps per epoch, 2 epochs; dropout is on: the RNG must be restored too.
    full = make_trainer(tmp_path / "full", batch_size=2, dropout=0.2)
    assert full.train() == "finished" and full.progress.global_step == 12

    first = make_trainer(tmp_path / "part", batch_size=2, dropout=0.2, stop_after_steps=stop_at)
    assert first.train() == "stopped" and first.progress.global_step == stop_at
    del first
    resumed = make_trainer(tmp_path / "part", batch_size=2, dropout=0.2)
    torch.manual_seed(12345)  # a different random state before resuming: the checkpoint must override it
    payload = torch.load(tmp_path / "part" / "ckpt_last.pt", weights_only=True)
    assert (payload["epoch"], payload["step_in_epoch"], payload["global_step"]) == (0, stop_at, stop_at)
    resumed.model.load_state_dict(payload["model"], strict=False)
    resumed.load_training_state(payload, "test")
    assert resumed.train() == "finished" and resumed.progress.global_step == 12

    expected, got = learned(full), learned(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    assert step_logs(tmp_path / "part") == pytest.approx(step_logs(tmp_path / "full"), abs=1e-6)
    initial = learned(make_trainer(tmp_path / "fresh"))
    assert any(not torch.equal(initial[k], expected[k]) for k in expected)


def test_unused_parameter_stays_at_init_and_checkpoint_is_small(tmp_path):
    trainer = make_trainer(tmp_path, stop_after_steps=2)
    trainer.train()
    state = learned(trainer)
    assert torch.equal(state["never_used"], torch.ones(3))            # no gradient -> AdamW leaves it alone
    assert not any(k.startswith("clip.") for k in state)               # the frozen CLIP is not saved
    clip_bytes = sum(p.numel() * 4 for p in trainer.model.clip.parameters())
    assert (tmp_path / "ckpt_last.pt").stat().st_size < 0.5 * clip_bytes


def test_warmup_cosine_schedule():
    s = WarmupCosine(total_steps=10, warmup_steps=2)
    assert [s(t) for t in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert s(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert s(10) == pytest.approx(0.0, abs=1e-12)
    assert WarmupCosine(5, 0)(0) == 1.0


def test_param_groups_decay_and_clip_lr():
    model = tiny_model()
    clip_params = list(model.clip.parameters())
    model.clip.ln_final.weight.requires_grad_(True)     # as if the CLIP were partly unfrozen
    model.clip.ln_final.bias.requires_grad_(True)
    groups = {g["name"]: g for g in param_groups(model, clip_params, lr=1e-3, coef_lr=5e-4, weight_decay=0.2)}
    assert set(groups) == {"new_decay", "new_no_decay", "clip_decay", "clip_no_decay"}
    assert groups["clip_decay"]["param_names"] == ["clip.ln_final.weight"]
    assert groups["clip_decay"]["lr"] == pytest.approx(5e-7) and groups["new_decay"]["lr"] == 1e-3
    assert all(n.endswith("bias") for n in groups["new_no_decay"]["param_names"])
    assert groups["new_no_decay"]["weight_decay"] == 0.0 and groups["new_decay"]["weight_decay"] == 0.2
    one_d = [n for n in groups["new_decay"]["param_names"] if dict(model.named_parameters())[n].ndim == 1]
    assert one_d, "released mode decays 1-D weights (LayerNorm / PReLU)"
    strict = {g["name"]: g for g in param_groups(model, clip_params, 1e-3, 5e-4, 0.2, wd_exclude="bias_and_1d")}
    assert set(one_d) <= set(strict["new_no_decay"]["param_names"])
    trained = sum(len(g["params"]) for g in groups.values())
    assert trained == sum(1 for p in model.parameters() if p.requires_grad)
