"""The paper's token-space STOP building blocks (models/paper_prompt.py, the slot layout and masked attention of
models/prompted_video.py; docs/PAPER_STOP.md), each piece against a direct computation, on the tiny CLIP and at
ViT-B/32 sizes. The whole encoder: tests/test_paper_stop.py."""

import math

import pytest
import torch
import torch.nn.functional as F

from models import ModelConfig
from models.adapter import Adapter
from models.clip import CLIP, CLIPConfig, ResidualAttentionBlock, attention
from models.paper_prompt import PaperSpatialPrompt, PaperTemporalPrompt, cls_patch_attention, insertion_slots
from models.prompted_video import global_local_attention, lay_out, prompted_block, readout_block

WIDTH, GRID = 64, 4  # the tiny CLIP's
N = GRID * GRID


def moving_tokens(batch, frames, scales, width=WIDTH, patches=N, seed=0):
    """Tokens [B, T, 1 + N, W] whose frame t+1 = frame t + scales[t] * noise (scales[t] = 0: a static gap)."""
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(batch, 1, 1 + patches, width, generator=g)
    steps = [torch.randn(batch, 1, 1 + patches, width, generator=g) * s for s in scales]
    return torch.cat([first, first + torch.cumsum(torch.cat(steps, dim=1), dim=1)], dim=1)


def build(config=None, width=WIDTH, grid=GRID, conv_impl="direct", seed=0):
    torch.manual_seed(seed)
    config = (config or ModelConfig()).replace(conv_impl=conv_impl, temporal_prompt="paper")
    return PaperSpatialPrompt(width, grid, config), PaperTemporalPrompt(width, grid, config)


def layout_tokens(global_prompts, tokens, local, inserted, slot_mask):
    """(x, key mask, layout) of the encoder's token sequence with the inserted slots."""
    slots, used = insertion_slots(inserted, slot_mask)
    x, layout = lay_out(global_prompts, tokens, local, slots)
    return x, layout.key_mask(used), layout


def random_attention(batch, frames, patches=N, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, patches, generator=g).softmax(dim=-1)


@pytest.mark.parametrize("field, value", [
    ("alpha", 1.5), ("beta", -1.0), ("eta", 0.0), ("eta", math.inf), ("top_k", 0), ("cap", 0), ("kernel", (3, 2, 3)),
    ("kernel", (3, 3)), ("channels", 0), ("score_channels", 0), ("mlp_hidden", 0), ("slot_hidden", 0),
    ("attention_layer", -1), ("spatial_scale", math.inf), ("temporal_scale", math.nan),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"--paper_{field}"):
        ModelConfig(**{f"paper_{field}": value})


def test_modules_reject_sizes_that_do_not_fit_the_vit():
    with pytest.raises(ValueError, match="--paper_top_k 5: more than the 4 patches"):
        PaperSpatialPrompt(WIDTH, 2, ModelConfig(paper_top_k=5))


def test_cls_patch_attention_is_the_blocks_head_averaged_attention_renormalised_over_patches():
    torch.manual_seed(0)
    block = ResidualAttentionBlock(WIDTH, 4)
    x = torch.randn(6, 1 + N, WIDTH)
    result = cls_patch_attention(block, x)
    y = block.ln_1(x).transpose(0, 1)
    _, weights = block.attn(y, y, y, need_weights=True, average_attn_weights=True)  # [B*T, 1 + N, 1 + N]
    expected = weights[:, 0, 1:] / weights[:, 0, 1:].sum(dim=-1, keepdim=True)
    assert result.shape == (6, N) and not result.requires_grad
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.sum(dim=-1), torch.ones(6))


def test_shapes_on_the_tiny_clip():
    clip = CLIP(CLIPConfig.tiny()).eval()
    video = torch.randn(2, 5, 3, 32, 32)
    tokens = clip.visual.embed(video.flatten(0, 1)).unflatten(0, (2, 5))
    a = cls_patch_attention(clip.visual.transformer.resblocks[0], tokens.flatten(0, 1)).unflatten(0, (2, 5))
    spatial, temporal = build()
    prompted, selected = spatial(tokens, a)
    inserted, slot_mask, counts = temporal(tokens, selected)
    assert prompted.shape == tokens.shape and selected.shape == (2, 5, N) and selected.dtype == torch.bool
    assert inserted.shape == (2, 4, 4, WIDTH) and slot_mask.shape == (2, 4, 4) and counts.shape == (2, 4)
    assert counts.dtype == torch.int64 and (selected.sum(dim=-1) == 6).all()
    single = temporal(tokens[:, :1], selected[:, :1])
    assert [tuple(s.shape) for s in single] == [(2, 0, 4, WIDTH), (2, 0, 4), (2, 0)]


