"""The batched STOP / DGL encoders against a plain reference written from MODEL.md sections 2-5.

The reference follows the released implementation's structure, not ours: sequence-first nn.MultiheadAttention
with an explicit [L, L] mask per video, the released token-major layout (token j of frame t at Pg + j*T + t),
per-cell loops for the region scores, the released expression order.
"""

import dataclasses

import pytest
import torch

from models.prompted_video import VideoDetails
from models.video_text_model import VideoTextModel
from tests.conftest import FRAMES, TINY, text_batch, tiny_model, video_batch


def reference_block(block, adapter, x, attn_mask):
    """Released block on seq-first x [L, N, D]: attention, then x + mlp(ln_2 x) + 0.1 * LoRA(x)."""
    h = block.ln_1(x)
    x = x + block.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
    out = x + block.mlp(block.ln_2(x))
    return out if adapter is None else out + 0.1 * adapter.up(adapter.act(adapter.down(x)))


def reference_text(model: VideoTextModel, ids: torch.Tensor) -> torch.Tensor:
    clip, encoder = model.clip, model.text_encoder
    prompts = model.prompts(model.config.max_frames).text
    b, lw = ids.shape
    pt = prompts.shape[1]
    k = pt // 2
    x = clip.token_embedding(ids) + clip.positional_embedding[:lw]
    x = torch.cat([x[:, :1], prompts[0, :k].expand(b, -1, -1), x[:, 1:], prompts[0, k:].expand(b, -1, -1)], 1)
    prompt_token = torch.zeros(b, lw + pt)
    prompt_token[:, 0] = ids[:, 0]
    prompt_token[:, k + 1:k + lw] = ids[:, 1:]
    mask = torch.full((lw + pt, lw + pt), float("-inf")).triu(1)
    x = x.permute(1, 0, 2)
    for i, block in enumerate(clip.transformer.resblocks):
        if 0 < i < len(prompts):
            x = torch.cat([x[:1], prompts[i, :k, None].expand(-1, b, -1), x[k + 1:k + lw],
                           prompts[i, k:, None].expand(-1, b, -1)])
        x = reference_block(block, encoder.adapters[i] if len(encoder.adapters) else None, x, mask)
    hidden = clip.ln_final(x.permute(1, 0, 2)) @ clip.text_projection
    return hidden[torch.arange(b), prompt_token.argmax(dim=-1)]


def reference_region_mask(spatial, video):
    """Cell scores by explicit loops over the cells; keep cells > the 7th largest. -> bool [B, T, g, g]."""
    score = spatial.score_conv(video.permute(0, 2, 1, 3, 4)).squeeze(1)
    g, p = spatial.grid_size, spatial.patch_size
    cells = torch.zeros(*score.shape[:2], g, g)
    for i in range(g):
        for j in range(g):
            if spatial.cell_layout == "patch":
                cells[:, :, i, j] = score[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].mean(dim=(-1, -2))
            else:
                cells[:, :, i, j] = score[:, :, i::g, j::g].mean(dim=(-1, -2))
    bar = cells.flatten(2).sort(dim=2, descending=True).values[:, :, 6]
    return cells > bar[:, :, None, None]


def reference_pixel_mask(spatial, mask):
    rows = torch.arange(spatial.grid_size * spatial.patch_size)
    rows = rows // spatial.patch_size if spatial.cell_layout == "patch" else rows % spatial.grid_size
    return mask[:, :, rows][:, :, :, rows]


