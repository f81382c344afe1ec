"""The prompt modules on their own: generators, the spatial region mask (both cell layouts), the per-video frame
weight normalisation, the adapter."""

import math

import pytest
import torch

from models import ModelConfig
from models.adapter import Adapter, mlp_with_adapter
from models.clip import ResidualAttentionBlock
from models.prompt_generator import LinearPromptGenerator, TransformerPromptGenerator
from models.spatial_prompt import SpatialPrompt
from models.temporal_prompt import normalise_per_video

DEPTHS = [(3, 3), (3, 2), (2, 3)]  # (visual, text) prompt depths; the latent space has the larger one


@pytest.mark.parametrize("visual_layers, text_layers", DEPTHS)
def test_transformer_generator_runs_each_layer_slice_as_one_sequence(visual_layers, text_layers):
    torch.manual_seed(0)
    width, text_width, pt, pl, t = 64, 32, 4, 2, 5
    generator = TransformerPromptGenerator(width, text_width, visual_layers, text_layers, pt, pl, t)
    layers = max(visual_layers, text_layers)
    with torch.no_grad():
        text, visual = generator(t)
        assert text.shape == (text_layers, pt, text_width) and visual.shape == (visual_layers, t * pl, width)
        table = generator.embedding.weight  # [Pt + T*Pl, Lp*W], row laid out (layer, width)
        assert table.shape == (pt + t * pl, layers * width)
        for layer in range(layers):
            out = generator.block(table[None, :, layer * width:(layer + 1) * width])[0]
            if layer < text_layers:
                torch.testing.assert_close(text[layer], generator.text_mlp(out[:pt]))
            if layer < visual_layers:
                torch.testing.assert_close(visual[layer], out[pt:])
    with pytest.raises(ValueError, match="built for 5 frames"):
        generator(4)


@pytest.mark.parametrize("visual_layers, text_layers", DEPTHS)
def test_linear_generator_shares_the_local_prompts_across_frames(visual_layers, text_layers):
    torch.manual_seed(0)
    width, text_width, pl, patch = 64, 32, 3, 8
    generator = LinearPromptGenerator(width, text_width, visual_layers, text_layers, pl, patch)
    bound = math.sqrt(6 / (3 * patch * patch + width))
    assert generator.visual_embedding.abs().max() <= bound and generator.visual_embedding.abs().max() > 0.9 * bound
    assert generator.visual_embedding.shape == (pl, max(visual_layers, text_layers) * width)
    with torch.no_grad():
        text, visual = generator(4)
        assert visual.shape == (visual_layers, 4 * pl, width) and text.shape == (text_layers, 2 * pl, text_width)
        for layer in range(max(visual_layers, text_layers)):
            rows = generator.visual_embedding[:, layer * width:(layer + 1) * width]  # [Pl, W]
            for frame in range(4 if layer < visual_layers else 0):
                torch.testing.assert_close(visual[layer, frame * pl:(frame + 1) * pl], rows, rtol=0, atol=0)
            if layer < text_layers:
                torch.testing.assert_close(text[layer, :pl], generator.prefix_proj(rows))
                torch.testing.assert_close(text[layer, pl:], generator.postfix_proj(rows))


def score_is_channel_zero(spatial: SpatialPrompt) -> SpatialPrompt:
    """Make the score convolution the identity on channel 0 so tests can write the scores into the frames."""
    with torch.no_grad():
        spatial.score_conv.weight.zero_()
        spatial.score_conv.bias.zero_()
        d, h, w = (k // 2 for k in spatial.score_conv.kernel_size)
        spatial.score_conv.weight[0, 0, d, h, w] = 1.0
    return spatial


@pytest.mark.parametrize("layout", ["patch", "lattice"])
def test_region_mask_keeps_the_six_best_cells_of_each_frame(layout):
    g, p = 4, 8
    spatial = score_is_channel_zero(SpatialPrompt(p, g, ModelConfig(spatial_mask_grid=layout))).eval()
    torch.manual_seed(0)
    values = torch.stack([torch.randperm(g * g).float().view(g, g) for _ in range(2)])  # per frame, cell scores
    rows = torch.arange(g * p)
    cell_of = rows // p if layout == "patch" else rows % g
    video = torch.randn(1, 2, 3, g * p, g * p)
    video[0, :, 0] = values[:, cell_of][:, :, cell_of]  # pixel (r, c) carries the score of its cell
    _, mask = spatial(video)
    assert torch.equal(mask[0], values >= g * g - 6)
    assert torch.equal(spatial.mask_to_pixels(mask)[0], (values >= g * g - 6)[:, cell_of][:, :, cell_of])
    other = SpatialPrompt(p, g, ModelConfig(spatial_mask_grid="lattice" if layout == "patch" else "patch"))
    assert not torch.equal(score_is_channel_zero(other).eval()(video)[1], mask)


def test_spatial_prompt_adds_the_prompt_everywhere_and_again_in_the_kept_cells():
    torch.manual_seed(0)
    spatial = SpatialPrompt(8, 4, ModelConfig()).eval()
    video = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        out, mask = spatial(video)
        prompt = spatial.prompt(video.transpose(1, 2))
    kept = spatial.mask_to_pixels(mask)[:, :, None].expand_as(video)
    torch.testing.assert_close((out - video)[kept], 0.1 * prompt[kept])
    torch.testing.assert_close((out - video)[~kept], 0.05 * prompt[~kept])


def test_spatial_prompt_checks_grid_and_resolution():
    with pytest.raises(ValueError, match="needs a grid of more than 6 cells"):
        SpatialPrompt(16, 2, ModelConfig())
    with pytest.raises(ValueError, match=r"frames must be \[3, 32, 32\]"):
        SpatialPrompt(8, 4, ModelConfig())(torch.zeros(1, 2, 3, 16, 16))


def test_frame_weights_are_normalised_per_video_without_nan():
    weights = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [-4.0, 0.0, -2.0]], requires_grad=True)
    normalised = normalise_per_video(weights)
    torch.testing.assert_close(normalised, torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.5]]))
    normalised.sum().backward()
    assert torch.isfinite(weights.grad).all()
    torch.testing.assert_close(normalise_per_video(weights[:1]), normalised[:1])  # no batch dependence


def test_adapter_is_scaled_and_reads_the_residual_stream():
    torch.manual_seed(0)
    adapter, block = Adapter(64, 32, 0.1), ResidualAttentionBlock(64, 1)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        hidden = adapter.down(x)
        expected = 0.1 * adapter.up(torch.where(hidden > 0, hidden, adapter.act.weight * hidden))
        torch.testing.assert_close(adapter(x), expected)
        torch.testing.assert_close(mlp_with_adapter(block, x, adapter), x + block.mlp(block.ln_2(x)) + expected)
        torch.testing.assert_close(mlp_with_adapter(block, x, None), x + block.mlp(block.ln_2(x)))
    assert sum(p.numel() for p in Adapter(768, 32, 0.1).parameters()) == 49_953  # x 12 layers = 599,436
