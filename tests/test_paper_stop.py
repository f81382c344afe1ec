"""The paper's STOP in the whole video encoder (--temporal_prompt paper) and the STOP ablations (--stop_prompts):
shapes on the tiny CLIP and ViT-B/32 sizes, batch independence, static videos, gradient flow, parameter counts."""

import pytest
import torch

from models import ContrastiveLoss, ModelConfig, create_model
from models.clip import CLIP, CLIPConfig
from tests.conftest import FRAMES, TINY, text_batch, tiny_model, video_batch

GRID = TINY.image_resolution // TINY.vision_patch_size
PAPER = dict(temporal_prompt="paper")


def moving_video(batch=2, frames=FRAMES, seed=1, step=0.3):
    """Frames that drift: frame t+1 = frame t + step * noise (so consecutive frames differ by a controlled amount)."""
    g = torch.Generator().manual_seed(seed)
    size = TINY.image_resolution
    first = torch.randn(batch, 1, 3, size, size, generator=g)
    steps = step * torch.randn(batch, frames - 1, 3, size, size, generator=g)
    return torch.cat([first, first + steps.cumsum(dim=1)], dim=1), torch.ones(batch, frames, dtype=torch.long)


def test_details_and_shapes_on_the_tiny_clip():
    model = tiny_model(**PAPER)
    video, mask = moving_video()
    with torch.no_grad():
        features, details = model.encode_video(video, mask, return_details=True)
    assert features.shape == (2, TINY.embed_dim) and torch.isfinite(features).all()
    assert details.region_mask is None and details.frame_weights is None
    assert details.selected_patches.shape == (2, FRAMES, GRID, GRID) and details.selected_patches.dtype == torch.bool
    assert (details.selected_patches.flatten(2).sum(dim=-1) == ModelConfig().paper_top_k).all()
    counts = details.inserted_prompts
    assert counts.shape == (2, FRAMES - 1) and counts.dtype == torch.int64
    assert ((counts >= 0) & (counts <= ModelConfig().paper_cap)).all()


@pytest.mark.parametrize("output_type", ["global_prompt0", "average_frame_cls_token"])
def test_vit_b32_shapes_and_trainable_counts(output_type):
    with torch.device("meta"):
        model = create_model(ModelConfig(visual_output_type=output_type, **PAPER), CLIP(CLIPConfig.vit_b_32()))
    counts = model.trainable_parameter_counts()
    assert counts["video_encoder.paper_spatial_prompt"] == 855_874
    assert counts["video_encoder.paper_temporal_prompt"] == 3_218_054
    assert sum(counts.values()) == 14_648_288  # docs/MODEL.md, beside the paper's 7.53M
    video = torch.zeros(1, 12, 3, 224, 224, device="meta")
    features, details = model.encode_video(video, torch.ones(1, 12, device="meta"), return_details=True)
    assert features.shape == (1, 512) and details.inserted_prompts.shape == (1, 11)
    assert details.selected_patches.shape == (1, 12, 7, 7)


@pytest.mark.parametrize("conv_impl", ["direct", "auto"])
def test_a_video_embedding_does_not_depend_on_the_batch(conv_impl):
    model = tiny_model(conv_impl=conv_impl, **PAPER)
    video, mask = moving_video(batch=3)
    others, _ = moving_video(batch=3, seed=7, step=1.0)
    with torch.no_grad():
        alone, alone_details = model.encode_video(video[:1], mask[:1], return_details=True)
        together = model.encode_video(video, mask)
        mixed, mixed_details = model.encode_video(torch.cat([video[:1], others[1:]]), mask, return_details=True)
    torch.testing.assert_close(together[:1], alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[:1], alone, rtol=0, atol=1e-5)
    assert torch.equal(mixed_details.inserted_prompts[:1], alone_details.inserted_prompts)
    assert torch.equal(mixed_details.selected_patches[:1], alone_details.selected_patches)


def test_a_static_video_gets_no_inserted_prompts_and_equals_no_temporal_prompt():
    """Zero change gives zero score: no slot is used, so the video is encoded as by the spatial prompt alone."""
    model = tiny_model(**PAPER)
    spatial_only = tiny_model(stop_prompts="spatial", **PAPER)
    spatial_only.load_state_dict(model.state_dict(), strict=False)
    video, mask = video_batch(frames=1)
    static = video.expand(-1, FRAMES, -1, -1, -1)
    with torch.no_grad():
        features, details = model.encode_video(static, mask.expand(-1, FRAMES), return_details=True)
        expected = spatial_only.encode_video(static, mask.expand(-1, FRAMES))
    assert torch.equal(details.inserted_prompts, torch.zeros(2, FRAMES - 1, dtype=torch.long))
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)  # masked vs unmasked kernels: rounding


