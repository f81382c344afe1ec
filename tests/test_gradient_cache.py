"""--micro_batch_size (gradient caching, utils/engine/training/gradient_cache.py): one optimizer step equals the unsplit
step (DGL); STOP's dropout masks are replayed (the gradient equals the full-graph gradient of the same masks, and
differs without the replay); bfloat16 autocast, a trained logit scale, --resume; bad combinations are refused.
Two gloo processes against one: tests/test_ddp.py."""
from __future__ import annotations

import pytest
import torch

import main
from models import ModelConfig, create_model
from models.clip import CLIP, CLIPConfig
from tests.conftest import TRAIN_FRAMES, PairDataset, learned, make_trainer, step_logs, tiny_dgl_model
from utils.engine.retrieval.step import ContrastiveStep
from utils.engine.runtime.precision import resolve_precision
from utils.engine.training import gradient_cache
from utils.engine.training.trainer import check_micro_batch_size


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """|a - b| / |b| of the tensors taken as one vector (a gradient: all its parameters)."""
    return float(torch.cat([(a[k] - b[k]).flatten() for k in b]).norm() / torch.cat([b[k].flatten() for k in b]).norm())


def worst_tensor_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """max over tensors of |a - b| / |b|."""
    return max(float((a[k] - b[k]).norm() / b[k].norm()) for k in b)


def recorded_gradients(trainer) -> list[dict[str, torch.Tensor]]:
    """The gradients every optimizer step of `trainer` applies (after clipping), recorded as it runs."""
    names = {p: n for n, p in trainer.model.named_parameters()}
    record = []
    trainer.optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: record.append(
        {names[p]: p.grad.clone() for p in trainer.trainable if p.grad is not None}))
    return record


@pytest.mark.parametrize("micro_batch_size", [1, 2])
def test_one_step_with_micro_batches_equals_the_unsplit_step(tmp_path, micro_batch_size):
    unsplit = make_trainer(tmp_path / "unsplit", batch_size=4, stop_after_steps=2)
    split = make_trainer(tmp_path / "split", batch_size=4, stop_after_steps=2, micro_batch_size=micro_batch_size)
    expected_grads, got_grads = recorded_gradients(unsplit), recorded_gradients(split)
    unsplit.train()
    split.train()
    assert len(got_grads) == len(expected_grads) == 2
    for got, expected in zip(got_grads, expected_grads):
        assert got.keys() == expected.keys() and len(got) > 10
        assert relative_difference(got, expected) < 1e-5
        # one-element tensors whose gradient nearly cancels (an adapter's PReLU slope, |g| ~ 2e-5) reach ~1e-5
        assert worst_tensor_difference(got, expected) < 1e-4
    assert step_logs(tmp_path / "split") == pytest.approx(step_logs(tmp_path / "unsplit"), rel=1e-5)
    expected, got = learned(unsplit), learned(split)
    for key in expected:  # Adam's update amplifies rounding where the moments nearly cancel: as in test_ddp
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-5, msg=key)
    before = learned(make_trainer(tmp_path / "init"))
    assert any(not torch.allclose(before[k], expected[k]) for k in expected), "the steps changed nothing"


def stop_step(checkpoint_activations: bool = False) -> ContrastiveStep:
    """A STOP model (spatial dropout 0.5 active: train mode) on a random tiny CLIP, wrapped as the Trainer does."""
    torch.manual_seed(0)
    config = ModelConfig(max_frames=TRAIN_FRAMES, checkpoint_activations=checkpoint_activations)
    model = create_model(config, CLIP(CLIPConfig.tiny())).train()
    return ContrastiveStep(model, resolve_precision("fp32", torch.device("cpu")))


def gradients(step: ContrastiveStep) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in step.model.named_trainable_parameters() if p.grad is not None}
    step.model.zero_grad(set_to_none=True)
    return grads


def batch(n: int = 4):
    data = PairDataset(n)
    items = [data[i] for i in range(n)]
    return [torch.stack([item[key] for item in items]) for key in ("text", "video", "video_mask")]