def test_shapes_at_vit_b32_sizes():
    width, grid, t = 768, 7, 3
    torch.manual_seed(0)
    block = ResidualAttentionBlock(width, width // 64)
    spatial, temporal = build(width=width, grid=grid)
    tokens = moving_tokens(1, t, [0.3] * (t - 1), width=width, patches=grid * grid)
    with torch.no_grad():
        a = cls_patch_attention(block, tokens.flatten(0, 1)).unflatten(0, (1, t))
        prompted, selected = spatial(tokens, a)
        inserted, slot_mask, counts = temporal(tokens, selected)
        x, key_mask, layout = layout_tokens(torch.zeros(1, 4, width), prompted, torch.zeros(1, t, 4, width),
                                            inserted, slot_mask)
        out = global_local_attention(block.attn, block.ln_1(x), 4, t, key_mask)
    assert a.shape == (1, t, 49) and prompted.shape == (1, t, 50, width) and selected.shape == (1, t, 49)
    assert inserted.shape == (1, t - 1, 4, width) and slot_mask.shape == (1, t - 1, 4) and counts.shape == (1, t - 1)
    assert x.shape == out.shape == (1, 4 + t * (4 + 1 + 4 + 49), width) and key_mask.shape == x.shape[:2]
    assert layout.frame_cls(out).shape == (1, t, width)


def test_parameter_counts_at_vit_b32_sizes():
    """The numbers quoted in docs/PAPER_STOP.md (independent of the number of frames)."""
    spatial, temporal = build(width=768, grid=7)
    counts = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in (spatial, temporal)]
    print(f"PaperSpatialPrompt {counts[0]:,}, PaperTemporalPrompt {counts[1]:,}, together {sum(counts):,}")
    assert counts == [855_874, 3_218_054]


def test_top_k_selection_matches_a_direct_computation():
    spatial, _ = build()
    tokens = moving_tokens(2, 3, [0.5, 0.5])
    a = random_attention(2, 3)
    _, selected = spatial(tokens, a)
    volume = tokens[:, :, 1:].reshape(2, 3, GRID, GRID, WIDTH).permute(0, 4, 1, 2, 3)
    energy = F.conv3d(volume, spatial.score_conv.weight, padding=1).square().mean(dim=1).flatten(2)  # [B, T, N]
    for b in range(2):
        for t in range(3):
            def minmax(v):
                return (v - v.min()) / (v.max() - v.min())
            score = 0.5 * minmax(a[b, t]) + 0.5 * minmax(energy[b, t])
            best = sorted(range(N), key=lambda j: (-score[j].item(), j))[:6]
            assert selected[b, t].nonzero().flatten().tolist() == sorted(best)


def test_ties_go_to_the_lower_patch_index():
    spatial, _ = build(ModelConfig(paper_alpha=1.0, paper_top_k=3))
    _, selected = spatial(moving_tokens(1, 2, [0.5]), torch.full((1, 2, N), 1.0 / N))
    assert (selected.nonzero()[:, 2].view(2, 3) == torch.tensor([0, 1, 2])).all()


def test_only_selected_patches_change_by_the_prompt_and_cls_is_untouched():
    spatial, _ = build()
    tokens = moving_tokens(2, 4, [0.5, 0.1, 0.0])
    prompted, selected = spatial(tokens, random_attention(2, 4))
    assert torch.equal(prompted[:, :, 0], tokens[:, :, 0])
    keep = ~selected
    assert torch.equal(prompted[:, :, 1:][keep], tokens[:, :, 1:][keep])
    volume = tokens[:, :, 1:].reshape(2, 4, GRID, GRID, WIDTH).permute(0, 4, 1, 2, 3)
    hidden = spatial.act(F.conv3d(volume, spatial.conv.weight, spatial.conv.bias, padding=1))
    prompt = spatial.mlp(hidden.permute(0, 2, 3, 4, 1).flatten(2, 3)) * 0.05
    torch.testing.assert_close(prompted[:, :, 1:][selected], (tokens[:, :, 1:] + prompt)[selected])
    assert not torch.equal(prompted[:, :, 1:][selected], tokens[:, :, 1:][selected])


