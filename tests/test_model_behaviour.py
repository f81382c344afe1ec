"""Invariants of the video-text model: plain-CLIP equality with the prompts off, token layout, batch independence,
degenerate videos, frame order, the meanP baseline, input checks."""

import pytest
import torch

from models import ContrastiveLoss, ModelConfig
from models.prompted_text import PromptedTextEncoder
from models.prompted_video import PromptedVideoEncoder
from tests.conftest import FRAMES, TINY, text_batch, tiny_model, video_batch


def layer_inputs(blocks, run):
    """The input of every block's ln_1 (= the block's input sequence) while `run()` executes."""
    captured = {}
    handles = [block.ln_1.register_forward_pre_hook(lambda m, args, i=i: captured.setdefault(i, args[0].clone()))
               for i, block in enumerate(blocks)]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return captured


def test_encoders_without_prompts_equal_plain_clip():
    model = tiny_model(prompt="none")
    clip = model.clip
    video, video_mask = video_batch()
    ids = text_batch()
    bare = ModelConfig(text_prompt_length=0, local_each_frame_prompt_length=0, global_visual_prompt_length=0,
                       visual_output_type="average_frame_cls_token", temporal_prompt="none", lora=False)
    text = PromptedTextEncoder(TINY.transformer_width, TINY.transformer_layers, bare)
    frames = PromptedVideoEncoder(clip.visual, bare)
    layers = TINY.vision_layers
    with torch.no_grad():
        torch.testing.assert_close(text(clip, ids, torch.zeros(layers, 0, TINY.transformer_width)),
                                   clip.encode_text(ids), rtol=1e-5, atol=1e-6)
        per_frame = clip.encode_image(video.flatten(0, 1)).view(2, FRAMES, -1)
        torch.testing.assert_close(frames(clip.visual, video, torch.zeros(layers, 0, TINY.vision_width)),
                                   per_frame.mean(dim=1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.encode_text(ids), clip.encode_text(ids), rtol=0, atol=0)
        normalised = per_frame / per_frame.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(model.encode_video(video, video_mask), normalised.mean(dim=1))


def test_mean_pooling_ignores_padding_frames():
    model = tiny_model(prompt="none")
    video, video_mask = video_batch()
    video_mask[0, 1:] = 0
    with torch.no_grad():
        features = model.encode_video(video, video_mask)
        first = model.clip.encode_image(video[0, :1])
        video[0, 1:] = torch.randn_like(video[0, 1:])
        torch.testing.assert_close(model.encode_video(video, video_mask), features)
    torch.testing.assert_close(features[0], (first / first.norm())[0])


def test_text_token_layout():
    model = tiny_model()
    ids = text_batch()
    text_prompts = model.prompts(FRAMES).text
    inputs = layer_inputs(model.clip.transformer.resblocks, lambda: model.encode_text(ids))
    words = model.clip.token_embedding(ids) + model.clip.positional_embedding[:ids.shape[1]]
    k = 4
    for layer in range(TINY.transformer_layers):
        x = inputs[layer]
        assert x.shape == (2, ids.shape[1] + 8, TINY.transformer_width)
        torch.testing.assert_close(x[:, 1:1 + k], text_prompts[layer, :k].expand(2, -1, -1), rtol=0, atol=0)
        torch.testing.assert_close(x[:, -4:], text_prompts[layer, k:].expand(2, -1, -1), rtol=0, atol=0)
    torch.testing.assert_close(inputs[0][:, :1], words[:, :1], rtol=0, atol=0)
    torch.testing.assert_close(inputs[0][:, 1 + k:-4], words[:, 1:], rtol=0, atol=0)
    assert (inputs[1][:, 1 + k:-4] - words[:, 1:]).abs().max() > 1e-2  # words carried through block 0


@pytest.mark.parametrize("temporal_prompt", ["none", "stop"])
def test_video_token_layout(temporal_prompt):
    """Layer inputs: [globals, per frame (CLS, local prompts of the frame (+ inter-frame prompt), patches)];
    local slots refreshed before every block, globals carried."""
    model = tiny_model(temporal_prompt=temporal_prompt, local_each_frame_prompt_length=2,
                       global_visual_prompt_length=3)
    encoder, visual = model.video_encoder, model.clip.visual
    video, video_mask = video_batch()
    inputs = layer_inputs(visual.transformer.resblocks, lambda: model.encode_video(video, video_mask))
    with torch.no_grad():
        local = model.prompts(FRAMES).visual.view(TINY.vision_layers, 1, FRAMES, 2, -1)
        frames, mask = encoder.spatial_prompt(video) if encoder.spatial_prompt else (video, None)
        tokens = visual.embed(frames.flatten(0, 1)).view(2, FRAMES, 1 + visual.grid_size ** 2, -1)
        if encoder.temporal_prompt:
            local = local + encoder.temporal_prompt(tokens, mask)[0].view(1, 2, FRAMES, 2, -1)
    n = visual.grid_size ** 2
    for layer in range(TINY.vision_layers):
        x = inputs[layer]
        assert x.shape == (2, 3 + FRAMES * (1 + 2 + n), TINY.vision_width)
        per_frame = x[:, 3:].view(2, FRAMES, 1 + 2 + n, -1)
        torch.testing.assert_close(per_frame[:, :, 1:3], local[layer].expand(2, -1, -1, -1), rtol=0, atol=0)
    first = inputs[0][:, 3:].view(2, FRAMES, 1 + 2 + n, -1)
    torch.testing.assert_close(inputs[0][:, :3], encoder.global_prompts.expand(2, -1, -1), rtol=0, atol=0)
    torch.testing.assert_close(first[:, :, 0], tokens[:, :, 0], rtol=0, atol=0)
    torch.testing.assert_close(first[:, :, 3:], tokens[:, :, 1:], rtol=0, atol=0)
    assert (inputs[1][:, :3] - inputs[0][:, :3]).abs().max() > 1e-2  # globals carried, not reset


# Float32 rounding: batched kernels (oneDNN's Conv3d, the FFT convolutions' per-frequency products over videos,
# the matmuls) block their work by batch size, so a video alone and in a batch of 3 differ by rounding: measured
# up to 1.7e-6 on an AMD EPYC with direct convolutions (features of magnitude ~0.2), ~2e-6 with FFT.
@pytest.mark.parametrize("latent,conv_impl,atol", [("transformer", "direct", 1e-5), ("linear", "direct", 1e-5),
                                                    ("transformer", "auto", 1e-5)])
def test_a_video_embedding_does_not_depend_on_the_batch(latent, conv_impl, atol):
    model = tiny_model(shared_latent_space=latent, conv_impl=conv_impl)
    video, video_mask = video_batch(batch=3)
    others, _ = video_batch(batch=3, seed=7)
    ids, other_ids = text_batch(lengths=(3, 8, 5)), text_batch(lengths=(3, 2, 6), seed=9)
    with torch.no_grad():
        alone = model.encode_video(video[:1], video_mask[:1])
        together = model.encode_video(video, video_mask)
        mixed = model.encode_video(torch.cat([video[:1], others[1:]]), video_mask)
        text_alone = model.encode_text(ids[:1])
        text_mixed = model.encode_text(torch.cat([ids[:1], other_ids[1:]]))
    torch.testing.assert_close(together[:1], alone, rtol=0, atol=atol)
    torch.testing.assert_close(mixed[:1], alone, rtol=0, atol=atol)
    torch.testing.assert_close(text_mixed[:1], text_alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("video_kind", ["identical_frames", "all_zero", "single_frame"])
def test_degenerate_videos_give_finite_features_and_gradients(video_kind):
    frames = 1 if video_kind == "single_frame" else FRAMES
    model = tiny_model(max_frames=frames).train()
    video, video_mask = video_batch(frames=frames)
    if video_kind == "identical_frames":
        video = video[:, :1].expand_as(video).contiguous()
    elif video_kind == "all_zero":
        video = torch.zeros_like(video)
    with torch.no_grad():
        features, details = model.encode_video(video, video_mask, return_details=True)
    assert torch.isfinite(features).all() and torch.isfinite(details.frame_weights).all()
    loss = ContrastiveLoss()(*model(text_batch(), video, video_mask))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for _, p in model.named_trainable_parameters() if p.grad is not None)


def test_frame_order_matters_to_stop_but_not_to_meanp():
    video, video_mask = video_batch(frames=4)
    reversed_video = video.flip(1)
    with torch.no_grad():
        stop = tiny_model(max_frames=4)
        forward, backward = stop.encode_video(video, video_mask), stop.encode_video(reversed_video, video_mask)
        meanp = tiny_model(prompt="none")
        mean_forward = meanp.encode_video(video, video_mask)
        mean_backward = meanp.encode_video(reversed_video, video_mask)
    assert (forward - backward).abs().max() > 1e-3
    torch.testing.assert_close(mean_forward, mean_backward, rtol=0, atol=1e-6)


def test_details_give_the_region_mask_and_normalised_frame_weights():
    model = tiny_model()
    video, video_mask = video_batch()
    with torch.no_grad():
        features, details = model.encode_video(video, video_mask, return_details=True)
        torch.testing.assert_close(model.encode_video(video, video_mask), features, rtol=0, atol=0)
    g = model.clip.visual.grid_size
    assert details.region_mask.shape == (2, FRAMES, g, g) and details.region_mask.dtype == torch.bool
    assert torch.equal(details.frame_weights.amin(dim=1), torch.zeros(2))
    assert torch.equal(details.frame_weights.amax(dim=1), torch.ones(2))
    pixels = model.video_encoder.spatial_prompt.mask_to_pixels(details.region_mask)
    assert pixels.shape == (2, FRAMES, TINY.image_resolution, TINY.image_resolution)


def test_bad_inputs_are_rejected_with_clear_messages():
    model = tiny_model()
    video, video_mask = video_batch()
    with pytest.raises(ValueError, match=r"video must be \[B, T, 3, 24, 24\]"):
        model.encode_video(video[..., :16, :16], video_mask)
    with pytest.raises(ValueError, match="video_mask must be"):
        model.encode_video(video, video_mask[:, :2])
    with pytest.raises(ValueError, match="built for 3 frames"):
        model.encode_video(*video_batch(frames=4))
    with pytest.raises(ValueError, match="matching pairs"):
        ContrastiveLoss()(torch.randn(2, 4), torch.randn(3, 4), torch.tensor(1.0))
    linear = tiny_model(shared_latent_space="linear")  # shares its prompts across frames: any T works
    assert linear.encode_video(*video_batch(frames=5)).shape == (2, TINY.embed_dim)
