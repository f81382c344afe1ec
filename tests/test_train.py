"""Trainer: a stop after k steps + resume equals an uninterrupted run; schedule and optimizer groups (helpers in
tests/conftest.py)."""
from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import learned, make_trainer, step_logs, tiny_dgl_model
from utils.engine.training.optimization import WarmupCosine
from utils.engine.training.trainer import TrainingError


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
    model = tiny_dgl_model()
    model.clip.ln_final.weight.requires_grad_(True)     # as if the CLIP were partly unfrozen
    model.clip.ln_final.bias.requires_grad_(True)
    groups = {g["name"]: g for g in model.param_groups(lr=1e-3, coef_lr=5e-4, weight_decay=0.2)}
    assert set(groups) == {"new_decay", "new_no_decay", "clip_decay", "clip_no_decay"}
    assert groups["clip_decay"]["param_names"] == ["clip.ln_final.weight"]
    assert groups["clip_decay"]["lr"] == pytest.approx(5e-7) and groups["new_decay"]["lr"] == 1e-3
    assert all(n.endswith("bias") for n in groups["new_no_decay"]["param_names"])
    assert groups["new_no_decay"]["weight_decay"] == 0.0 and groups["new_decay"]["weight_decay"] == 0.2
    one_d = [n for n in groups["new_decay"]["param_names"] if dict(model.named_parameters())[n].ndim == 1]
    assert one_d, "released mode decays 1-D weights (LayerNorm / PReLU)"
    strict = {g["name"]: g for g in model.param_groups(1e-3, 5e-4, 0.2, wd_exclude="bias_and_1d")}
    assert set(one_d) <= set(strict["new_no_decay"]["param_names"])
    trained = sum(len(g["params"]) for g in groups.values())
    assert trained == sum(1 for p in model.parameters() if p.requires_grad)


class NanGradient(torch.autograd.Function):
    """The identity forward, a NaN gradient backward: a finite loss whose gradient is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("poison,value", [("loss", "the loss is nan"), ("gradient", "the gradient norm is nan")])
def test_a_non_finite_step_stops_before_its_update_even_when_not_logged(tmp_path, poison, value):
    # 12 pairs / 4 = 3 steps per epoch; only step 1 is logged (n_display 100), ckpt_last.pt after every step.
    trainer = make_trainer(tmp_path, n_display=100, save_steps=1)
    forward, calls = trainer.step_module.forward, []

    def poisoned(text, video, video_mask):
        calls.append(len(calls) + 1)
        loss = forward(text, video, video_mask)
        if len(calls) == 3:
            return loss * float("nan") if poison == "loss" else NanGradient.apply(loss)
        return loss

    trainer.step_module.forward = poisoned
    with pytest.raises(TrainingError) as raised:
        trainer.train()
    message = str(raised.value)
    assert message.startswith(f"training step 3 (epoch 1): {value}")
    assert f"stopped before the update. The last good checkpoint is {tmp_path}/ckpt_last.pt (step 2)." in message
    saved = torch.load(tmp_path / "ckpt_last.pt", weights_only=True)
    assert saved["global_step"] == 2
    for name, tensor in learned(trainer).items():  # the parameters are the step-2 ones: step 3 updated nothing
        assert torch.equal(tensor, saved["model"][name]), name


def test_a_checkpoint_with_a_non_finite_tensor_is_never_written(tmp_path):
    trainer = make_trainer(tmp_path, stop_after_steps=1)
    assert trainer.train() == "stopped"
    before = (tmp_path / "ckpt_last.pt").read_bytes()
    with torch.no_grad():
        trainer.model.never_used[1] = float("inf")
    for name in ("ckpt_last.pt", "ckpt_best.pt"):
        with pytest.raises(TrainingError, match=rf"^step 1: 1 tensors are not finite \(e.g. \['model.never_used'\]\); "
                                                rf"{name} is not written. The last good checkpoint is .*\(step 1\)"):
            trainer.save(name, with_training_state=name == "ckpt_last.pt")
    assert (tmp_path / "ckpt_last.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_last.pt", "metrics.jsonl"]


def test_resume_with_more_epochs_follows_the_schedule_of_the_new_total(tmp_path):
    first = make_trainer(tmp_path, epochs=2)  # 3 steps per epoch: 6 steps, the lr reaches 0 at the end
    assert first.train() == "finished" and first.optimizer.param_groups[0]["lr"] == 0.0
    base = first.optimizer.param_groups[0]["initial_lr"]
    payload = torch.load(tmp_path / "ckpt_last.pt", weights_only=True)
    longer = make_trainer(tmp_path, epochs=4)  # 12 steps: warm-up round(0.25 x 12) = 3, cosine to 0 at 12
    longer.model.load_learned_state_dict(payload["model"], "test")
    longer.load_training_state(payload, "test")
    schedule = WarmupCosine(12, 3)
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(base * schedule(6)) and schedule(6) > 0.5
    assert longer.train() == "finished" and longer.progress.global_step == 12
    # the lr logged at step t is the one set for step t + 1: base x schedule(t)
    assert step_logs(tmp_path, "lr")[-6:] == pytest.approx([base * schedule(t) for t in range(7, 13)])