def loop_strength(temporal, tokens, selected):
    """W^t [B, T-1] by explicit loops over videos, gaps, patches and kernel taps."""
    weight, beta = temporal.score_conv.weight, temporal.beta  # [C, W, kd, kh, kw]
    b, t, _, width = tokens.shape
    kd, kh, kw = weight.shape[2:]
    out = torch.zeros(b, t - 1)
    for v in range(b):
        grid = tokens[v, :, 1:].reshape(t, GRID, GRID, width)
        diff = grid[1:] - grid[:-1]
        for i in range(t - 1):
            total = 0.0
            for y in range(GRID):
                for x in range(GRID):
                    response = torch.zeros(weight.shape[0])
                    for dt in range(kd):
                        for dy in range(kh):
                            for dx in range(kw):
                                ii, yy, xx = i + dt - kd // 2, y + dy - kh // 2, x + dx - kw // 2
                                if 0 <= ii < t - 1 and 0 <= yy < GRID and 0 <= xx < GRID:
                                    response += weight[:, :, dt, dy, dx] @ diff[ii, yy, xx]
                    total += (1 + beta * float(selected[v, i + 1, y * GRID + x])) * response.square().mean()
            out[v, i] = total / (GRID * GRID)
    return out


def test_counts_equal_min_cap_ceil_eta_w_against_a_loop_recomputation():
    config = ModelConfig(paper_eta=6.0)
    spatial, temporal = build(config)
    tokens = moving_tokens(2, 6, [0.0, 0.0, 0.05, 0.3, 2.0])
    with torch.no_grad():
        _, selected = spatial(tokens, random_attention(2, 6))
        inserted, slot_mask, counts = temporal(tokens, selected)
        strength = loop_strength(temporal, tokens, selected)
        diff = tokens[:, 1:, 1:] - tokens[:, :-1, 1:]
        torch.testing.assert_close(temporal.strength(diff, selected), strength, rtol=1e-5, atol=1e-7)
    expected = torch.clamp(torch.ceil(6.0 * strength), max=4).long()
    assert torch.equal(counts, expected)
    assert counts.min() == 0 and counts.max() == 4 and len(counts.unique()) >= 3, counts  # 0, between, cap
    assert torch.equal(slot_mask, torch.arange(4) < counts[..., None])
    assert torch.equal(inserted[~slot_mask], torch.zeros_like(inserted[~slot_mask]))
    assert (inserted[slot_mask].abs().sum(dim=-1) > 0).all()


@pytest.mark.parametrize("conv_impl", ["direct", "fft"])
def test_a_static_video_gets_no_inserted_prompts(conv_impl):
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig.tiny()).eval()
    frame = clip.visual.embed(torch.randn(2, 3, 32, 32))  # [B, 1 + N, W]
    tokens = frame[:, None].expand(-1, 5, -1, -1).contiguous()
    a = cls_patch_attention(clip.visual.transformer.resblocks[0], tokens.flatten(0, 1)).unflatten(0, (2, 5))
    spatial, temporal = build(conv_impl=conv_impl)
    prompted, selected = spatial(tokens, a)
    inserted, slot_mask, counts = temporal(tokens, selected)  # the encoder passes the tokens before P_s
    assert torch.equal(counts, torch.zeros(2, 4, dtype=torch.long)) and not slot_mask.any()
    assert torch.equal(inserted, torch.zeros_like(inserted))
    (prompted.sum() + inserted.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in temporal.parameters() if p.grad is not None)