def reference_video(model: VideoTextModel, video: torch.Tensor):
    """-> (features [B, E], region mask or None, frame weights or None), eval mode."""
    visual, encoder = model.clip.visual, model.video_encoder
    b, t = video.shape[:2]
    width, pl, pg = visual.width, encoder.local_length, encoder.global_length
    local = model.prompts(t).visual[:, None].expand(-1, b, -1, -1)  # [Lp, B, T*Pl, W]
    mask = weights = None
    if encoder.spatial_prompt is not None:
        sp = encoder.spatial_prompt
        x = video.permute(0, 2, 1, 3, 4)
        prompt = sp.conv4(sp.act3(sp.conv3(sp.act2(sp.conv2(sp.conv1(x))))))
        prompt = sp.mlp(prompt.permute(0, 2, 3, 4, 1)).permute(0, 1, 4, 2, 3)
        mask = reference_region_mask(sp, video)
        video = video + prompt * 0.05 + prompt * reference_pixel_mask(sp, mask)[:, :, None] * 0.05
    x = visual.conv1(video.flatten(0, 1)).flatten(2).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding + torch.zeros(x.shape[0], 1, width), x], dim=1)
    tokens = visual.ln_pre(x + visual.positional_embedding)  # [B*T, 1 + N, W]
    n = tokens.shape[1] - 1
    if encoder.temporal_prompt is not None:
        tp = encoder.temporal_prompt
        z = tokens.reshape(b, t, n + 1, width)[:, :, 1:].reshape(b, t * n, width).permute(1, 0, 2)
        z = tp.attention(z, z, z)[0].permute(1, 0, 2).reshape(b, t, n, width).unsqueeze(1)
        response = tp.weight_conv(z).squeeze(1)
        response = response + response * mask.reshape(b, t, -1).unsqueeze(3)
        weights = response.mean(dim=(2, 3))
        weights = (weights - weights.min(1, keepdim=True)[0]) / (weights.max(1, keepdim=True)[0]
                                                                 - weights.min(1, keepdim=True)[0])
        y = tp.mlp(tp.conv2(tp.act1(tp.conv1(z))).squeeze(1).permute(0, 1, 3, 2)).permute(0, 1, 3, 2)
        y = y + y * weights[:, :, None, None]
        local = local + (y.reshape(b, -1, width) * 0.05)[None]
    s = 1 + pl + n
    length = pg + t * s
    frame_of = torch.tensor([-1] * pg + [pos % t for pos in range(t * s)])  # token-major: pos = j * T + t
    blocked = (frame_of[:, None] >= 0) & (frame_of[None, :] >= 0) & (frame_of[:, None] != frame_of[None, :])
    features = []
    for v in range(b):
        frames = tokens.reshape(b, t, n + 1, width)[v]
        frames = torch.cat([frames[:, :1], local[0, v].reshape(t, pl, width), frames[:, 1:]], dim=1)  # [T, S, W]
        x = torch.cat([encoder.global_prompts, frames.transpose(0, 1).reshape(t * s, width)])[:, None]
        assert x.shape[0] == length
        for i, block in enumerate(visual.transformer.resblocks):
            if 0 < i < len(local):
                slots = x[pg:].reshape(s, t, 1, width).clone()
                slots[1:1 + pl] = local[i, v].reshape(t, pl, 1, width).transpose(0, 1)
                x = torch.cat([x[:pg], slots.reshape(s * t, 1, width)])
            x = reference_block(block, encoder.adapters[i] if len(encoder.adapters) else None, x, blocked)
        hidden = visual.ln_post(x[:, 0]) @ visual.proj  # [L, E]
        cls = hidden[pg:pg + t]
        features.append({"global_prompt0": hidden[:1], "average_global_prompt": hidden[:pg],
                         "average_frame_cls_token": cls,
                         "average_global_prompt_and_frame_cls_token": torch.cat([hidden[:pg], cls])}
                        [model.config.visual_output_type].mean(dim=0))
    return torch.stack(features), mask, weights


VARIANTS = [
    dict(),
    dict(shared_latent_space="linear", spatial_mask_grid="lattice",
         visual_output_type="average_global_prompt_and_frame_cls_token"),
    dict(temporal_prompt="none", visual_output_type="average_frame_cls_token", lora=False),
    dict(shared_latent_space="linear", temporal_prompt="none", visual_output_type="average_global_prompt"),
    dict(unified_transformer_layers=2, local_each_frame_prompt_length=2, global_visual_prompt_length=3,
         text_prompt_length=5),
    dict(shared_latent_space="linear", local_each_frame_prompt_length=2, global_visual_prompt_length=1,
         text_prompt_length=4, unified_transformer_layers=1),
    dict(unified_transformer_layers=1, visual_prompt_layers=3),
]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "stop")
def test_encoders_match_the_reference(options):
    model = tiny_model(**options)
    video, video_mask = video_batch()
    ids = text_batch()
    with torch.no_grad():
        features, details = model.encode_video(video, video_mask, return_details=True)
        expected, mask, weights = reference_video(model, video)
        torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.encode_text(ids), reference_text(model, ids), rtol=1e-5, atol=1e-5)
    if model.config.uses_stop:
        assert torch.equal(details.region_mask, mask)
        assert (details.region_mask.flatten(2).sum(-1) == 6).all()  # top 6 of 9 cells, random scores: no ties
        torch.testing.assert_close(details.frame_weights, weights)
    else:
        assert details == VideoDetails()


