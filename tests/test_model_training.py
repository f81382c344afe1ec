"""Training behaviour: the frozen/trainable split, gradient flow, the loss, and the work done per forward
(prompts generated once, attention and convolutions batched over videos and frames)."""

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

import models.spatial_prompt
import models.temporal_prompt
from models import ContrastiveLoss, cosine_similarity
from tests.conftest import TINY, text_batch, tiny_model, video_batch

# Trainable tensors that receive no gradient, by design (docs/MODEL.md, "Gradient flow").
NO_GRADIENT = {
    "transformer": {"video_encoder.spatial_prompt.score_conv.weight", "video_encoder.spatial_prompt.score_conv.bias"},
    "linear": {"video_encoder.spatial_prompt.score_conv.weight", "video_encoder.spatial_prompt.score_conv.bias",
               "prompt_generator.postfix_proj.weight", "prompt_generator.postfix_proj.bias"},
}


@pytest.mark.parametrize("latent", ["transformer", "linear"])
def test_a_training_step_changes_only_trainable_tensors(latent):
    model = tiny_model(shared_latent_space=latent).train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = dict(model.named_trainable_parameters())
    assert trainable and all(not name.startswith("clip.") for name in trainable)
    assert all(not p.requires_grad for name, p in model.named_parameters() if name.startswith("clip."))
    optimizer = torch.optim.AdamW([p for p in trainable.values()], lr=1e-2, weight_decay=0.0)
    video, video_mask = video_batch()
    ContrastiveLoss()(*model(text_batch(), video, video_mask)).backward()
    optimizer.step()

    silent = {name for name, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0}
    assert silent == NO_GRADIENT[latent]
    for name, p in model.named_parameters():
        if name.startswith("clip."):
            assert p.grad is None and torch.equal(p, before[name]), name
        elif name in silent:
            assert torch.equal(p, before[name]), name
        else:
            assert not torch.equal(p, before[name]), name


def test_the_spatial_prompt_dropout_is_active_only_in_training():
    model = tiny_model()
    video, video_mask = video_batch()
    with torch.no_grad():
        model.eval()
        assert torch.equal(model.encode_video(video, video_mask), model.encode_video(video, video_mask))
        model.train()
        assert not torch.equal(model.encode_video(video, video_mask), model.encode_video(video, video_mask))


def test_loss_is_symmetric_infonce_on_cosine_times_exp_logit_scale():
    model = tiny_model()
    torch.manual_seed(3)
    text, video = torch.randn(4, 8), torch.randn(4, 8)
    cosine = torch.tensor([[float(t @ v / (t.norm() * v.norm())) for v in video] for t in text])
    torch.testing.assert_close(cosine_similarity(text, video), cosine)
    logits = model.clip.logit_scale.exp() * cosine
    t2v = -torch.stack([logits[i].log_softmax(0)[i] for i in range(4)]).mean()
    v2t = -torch.stack([logits[:, i].log_softmax(0)[i] for i in range(4)]).mean()
    torch.testing.assert_close(ContrastiveLoss()(text, video, model.clip.logit_scale.exp()), (t2v + v2t) / 2)


def test_forward_gives_the_encoders_features_and_the_logit_scale():
    model = tiny_model()
    video, video_mask = video_batch()
    ids = text_batch()
    with torch.no_grad():
        text, videos, scale = model(ids, video, video_mask)
        torch.testing.assert_close(text, model.encode_text(ids), rtol=0, atol=0)
        torch.testing.assert_close(videos, model.encode_video(video, video_mask), rtol=0, atol=0)
        assert scale == model.clip.logit_scale.exp()


def count_calls(model, *inputs):
    """Calls made by model(*inputs): attention kernels, Conv3d forwards, patch embeddings, prompt generations."""
    sdpa = mock.patch.object(F, "scaled_dot_product_attention", wraps=F.scaled_dot_product_attention)
    conv, chain = models.spatial_prompt.apply_conv3d, models.spatial_prompt.apply_conv3d_chain
    patches = [mock.patch.object(module, name, wraps=function) for module in (models.spatial_prompt,
               models.temporal_prompt) for name, function in (("apply_conv3d", conv), ("apply_conv3d_chain", chain))]
    embed = mock.patch.object(model.clip.visual, "embed", wraps=model.clip.visual.embed)
    generated = []
    handle = model.prompt_generator.register_forward_hook(lambda *_: generated.append(1))
    with sdpa as attention_calls, embed as embed_calls, torch.no_grad():
        with patches[0] as s, patches[1] as s_chain, patches[2] as t, patches[3] as t_chain:
            model(*inputs)
    handle.remove()
    chained = sum(isinstance(layer, torch.nn.Conv3d) for mocked in (s_chain, t_chain)
                  for call in mocked.call_args_list for layer in call.args[0])
    return {"attention": attention_calls.call_count, "conv3d": s.call_count + t.call_count + chained,
            "embed": embed_calls.call_count, "prompt_generator": len(generated)}


@pytest.mark.parametrize("latent", ["transformer", "linear"])
def test_work_per_forward_does_not_grow_with_videos_or_frames(latent):
    """Two attention calls per visual block but the last (the readout of global prompt 0: one), + the inter-frame
    one, one per text block (+ one in the prompt transformer), 5 + 3 convolutions, one patch embedding and one
    prompt generation per forward, whatever the batch size and the frame count."""
    counts = []
    for batch, t in ((1, 3), (2, 5)):
        model = tiny_model(shared_latent_space=latent, max_frames=t)
        video, video_mask = video_batch(batch=batch, frames=t)
        ids = text_batch(lengths=(3, 8)[:batch])
        counts.append(count_calls(model, ids, video, video_mask))
    attention = 2 * TINY.vision_layers - 1 + 1 + TINY.transformer_layers + (latent == "transformer")
    expected = {"attention": attention, "conv3d": 8, "embed": 1, "prompt_generator": 1}
    assert counts == [expected, expected]