def test_a_video_does_not_depend_on_the_rest_of_its_batch():
    spatial, temporal = build(ModelConfig(paper_eta=20.0))
    tokens = moving_tokens(3, 4, [0.1, 0.3, 0.05])
    a = random_attention(3, 4)
    with torch.no_grad():
        batch = spatial(tokens, a)
        alone = spatial(tokens[:1], a[:1])
        batch_t = temporal(tokens, batch[1])
        alone_t = temporal(tokens[:1], alone[1])
    torch.testing.assert_close(alone[0], batch[0][:1], rtol=0, atol=1e-5)
    assert torch.equal(alone[1], batch[1][:1])
    torch.testing.assert_close(alone_t[0], batch_t[0][:1], rtol=0, atol=1e-5)
    assert torch.equal(alone_t[1], batch_t[1][:1]) and torch.equal(alone_t[2], batch_t[2][:1])


def test_gradients_reach_every_trainable_tensor():
    spatial, temporal = build()
    tokens = moving_tokens(2, 4, [0.05, 0.1, 0.2])  # counts below the cap, so W^t gets a gradient
    a = random_attention(2, 4)
    prompted, selected = spatial(tokens, a)
    inserted, slot_mask, counts = temporal(tokens, selected)
    assert slot_mask.any() and (counts < 4).any()
    g = torch.Generator().manual_seed(5)
    loss = ((prompted * torch.randn(prompted.shape, generator=g)).sum()
            + (inserted * torch.randn(inserted.shape, generator=g)).sum())
    loss.backward()
    for module in (spatial, temporal):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{type(module).__name__}.{name} got no gradient"


def global_local_inputs(b=2, g=3, t=4, s=7, d=WIDTH, heads=4, seed=0):
    torch.manual_seed(seed)
    return torch.nn.MultiheadAttention(d, heads), torch.randn(b, g + t * s, d)


@pytest.mark.parametrize("globals_", [0, 3])
def test_masked_attention_equals_global_local_attention_when_nothing_is_masked(globals_):
    attn, x = global_local_inputs(g=globals_)
    with torch.no_grad():
        expected = global_local_attention(attn, x, globals_, 4)
        everything = torch.ones(x.shape[:2], dtype=torch.bool)
        torch.testing.assert_close(global_local_attention(attn, x, globals_, 4, everything), expected,
                                   rtol=0, atol=1e-6)


def test_masked_attention_matches_a_dense_masked_attention():
    b, g, t, s = 2, 3, 4, 7
    attn, x = global_local_inputs(b, g, t, s)
    key_mask = torch.rand(b, g + t * s, generator=torch.Generator().manual_seed(3)) > 0.3
    key_mask[:, g::s] = True  # every frame keeps one token
    frame = torch.cat([torch.full((g,), -1), torch.arange(t).repeat_interleave(s)])  # -1 = global
    same_frame = (frame[:, None] == frame[None, :]) | (frame[None, :] == -1) | (frame[:, None] == -1)
    dense = same_frame[None, None] & key_mask[:, None, None, :]  # [B, 1, L, L], True = attend
    with torch.no_grad():
        expected = attention(attn, x, attn_mask=dense)
        torch.testing.assert_close(global_local_attention(attn, x, g, t, key_mask), expected,
                                   rtol=1e-5, atol=1e-6)


def test_layout_places_slots_before_each_frame_and_reads_back_cls():
    b, t, pg, pl, k = 2, 3, 2, 3, 4
    tokens, local = torch.randn(b, t, 1 + N, WIDTH), torch.randn(b, t, pl, WIDTH)
    inserted, globals_ = torch.randn(b, t - 1, k, WIDTH), torch.randn(b, pg, WIDTH)
    slot_mask = torch.arange(k) < torch.tensor([[0, 2], [4, 1]])[..., None]
    x, key_mask, layout = layout_tokens(globals_, tokens, local, inserted, slot_mask)
    frames = layout.frames(x)
    assert x.shape == (b, pg + t * (k + 1 + pl + N), WIDTH) and frames.shape == (b, t, k + 1 + pl + N, WIDTH)
    assert torch.equal(x[:, :pg], globals_) and torch.equal(layout.frame_cls(x), tokens[:, :, 0])
    assert torch.equal(frames[:, :, layout.local], local) and torch.equal(frames[:, :, k + 1 + pl:], tokens[:, :, 1:])
    assert torch.equal(frames[:, 1:, :k], inserted) and torch.equal(frames[:, 0, :k], torch.zeros(b, k, WIDTH))
    frame_keys = layout.frames(key_mask[..., None])[..., 0]
    assert key_mask[:, :pg].all() and frame_keys[:, :, k:].all() and not frame_keys[:, 0, :k].any()
    assert torch.equal(frame_keys[:, 1:, :k], slot_mask)