@pytest.mark.parametrize("latent", ["transformer", "linear"])
def test_a_deeper_visual_encoder_gets_fresh_prompts_in_every_layer(latent):
    """ViT-L/14's shape in small (4 visual, 2 text layers): local prompts for all 4 visual layers, text prompts for
    2; the encoders match the reference, and the last visual layer's slice of the latent space moves the video
    features only."""
    model = tiny_model(config=dataclasses.replace(TINY, vision_layers=4, transformer_layers=2),
                       shared_latent_space=latent)
    video, video_mask = video_batch()
    ids = text_batch()
    generator = model.prompt_generator
    table = generator.embedding.weight if latent == "transformer" else generator.visual_embedding
    with torch.no_grad():
        assert (len(model.prompts(FRAMES).visual), len(model.prompts(FRAMES).text)) == (4, 2)
        features, text = model.encode_video(video, video_mask), model.encode_text(ids)
        torch.testing.assert_close(features, reference_video(model, video)[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(text, reference_text(model, ids), rtol=1e-5, atol=1e-5)
        width = TINY.vision_width
        table[:, 3 * width:].add_(torch.randn_like(table[:, 3 * width:]))  # layer 3 of the latent space
        assert (model.encode_video(video, video_mask) - features).abs().max() > 1e-3
        torch.testing.assert_close(model.encode_text(ids), text, rtol=0, atol=0)


def test_the_stop_modules_change_the_features():
    """Guards the reference test against prompts too small to matter: STOP's spatial and temporal prompts and
    the lattice layout each move the features far beyond the tolerance used above."""
    video, video_mask = video_batch()
    with torch.no_grad():
        stop = tiny_model().encode_video(video, video_mask)
        lattice = tiny_model(spatial_mask_grid="lattice").encode_video(video, video_mask)
        dgl = tiny_model(temporal_prompt="none").encode_video(video, video_mask)
    assert (stop - dgl).abs().max() > 1e-3
    assert (stop - lattice).abs().max() > 1e-5


def test_postfix_text_prompts_do_not_change_the_text_feature():
    model = tiny_model(shared_latent_space="linear")
    ids = text_batch()
    with torch.no_grad():
        before = model.encode_text(ids)
        model.prompt_generator.postfix_proj.bias.add_(torch.randn(TINY.transformer_width))
        after = model.encode_text(ids)
        model.prompt_generator.prefix_proj.bias.add_(torch.randn(TINY.transformer_width))
        changed = model.encode_text(ids)
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    assert (changed - before).abs().max() > 1e-3


def test_zero_spread_frame_weights_are_zero_where_the_reference_is_nan():
    model = tiny_model(max_frames=1)
    video, video_mask = video_batch(frames=1)
    with torch.no_grad():
        features, details = model.encode_video(video, video_mask, return_details=True)
        _, _, weights = reference_video(model, video)
    assert torch.isnan(weights).all()  # the released formula divides 0 by 0
    assert torch.equal(details.frame_weights, torch.zeros(2, 1)) and torch.isfinite(features).all()


def test_global_local_attention_equals_per_frame_attention_calls():
    """The batched pattern against models.clip.attention called frame by frame and video by video."""
    from models.clip import attention
    from models.prompted_video import global_local_attention

    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(128, 2)
    b, g, t, s = 2, 3, 4, 5
    x = torch.randn(b, g + t * s, 128)
    with torch.no_grad():
        out = global_local_attention(attn, x, g, t)
        for v in range(b):
            glob = x[v:v + 1, :g]
            torch.testing.assert_close(out[v:v + 1, :g], attention(attn, glob, x[v:v + 1]))
            for f in range(t):
                frame = x[v:v + 1, g + f * s:g + (f + 1) * s]
                torch.testing.assert_close(out[v:v + 1, g + f * s:g + (f + 1) * s],
                                           attention(attn, frame, torch.cat([glob, frame], dim=1)))
        torch.testing.assert_close(global_local_attention(attn, x[:, g:], 0, t).unflatten(1, (t, s)),
                                   attention(attn, x[:, g:].reshape(b * t, s, 128)).view(b, t, s, 128))


def test_frame_tokens_see_only_their_frame_and_the_globals():
    """One attention: changing frame 1 leaves frame 0's outputs as they are and changes the globals';
    changing a global changes every frame."""
    from models.prompted_video import global_local_attention

    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(64, 1)
    g, t, s = 2, 3, 4
    x = torch.randn(1, g + t * s, 64)
    frame = [slice(g + f * s, g + (f + 1) * s) for f in range(t)]
    with torch.no_grad():
        out = global_local_attention(attn, x, g, t)
        other_frame = x.clone()
        other_frame[:, frame[1]] += torch.randn(s, 64)
        changed = global_local_attention(attn, other_frame, g, t)
        other_global = x.clone()
        other_global[:, 0] += torch.randn(64)
        changed_global = global_local_attention(attn, other_global, g, t)
    torch.testing.assert_close(changed[:, frame[0]], out[:, frame[0]], rtol=0, atol=1e-6)
    torch.testing.assert_close(changed[:, frame[2]], out[:, frame[2]], rtol=0, atol=1e-6)
    assert (changed[:, :g] - out[:, :g]).abs().min() > 0
    assert (changed[:, frame[1]] - out[:, frame[1]]).abs().max() > 1e-3
    for f in range(t):
        assert (changed_global[:, frame[f]] - out[:, frame[f]]).abs().max() > 1e-3
