"""The model's exact fast paths against the direct computation: `--conv_impl fft/auto` (with and without
`--fft_chain`) vs `direct` on the whole STOP video encoder and on a training step's gradients (tiny CLIP, float32,
relative error < 1e-4)."""

from unittest import mock

import pytest
import torch
from torch import nn

from models import ContrastiveLoss, fast_conv
from models import conv3d as conv3d_module
from models.model_config import ModelConfig
from models.spatial_prompt import SpatialPrompt
from tests.conftest import text_batch, tiny_model, video_batch


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value - reference).abs().max() / reference.abs().max()).item()


def models_by_impl(**options) -> dict[str, nn.Module]:
    """One tiny STOP model per conv_impl, all with the same weights."""
    models = {impl: tiny_model(conv_impl=impl, **options) for impl in conv3d_module.CONV_IMPLS}
    for model in models.values():
        model.load_state_dict(models["direct"].state_dict())
    return models


@pytest.mark.parametrize("fft_chain", [False, True])
@pytest.mark.parametrize("impl", ["fft", "auto"])
def test_encode_video_equals_direct(impl, fft_chain):
    models = models_by_impl(fft_chain=fft_chain)
    video, video_mask = video_batch()
    with mock.patch.object(fast_conv, "_fft_conv3d", wraps=fast_conv._fft_conv3d) as fft_calls, \
            mock.patch.object(fast_conv, "fft_conv3d_chain", wraps=fast_conv.fft_conv3d_chain) as chains, \
            mock.patch.object(fast_conv, "input_spectrum", wraps=fast_conv.input_spectrum) as transforms, \
            torch.no_grad():
        features, details = models[impl].encode_video(video, video_mask, return_details=True)
        again = models[impl].encode_video(video, video_mask)  # second call: cached weight spectra
    with torch.no_grad():
        reference, reference_details = models["direct"].encode_video(video, video_mask, return_details=True)
    # auto too: with cached weight spectra FFT is cheaper on every layer here. Per call: the 4 + 1 spatial and 3
    # temporal convolutions one by one (each pads and transforms its input), or the score and weight convs one
    # by one and two chains on the grid (spatial conv1..conv4, its conv1 reading the input transform shared with
    # the score conv; temporal conv1, conv2): 2 input_spectrum calls instead of 8
    assert (fft_calls.call_count, chains.call_count, transforms.call_count) == \
        ((4, 4, 4) if fft_chain else (16, 0, 16))
    assert relative_error(features, reference) < 1e-4
    assert relative_error(again, reference) < 1e-4
    assert torch.equal(details.region_mask, reference_details.region_mask)
    assert relative_error(details.frame_weights, reference_details.frame_weights) < 1e-4


@pytest.mark.parametrize("impl,fft_chain", [("fft", False), ("fft", True), ("auto", True)])
def test_training_step_gradients_equal_direct(impl, fft_chain):
    models = models_by_impl(fft_chain=fft_chain)
    video, video_mask = video_batch()
    ids = text_batch()
    grads = {}
    for name in (impl, "direct"):
        model = models[name].train()
        torch.manual_seed(3)  # the same dropout draws for both
        with mock.patch.object(fast_conv, "_fft_conv3d", wraps=fast_conv._fft_conv3d) as fft_calls, \
                mock.patch.object(fast_conv, "fft_conv3d_chain", wraps=fast_conv.fft_conv3d_chain) as chains:
            ContrastiveLoss()(*model(ids, video, video_mask)).backward()
        grads[name] = {key: p.grad for key, p in model.named_trainable_parameters() if p.grad is not None}
        if name == impl and impl == "fft":
            assert (fft_calls.call_count, chains.call_count) == ((2, 2) if fft_chain else (8, 0))
        elif name == impl:  # auto: without the cache the tiny shapes mix both algorithms (so no chain)
            assert 0 < fft_calls.call_count < 8 and chains.call_count == 0
    assert grads[impl].keys() == grads["direct"].keys()
    assert any(key.startswith("video_encoder.spatial_prompt.conv") for key in grads["direct"])
    flat = {name: torch.cat([g.flatten() for g in grads[name].values()]) for name in grads}
    assert relative_error(flat[impl], flat["direct"]) < 1e-4
    # per tensor, except those whose exact gradient is zero and whose computed one is rounding noise: the temporal
    # prompt's conv2 / mlp biases shift a token by a constant over W, which every LayerNorm reading it cancels;
    # the per-video min-max normalisation cancels weight_conv.bias
    scale = flat["direct"].abs().max()
    for key, reference in grads["direct"].items():
        if reference.abs().max() > 1e-6 * scale:
            assert relative_error(grads[impl][key], reference) < 1e-4, key


def test_direct_is_the_module_itself():
    conv = nn.Conv3d(2, 3, (3, 5, 5), padding=(1, 2, 2))
    x = torch.randn(1, 2, 4, 9, 9)
    with mock.patch.object(fast_conv, "functional_conv3d") as fast:
        assert torch.equal(conv3d_module.apply_conv3d(conv, x, "direct"), conv(x))
    fast.assert_not_called()