def test_inserted_prompts_follow_the_motion():
    model = tiny_model(**PAPER)
    with torch.no_grad():
        slow = model.encode_video(*moving_video(step=0.01), return_details=True)[1].inserted_prompts
        fast = model.encode_video(*moving_video(step=1.0), return_details=True)[1].inserted_prompts
    assert (fast >= slow).all() and fast.sum() > slow.sum()


@pytest.mark.parametrize("latent", ["transformer", "linear"])
def test_a_training_step_reaches_every_paper_tensor(latent):
    model = tiny_model(shared_latent_space=latent, **PAPER).train()
    video, mask = moving_video(step=0.05)  # counts below the cap, so the temporal score gets a gradient too
    ContrastiveLoss()(*model(text_batch(), video, mask)).backward()
    silent = {name for name, p in model.named_trainable_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    # Only the linear latent space's postfix text prompts are silent (they sit after EOT under the causal mask).
    assert silent == ({"prompt_generator.postfix_proj.weight", "prompt_generator.postfix_proj.bias"}
                      if latent == "linear" else set())
    assert all(p.grad is None for p in model.clip.parameters())


@pytest.mark.parametrize("variant", ["stop", "paper"])
def test_ablations_keep_one_prompt(variant):
    both = tiny_model(temporal_prompt=variant)
    encoder = both.video_encoder
    modules = ("spatial_prompt", "temporal_prompt") if variant == "stop" else ("paper_spatial_prompt",
                                                                               "paper_temporal_prompt")
    assert all(getattr(encoder, m) is not None for m in modules)
    for parts, kept in (("spatial", modules[0]), ("temporal", modules[1])):
        model = tiny_model(temporal_prompt=variant, stop_prompts=parts)
        present = {m for m in modules if getattr(model.video_encoder, m) is not None}
        assert present == {kept}
        with torch.no_grad():
            features, details = model.encode_video(*moving_video(), return_details=True)
        assert torch.isfinite(features).all()
        assert (details.frame_weights is not None) == (variant == "stop" and parts == "temporal")
        assert (details.inserted_prompts is not None) == (variant == "paper" and parts == "temporal")


def test_checkpointed_blocks_give_the_same_gradients_with_slots():
    video, mask = moving_video(step=0.05)
    ids = text_batch()
    grads = []
    for checkpointed in (False, True):
        model = tiny_model(checkpoint_activations=checkpointed, **PAPER).train()
        torch.manual_seed(3)
        ContrastiveLoss()(*model(ids, video, mask)).backward()
        grads.append({n: p.grad for n, p in model.named_trainable_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_infer_visualize_draws_the_selected_patches_and_inserted_prompts(tmp_path):
    import json

    import matplotlib.image

    import infer
    from dataloaders.synthetic import write_dataset
    from dataloaders.video_input import read_video_tensor
    from models.checkpoints import FORMAT
    from utils.engine.training.checkpoint import save_atomic

    write_dataset(str(tmp_path / "data"), 0, 2, seed=0, image_size=32, num_frames=6, progress=False)
    video_path = tmp_path / "data" / "videos" / "video0.mp4"
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig.tiny())
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    model = create_model(ModelConfig(max_frames=4, **PAPER), clip).eval()
    save_atomic({"format": FORMAT, "model": model.learned_state_dict(), "model_config": model.config.to_dict(),
                 "args": {"pretrained_clip_name": str(tmp_path / "clip.pt")}}, tmp_path / "run" / "ckpt_best.pt")
    png = tmp_path / "paper.png"
    record = infer.main(["visualize", "--checkpoint", str(tmp_path / "run"), "--video", str(video_path),
                         "--output", str(png), "--frame_px", "50"])
    assert matplotlib.image.imread(png).shape == (125, 250, 4) and json.loads(png.with_suffix(".json").read_text())
    video, mask = read_video_tensor(str(video_path), 4, 32)
    with torch.no_grad():
        _, details = model.encode_video(video[None], mask[None], return_details=True)
    assert record["selected_patches"] == details.selected_patches[0].int().tolist()
    assert record["inserted_prompts"] == details.inserted_prompts[0].tolist() and len(record["inserted_prompts"]) == 3