def test_unused_slot_contents_change_no_unmasked_output():
    """Two frozen CLIP blocks with the masked attention: rewriting the unused slots changes nothing else."""
    clip = CLIP(CLIPConfig.tiny()).eval()
    b, t, pg, pl, k = 2, 3, 2, 4, 4
    tokens, local = torch.randn(b, t, 1 + N, WIDTH), torch.randn(b, t, pl, WIDTH)
    slot_mask = torch.arange(k) < torch.tensor([[0, 3], [1, 4]])[..., None]
    inserted = torch.randn(b, t - 1, k, WIDTH) * slot_mask[..., None]
    x, key_mask, _ = layout_tokens(torch.randn(b, pg, WIDTH), tokens, local, inserted, slot_mask)
    other = torch.where(key_mask[..., None], x, torch.randn_like(x) * 100)

    def run(x):
        for block in clip.visual.transformer.resblocks:
            x = x + global_local_attention(block.attn, block.ln_1(x), pg, t, key_mask)
            x = x + block.mlp(block.ln_2(x))
        return x

    with torch.no_grad():
        assert torch.equal(run(x)[key_mask], run(other)[key_mask])


def test_all_masked_slots_give_todays_attention_on_the_tokens_without_slots():
    """With every slot unused, the unmasked outputs equal global_local_attention on the plain layout."""
    torch.manual_seed(0)
    block = ResidualAttentionBlock(WIDTH, 4)
    b, t, pg, pl, k = 2, 3, 2, 4, 4
    tokens, local, globals_ = torch.randn(b, t, 1 + N, WIDTH), torch.randn(b, t, pl, WIDTH), torch.randn(b, pg, WIDTH)
    x, key_mask, layout = layout_tokens(globals_, tokens, local, torch.randn(b, t - 1, k, WIDTH),
                                        torch.zeros(b, t - 1, k, dtype=torch.bool))
    plain = torch.cat([globals_, torch.cat([tokens[:, :, :1], local, tokens[:, :, 1:]], dim=2).flatten(1, 2)], dim=1)
    with torch.no_grad():
        out = global_local_attention(block.attn, block.ln_1(x), pg, t, key_mask)
        expected = global_local_attention(block.attn, block.ln_1(plain), pg, t)
    torch.testing.assert_close(out[key_mask].view(b, -1, WIDTH), expected, rtol=0, atol=1e-6)
    assert torch.equal(layout.frame_cls(x), tokens[:, :, 0])


@pytest.mark.parametrize("read_globals,read_cls", [(1, False), (2, False), (0, True), (2, True)])
@pytest.mark.parametrize("slots", [False, True])
def test_the_readout_block_equals_the_read_rows_of_the_whole_block(read_globals, read_cls, slots):
    """The last block computed for the read tokens only: the same values and input gradients as those rows of
    prompted_block, with and without insertion slots and their key mask."""
    torch.manual_seed(0)
    block, adapter = ResidualAttentionBlock(WIDTH, 4), Adapter(WIDTH, 8, 0.1)
    b, t, pg, pl, k = 2, 3, 2, 4, 2 if slots else 0
    tokens, local, globals_ = torch.randn(b, t, 1 + N, WIDTH), torch.randn(b, t, pl, WIDTH), torch.randn(b, pg, WIDTH)
    slot_mask = torch.arange(k) < torch.tensor([[0, 2], [1, 2]])[..., None]
    x, key_mask, layout = layout_tokens(globals_, tokens, local, torch.randn(b, t - 1, k, WIDTH), slot_mask)
    key_mask = key_mask if slots else None
    whole_x, read_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    whole = prompted_block(block, adapter, whole_x, pg, t, key_mask)
    expected = torch.cat([whole[:, :read_globals]] + ([layout.frame_cls(whole)] if read_cls else []), dim=1)
    read = readout_block(block, adapter, read_x, layout, read_globals, read_cls, key_mask)
    torch.testing.assert_close(read, expected, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(read)
    (expected * weights).sum().backward()
    (read * weights).sum().backward()
    torch.testing.assert_close(read_x.grad, whole_x.grad, rtol=1e-5, atol=1e-6)