def test_unsupported_convolutions_and_names_are_refused():
    x = torch.randn(1, 2, 4, 9, 9)
    with pytest.raises(ValueError, match="stride-1"):
        conv3d_module.apply_conv3d(nn.Conv3d(2, 3, 3, stride=2, padding=1), x, "fft")
    with pytest.raises(ValueError, match="--conv_impl 'fast'"):
        conv3d_module.apply_conv3d(nn.Conv3d(2, 3, 3, padding=1), x, "fast")
    with pytest.raises(ValueError, match="conv_impl"):
        tiny_model(conv_impl="fast")


def test_checkpointed_blocks_give_the_same_gradients():
    """--checkpoint_activations recomputes the frozen visual blocks in the backward pass; gradients still reach
    every prompt and adapter, equal to the stored-activation ones."""
    video, video_mask = video_batch()
    ids = text_batch()
    grads = []
    for checkpointed in (False, True):
        model = tiny_model(conv_impl="direct", checkpoint_activations=checkpointed).train()
        torch.manual_seed(3)
        ContrastiveLoss()(*model(ids, video, video_mask)).backward()
        grads.append({key: p.grad for key, p in model.named_trainable_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any(key.startswith("video_encoder.adapters.") for key in grads[1])
    for key, reference in grads[0].items():
        torch.testing.assert_close(grads[1][key], reference, rtol=1e-5, atol=1e-7, msg=key)


def test_evaluation_reuses_prompts_until_the_generator_changes():
    model = tiny_model()
    generated = []
    model.prompt_generator.register_forward_hook(lambda *_: generated.append(1))
    with torch.no_grad():
        first = model.prompts(3)
        assert model.prompts(3) is first and len(generated) == 1
        model.prompts(3)  # the same frames again: cached
        model.prompt_generator.embedding.weight.mul_(2)  # an in-place update (like an optimizer step)
        updated = model.prompts(3)
    assert len(generated) == 2
    assert not torch.allclose(updated.visual, first.visual)
    with torch.no_grad():
        torch.testing.assert_close(updated.visual, model.prompt_generator(3).visual)
    model.prompts(3)  # with gradients: always generated (a graph to the generator's parameters)
    assert len(generated) == 4


def released_prompt(spatial: SpatialPrompt, volume: torch.Tensor) -> torch.Tensor:
    """The spatial prompt's layers one by one in the released order (direct convolutions, channels-last MLP)."""
    x = spatial.conv4(spatial.act3(spatial.conv3(spatial.act2(spatial.conv2(spatial.conv1(volume))))))
    x = spatial.dropout(x).permute(0, 2, 3, 4, 1)
    return spatial.dropout(spatial.dropout(spatial.mlp(x)).permute(0, 1, 4, 2, 3))


@pytest.mark.parametrize("impl", ["direct", "fft"])
def test_evaluation_folds_the_mlp_into_the_last_conv(impl):
    """Without gradients in evaluation, mlp[0] o conv4 is one convolution: the same prompt to float32 rounding,
    rebuilt after an in-place update of either; with gradients, or in training, the layers as released."""
    torch.manual_seed(0)
    spatial = SpatialPrompt(8, 4, ModelConfig(conv_impl=impl)).eval()
    volume = torch.randn(2, 3, 4, 32, 32)
    with mock.patch.object(spatial, "folded_conv4", wraps=spatial.folded_conv4) as folds:
        with torch.no_grad():
            folded = spatial.prompt(volume)
            assert spatial.folded_conv4() is spatial.folded_conv4()  # kept: its FFT weight spectrum stays cached
            spatial.mlp[0].weight.mul_(-2)  # in place, like an optimizer step
            updated = spatial.prompt(volume)
            expected_updated = released_prompt(spatial, volume)
            spatial.mlp[0].weight.div_(-2)
            expected = released_prompt(spatial, volume)
        assert folds.call_count == 4
        with_grad = spatial.prompt(volume)
        spatial.train()
        torch.manual_seed(5)
        trained = spatial.prompt(volume)
        assert folds.call_count == 4
    assert relative_error(folded, expected) < 1e-5 and relative_error(updated, expected_updated) < 1e-5
    fresh = SpatialPrompt(8, 4, ModelConfig(conv_impl=impl)).eval()
    fresh.load_state_dict(spatial.state_dict())
    with torch.inference_mode():  # the fold first built under inference mode (prompt_mechanism measures so)
        assert relative_error(fresh.prompt(volume), expected) < 1e-5
        assert relative_error(fresh.prompt(volume), expected) < 1e-5
    assert not torch.allclose(updated, folded)
    torch.manual_seed(5)
    reference = released_prompt(spatial, volume)
    assert relative_error(trained, reference) < 1e-5
    # gradients of the unfolded paths (evaluation with gradients, training) equal the released layers'
    for output, mode in ((with_grad, spatial.eval), (trained, spatial.train)):
        mode()
        torch.manual_seed(5)
        reference = released_prompt(spatial, volume)
        weights = torch.randn_like(reference)
        grads = torch.autograd.grad((output * weights).sum(), list(spatial.parameters()), allow_unused=True)
        expected_grads = torch.autograd.grad((reference * weights).sum(), list(spatial.parameters()),
                                             allow_unused=True)
        for grad, expected_grad in zip(grads, expected_grads):
            assert (grad is None) == (expected_grad is None)
            if grad is not None:
                assert relative_error(grad, expected_grad) < 1e-4
