"""Trainable parameter counts for ViT-B/32 shapes (MODEL.md section 6), built on the meta device, and the model
flags (names, defaults, aliases, checks)."""

import argparse
import dataclasses
import json

import pytest
import torch

from models import ModelConfig, add_model_args, build_model
from models.clip import CLIP, CLIPConfig
from tests.conftest import tiny_model

# MODEL.md section 6, ViT-B/32, T = 12
TEMPORAL_MODULE, VISUAL_ADAPTERS, TEXT_ADAPTERS, GLOBAL_PROMPTS = 2_507_168, 599_436, 399_756, 3_072
SHARED = {"video_encoder.spatial_prompt": 123_064, "video_encoder.temporal_prompt": 2_384_104,
          "video_encoder.adapters": VISUAL_ADAPTERS, "text_encoder.adapters": TEXT_ADAPTERS,
          "video_encoder.global_prompts": GLOBAL_PROMPTS}
TRANSFORMER = {"prompt_generator.embedding": 516_096, "prompt_generator.block": 7_087_872,
               "prompt_generator.text_mlp": 1_968_128}
LINEAR = {"prompt_generator.visual_embedding": 36_864, "prompt_generator.prefix_proj": 393_728,
          "prompt_generator.postfix_proj": 393_728}


def meta_model(clip_config: CLIPConfig | None = None, **flags):
    """The model of `flags` on a ViT-B/32-shaped (default) CLIP, without memory or initialisation cost."""
    with torch.device("meta"):
        return build_model(argparse.Namespace(**flags), CLIP(clip_config or CLIPConfig.vit_b_32()))


@pytest.mark.parametrize("latent, total, generator", [("transformer", 13_081_528, TRANSFORMER),
                                                     ("linear", 4_333_752, LINEAR)])
def test_vit_b32_trainable_parameter_counts(latent, total, generator):
    model = meta_model(shared_latent_space=latent)
    counts = model.trainable_parameter_counts()
    assert counts == {**SHARED, **generator}
    assert counts["video_encoder.spatial_prompt"] + counts["video_encoder.temporal_prompt"] == TEMPORAL_MODULE
    assert sum(p.numel() for _, p in model.named_trainable_parameters()) == total
    frozen = sum(p.numel() for p in model.clip.parameters())
    assert frozen == 151_277_313 and all(not p.requires_grad for p in model.clip.parameters())


# ViT-L/14 (24 visual layers of width 1024, 12 text layers of width 768), T = 12: docs/MODEL.md
VIT_L14 = {"prompt_generator.embedding": 1_376_256, "prompt_generator.block": 12_596_224,
           "prompt_generator.text_mlp": 3_672_832, "video_encoder.global_prompts": 4_096,
           "video_encoder.spatial_prompt": 123_064, "video_encoder.temporal_prompt": 4_223_448,
           "video_encoder.adapters": 1_598_232, "text_encoder.adapters": 599_436}


@pytest.mark.parametrize("resolution", [224, 336], ids=["ViT-L/14", "ViT-L/14@336px"])
def test_vit_l14_prompts_every_visual_layer(resolution):
    """Fresh local prompts for all 24 visual layers (the table holds 24 layers), text prompts for the 12 text
    layers; the encoders run (shapes only, on the meta device). 336 px: a 24 x 24 grid, whose 576 patches only
    widen the inter-frame MLP's first layer (N -> 16)."""
    model = meta_model(CLIPConfig.vit_l_14(resolution), conv_impl="direct")  # the FFT path needs real devices
    prompts = model.prompts(12)
    assert prompts.visual.shape == (24, 12 * 4, 1024) and prompts.text.shape == (12, 8, 768)
    assert model.prompt_generator.embedding.weight.shape == (8 + 12 * 4, 24 * 1024)
    grid = resolution // 14
    extra = (grid * grid - 256) * 16
    counts = model.trainable_parameter_counts()
    assert counts == {**VIT_L14, "video_encoder.temporal_prompt": VIT_L14["video_encoder.temporal_prompt"] + extra}
    assert sum(counts.values()) == 24_193_588 + extra
    assert sum(p.numel() for p in model.clip.parameters()) == 427_616_513 + (grid * grid - 256) * 1024
    video = torch.empty(2, 12, 3, resolution, resolution, device="meta")
    features, details = model.encode_video(video, torch.ones(2, 12, device="meta"), return_details=True)
    assert features.shape == (2, 768) and details.region_mask.shape == (2, 12, grid, grid)
    assert model.encode_text(torch.zeros(2, 32, dtype=torch.long, device="meta")).shape == (2, 768)


def test_vit_l14_prompt_depth_flags():
    """--unified_transformer_layers 12 is the depth ViT-L/14 had before the two depths were separate;
    --visual_prompt_layers / --text_prompt_layers set one encoder's."""
    old = meta_model(CLIPConfig.vit_l_14(), unified_transformer_layers=12)
    assert old.prompts(12).visual.shape[0] == 12
    assert sum(old.trainable_parameter_counts().values()) == 24_193_588 - 56 * 12 * 1024
    linear = meta_model(CLIPConfig.vit_l_14(), shared_latent_space="linear")
    assert linear.prompts(12).visual.shape[0] == 24 and sum(linear.trainable_parameter_counts().values()) == 8_220_980
    mixed = meta_model(CLIPConfig.vit_l_14(), unified_transformer_layers=6, visual_prompt_layers=18)
    assert (mixed.prompts(12).visual.shape[0], mixed.prompts(12).text.shape[0]) == (18, 6)