def cached_gradients(step: ContrastiveStep, inputs, micro_batch_size: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    gradient_cache.gradient_cached_backward(step.features, step.loss, step, *inputs, micro_batch_size, 1.0,
                                            lambda x: x.backward())
    return gradients(step)


def full_graph_gradients(step: ContrastiveStep, inputs, micro_batch_size: int) -> dict[str, torch.Tensor]:
    """The reference: the micro-batches encoded one after the other from the same random state (so with the same
    dropout masks) WITH their graphs, the loss of the whole batch, one backward."""
    torch.manual_seed(5)
    parts = [step.features(*(x[i:i + micro_batch_size] for x in inputs))
             for i in range(0, inputs[0].shape[0], micro_batch_size)]
    text, video = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    step.loss(text, video, parts[0][2]).backward()
    return gradients(step)


@pytest.mark.parametrize("checkpoint_activations", [False, True])
def test_stop_dropout_masks_are_replayed(checkpoint_activations):
    step, inputs = stop_step(checkpoint_activations), batch()
    expected = full_graph_gradients(step, inputs, 2)
    got = cached_gradients(step, inputs, 2)
    assert expected.keys() == got.keys() and "video_encoder.spatial_prompt.conv1.weight" in got
    assert relative_difference(got, expected) < 1e-5


def test_without_the_replay_the_gradient_differs(monkeypatch):
    step, inputs = stop_step(), batch()
    expected = full_graph_gradients(step, inputs, 2)
    monkeypatch.setattr(gradient_cache, "set_random_state", lambda state, device: None)  # fresh masks on re-runs
    assert relative_difference(cached_gradients(step, inputs, 2), expected) > 1e-2


def test_the_random_state_after_a_step_is_the_one_after_encoding():
    step, inputs = stop_step(), batch()
    torch.manual_seed(5)
    with torch.no_grad():
        for i in (0, 2):
            step.features(*(x[i:i + 2] for x in inputs))
    after_encoding = torch.get_rng_state()
    cached_gradients(step, inputs, 2)
    assert torch.equal(torch.get_rng_state(), after_encoding)


def test_bad_combinations_are_refused(tmp_path):
    check_micro_batch_size(0, 6, 4)  # off
    check_micro_batch_size(3, 6, 1)
    with pytest.raises(ValueError, match=r"--micro_batch_size 4 must divide --batch_size 6"):
        check_micro_batch_size(4, 6, 1)
    with pytest.raises(ValueError, match=r"--gradient_accumulation_steps 2 splits it: use one of the two"):
        check_micro_batch_size(2, 6, 2)
    with pytest.raises(ValueError, match="must divide"):
        make_trainer(tmp_path, batch_size=4, micro_batch_size=3)
    argv = ["--do_train", "--output_dir", str(tmp_path / "x"), "--batch_size", "8", "--micro_batch_size", "3"]
    with pytest.raises(SystemExit, match=r"^error: --micro_batch_size 3 must divide --batch_size 8 .*--help\)$"):
        main.parse_args(argv)


def test_mixed_precision_micro_batches_match_the_unsplit_step():
    """bfloat16 autocast (what --precision amp is on the CPU): the same gradient to bfloat16 rounding."""
    torch.manual_seed(0)
    model = tiny_dgl_model()
    step = ContrastiveStep(model, resolve_precision("bf16", torch.device("cpu")))
    inputs = batch()
    step(*inputs).backward()
    expected = gradients(step)
    got = cached_gradients(step, inputs, 1)
    assert expected.keys() == got.keys() and len(got) > 10
    assert relative_difference(got, expected) < 2e-2


def test_a_trained_logit_scale_gets_the_unsplit_gradient():
    """--no-freeze_clip trains the logit scale: its gradient comes from the loss step, added once."""
    torch.manual_seed(0)
    model = tiny_dgl_model()
    model.clip.logit_scale.requires_grad_(True)
    step = ContrastiveStep(model, resolve_precision("fp32", torch.device("cpu")))
    inputs = batch()
    step(*inputs).backward()
    expected = gradients(step)
    torch.manual_seed(5)
    gradient_cache.gradient_cached_backward(step.features, step.loss, step, *inputs, 2, 1.0, lambda x: x.backward(),
                                            train_logit_scale=True)
    got = gradients(step)
    assert "clip.logit_scale" in got and expected.keys() == got.keys()
    torch.testing.assert_close(got["clip.logit_scale"], expected["clip.logit_scale"], rtol=1e-5, atol=0)
    assert relative_difference(got, expected) < 1e-5


def test_resume_with_micro_batches_equals_uninterrupted(tmp_path):
    """Dropout on (the replayed random state): a stop after 3 steps and a resume give the uninterrupted run."""
    full = make_trainer(tmp_path / "full", batch_size=4, dropout=0.2, micro_batch_size=2)
    assert full.train() == "finished"
    first = make_trainer(tmp_path / "part", batch_size=4, dropout=0.2, micro_batch_size=2, stop_after_steps=3)
    assert first.train() == "stopped"
    resumed = make_trainer(tmp_path / "part", batch_size=4, dropout=0.2, micro_batch_size=2)
    torch.manual_seed(12345)  # the checkpoint's random state must override this
    payload = torch.load(tmp_path / "part" / "ckpt_last.pt", weights_only=True)
    resumed.model.load_state_dict(payload["model"], strict=False)
    resumed.load_training_state(payload, "test")
    assert resumed.train() == "finished" and resumed.progress.global_step == full.progress.global_step == 6
    expected, got = learned(full), learned(resumed)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    assert step_logs(tmp_path / "part") == pytest.approx(step_logs(tmp_path / "full"), abs=1e-6)