def test_dgl_and_meanp_counts():
    assert sum(meta_model(temporal_prompt="none").trainable_parameter_counts().values()) == 13_081_528 - TEMPORAL_MODULE
    assert sum(meta_model(shared_latent_space="linear", temporal_prompt="none", lora=False)
               .trainable_parameter_counts().values()) == 4_333_752 - TEMPORAL_MODULE - VISUAL_ADAPTERS - TEXT_ADAPTERS
    assert meta_model(prompt="none").named_trainable_parameters() == []


def test_sizes_follow_the_clip_not_vit_b32():
    """ViT-B/16 has 196 patches: only the inter-frame MLP's first layer (N -> 16) grows."""
    b16 = meta_model(CLIPConfig.vit_b_16()).trainable_parameter_counts()
    b32 = meta_model().trainable_parameter_counts()
    assert b16["video_encoder.temporal_prompt"] - b32["video_encoder.temporal_prompt"] == (196 - 49) * 16
    assert {k: v for k, v in b16.items() if k != "video_encoder.temporal_prompt"} == \
           {k: v for k, v in b32.items() if k != "video_encoder.temporal_prompt"}


def test_flags_defaults_and_parsing():
    parser = add_model_args(argparse.ArgumentParser())
    defaults = ModelConfig.from_args(parser.parse_args([]))
    assert defaults == ModelConfig.from_args(None) == ModelConfig.from_args(argparse.Namespace())
    assert (defaults.prompt, defaults.temporal_prompt, defaults.shared_latent_space) == ("dgl", "stop", "transformer")
    assert (defaults.text_prompt_length, defaults.local_each_frame_prompt_length,
            defaults.global_visual_prompt_length, defaults.unified_transformer_layers) == (8, 4, 4, None)
    assert (defaults.visual_output_type, defaults.lora, defaults.spatial_mask_grid, defaults.max_frames) == \
           ("global_prompt0", True, "patch", 12)
    args = parser.parse_args(["--temporal_prompt", "group2-2", "--lora", "false", "--max_frames", "8"])
    config = ModelConfig.from_args(args)
    assert (config.temporal_prompt, config.lora, config.max_frames) == ("stop", False, 8)
    assert ModelConfig.from_args(argparse.Namespace(lora="False")).lora is False  # not the released bool("False")
    assert ModelConfig.from_args(argparse.Namespace(temporal_prompt="none")).uses_stop is False
    with pytest.raises(SystemExit):
        parser.parse_args(["--lora", "maybe"])
    assert tiny_model(max_frames=5).prompt_generator.num_frames == 5


def test_every_option_is_a_flag_and_a_saved_config_round_trips():
    parser = add_model_args(argparse.ArgumentParser())
    flags = {a.dest for a in parser._actions} - {"help"}
    assert flags == {f.name for f in dataclasses.fields(ModelConfig)}
    assert {a.dest: a.default for a in add_model_args(argparse.ArgumentParser(), False)._actions
            if a.dest != "help"} == dict.fromkeys(flags)
    args = parser.parse_args(["--spatial_kernel", "3,5,7", "--adapter_width", "8", "--spatial_top_k", "2"])
    config = ModelConfig.from_args(args)
    assert (config.spatial_kernel, config.adapter_width, config.spatial_top_k) == ((3, 5, 7), 8, 2)
    saved = json.loads(json.dumps(config.to_dict()))  # as hparams.json and checkpoints hold it
    assert ModelConfig.from_dict(saved) == config
    model = tiny_model(spatial_kernel=(3, 5, 7), adapter_width=8, spatial_top_k=2)
    assert model.video_encoder.spatial_prompt.conv1.kernel_size == (3, 5, 7)
    assert model.video_encoder.adapters[0].down.out_features == 8 and model.video_encoder.spatial_prompt.top_k == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--spatial_kernel", "3,4,5"])  # even sizes have no "same" padding


@pytest.mark.parametrize("options, message", [
    (dict(temporal_prompt="paper2"), "--temporal_prompt 'paper2' is not one of"),
    (dict(visual_output_type="global-local-feature"), "--visual_output_type 'global-local-feature' is not one of"),
    (dict(shared_latent_space="linear", text_prompt_length=6), "must be 2 x --local_each_frame_prompt_length"),
    (dict(global_visual_prompt_length=0), "needs --global_visual_prompt_length >= 1"),
    (dict(max_frames=0), "--max_frames must be >= 1"),
    (dict(max_words=1), "--max_words must be >= 2"),
    (dict(spatial_kernel=(3, 4, 5)), "--spatial_kernel: expected three odd"),
    (dict(adapter_width=0), "--adapter_width must be >= 1"),
    (dict(unified_transformer_layers=0), "--unified_transformer_layers must be >= 1"),
    (dict(visual_prompt_layers=0), "--visual_prompt_layers must be >= 1"),
    (dict(text_prompt_layers=-1), "--text_prompt_layers must be >= 1"),
    (dict(clip_activation="relu"), "--clip_activation 'relu' is not one of"),
])
def test_invalid_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_args(None, **options)


def test_prompted_layers_cannot_exceed_the_clip_depth():
    with pytest.raises(ValueError, match="--unified_transformer_layers 4 exceeds the CLIP's visual depth"):
        tiny_model(unified_transformer_layers=4)
    with pytest.raises(ValueError, match="--text_prompt_layers 4 exceeds the CLIP's text depth"):
        tiny_model(unified_transformer_layers=2, text_prompt_layers=4)
    with pytest.raises(TypeError, match="unknown model options"):
        ModelConfig.from_args(None, prompts="dgl")
