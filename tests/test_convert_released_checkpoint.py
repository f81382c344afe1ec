"""Released checkpoints on synthetic state dicts written from MODEL.md section 7 (key names and shapes of the
released implementation), for the tiny CLIP of the model tests: read through the model factory (load_trained)
and converted by the command-line converter."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import CheckpointError, ModelConfig, load_trained
from models.checkpoints import convert_released_state_dict, to_released_state_dict
from tests.conftest import FRAMES, TINY, tiny_model, video_batch
from utils.convert_released_checkpoint import main

REPO = Path(__file__).resolve().parents[1]


def released_shapes(latent: str) -> dict[str, tuple]:
    """Released key -> shape for TINY, T = FRAMES, Pt = 8, Pl = Pg = 4, every layer prompted, adapters on."""
    w, wt, n, layers = TINY.vision_width, TINY.transformer_width, (TINY.image_resolution // 8) ** 2, 3
    k, kt = (3, 11, 11), (3, 15, 25)
    tp = "clip.visual.TemporalPrompt."
    shapes = {"clip.visual.prompt_embeddings": (1, 4, w),
              tp + "Conv.0.weight": (9, 3, *k), tp + "Conv.0.bias": (9,), tp + "Conv.1.weight": (9, 9, *k),
              tp + "Conv.1.bias": (9,), tp + "Conv.2.weight": (1,), tp + "Conv.3.weight": (9, 9, *k),
              tp + "Conv.3.bias": (9,), tp + "Conv.4.weight": (1,), tp + "Conv.5.weight": (16, 9, *k),
              tp + "Conv.5.bias": (16,),
              tp + "MLP.0.weight": (16, 16), tp + "MLP.0.bias": (16,), tp + "MLP.1.weight": (1,),
              tp + "MLP.2.weight": (3, 16), tp + "MLP.2.bias": (3,),
              tp + "Cal_Net.weight": (1, 3, 5, 11, 11), tp + "Cal_Net.bias": (1,),
              tp + "Attention.in_proj_weight": (3 * w, w), tp + "Attention.in_proj_bias": (3 * w,),
              tp + "Attention.out_proj.weight": (w, w), tp + "Attention.out_proj.bias": (w,),
              tp + "InterConv.0.weight": (9, 1, *kt), tp + "InterConv.0.bias": (9,),
              tp + "InterConv.1.weight": (1,), tp + "InterConv.2.weight": (1, 9, *kt), tp + "InterConv.2.bias": (1,),
              tp + "InterMLP.0.weight": (16, n), tp + "InterMLP.0.bias": (16,), tp + "InterMLP.1.weight": (1,),
              tp + "InterMLP.2.weight": (4, 16), tp + "InterMLP.2.bias": (4,),
              tp + "Cal_Net_Inter.weight": (1, 1, 5, 11, 11), tp + "Cal_Net_Inter.bias": (1,)}
    for branch, width in (("clip.visual.transformer", w), ("clip.transformer", wt)):
        for i in range(layers):
            lora = f"{branch}.resblocks.{i}.LoRA."
            shapes.update({lora + "0.weight": (32, width), lora + "0.bias": (32,), lora + "1.weight": (1,),
                           lora + "2.weight": (width, 32), lora + "2.bias": (width,)})
    if latent == "transformer":
        block = "clip.PromptTransformer.resblocks.0."
        shapes.update({"clip.unified_prompt_embedding.weight": (8 + FRAMES * 4, layers * w),
                       block + "attn.in_proj_weight": (3 * w, w), block + "attn.in_proj_bias": (3 * w,),
                       block + "attn.out_proj.weight": (w, w), block + "attn.out_proj.bias": (w,),
                       block + "ln_1.weight": (w,), block + "ln_1.bias": (w,), block + "ln_2.weight": (w,),
                       block + "ln_2.bias": (w,), block + "mlp.c_fc.weight": (4 * w, w),
                       block + "mlp.c_fc.bias": (4 * w,), block + "mlp.c_proj.weight": (w, 4 * w),
                       block + "mlp.c_proj.bias": (w,)})
        mlp = "clip.unified_prompt_mlp."
        shapes.update({mlp + "c_fc.weight": (2 * w, w), mlp + "c_fc.bias": (2 * w,),
                       mlp + "c_proj.weight": (wt, 2 * w), mlp + "c_proj.bias": (wt,)})
    else:
        shapes["clip.visual_prompt_embedding"] = (1, 4, layers * w)
        for side in ("prefix", "postfix"):
            shapes.update({f"clip.{side}_text_prompt_proj_layer.weight": (wt, w),
                           f"clip.{side}_text_prompt_proj_layer.bias": (wt,)})
    return shapes


def released_state_dict(latent: str, ddp: bool = True, seed: int = 5) -> dict[str, torch.Tensor]:
    """Random prompt modules with the released names, the tiny CLIP's own weights under `clip.`, the released
    `position_ids` buffer, all prefixed `module.` when saved under DDP."""
    g = torch.Generator().manual_seed(seed)
    state = {key: torch.randn(shape, generator=g) for key, shape in released_shapes(latent).items()}
    state.update({"clip." + k: v.clone() for k, v in tiny_model().clip.state_dict().items()})
    state["clip.visual.position_ids"] = torch.arange(1 + (TINY.image_resolution // 8) ** 2)[None]
    return {("module." if ddp else "") + k: v for k, v in state.items()}


def load_released(folder: Path, released: dict, **options) -> torch.nn.Module:
    """The model of `options` on a random tiny CLIP (seed 1), built by load_trained from `released` saved as the
    released code saves it."""
    path = folder / "released.pth.tar"
    torch.save({"epoch": 5, "state_dict": released}, path)
    trained = load_trained(path, config=ModelConfig(**{"max_frames": FRAMES, **options}), clip=tiny_model(seed=1).clip)
    assert trained.kind == "released checkpoint"
    return trained.model


@pytest.mark.parametrize("latent", ["transformer", "linear"])
@pytest.mark.parametrize("ddp", [True, False])
def test_round_trip_through_the_model(latent, ddp, tmp_path):
    released = released_state_dict(latent, ddp)
    model = load_released(tmp_path, released, shared_latent_space=latent, spatial_mask_grid="lattice")
    prefix = "module." if ddp else ""
    p = {k[len(prefix):]: v for k, v in released.items()}
    pairs = [(model.video_encoder.global_prompts, p["clip.visual.prompt_embeddings"][0]),
             (model.video_encoder.spatial_prompt.conv2.weight, p["clip.visual.TemporalPrompt.Conv.1.weight"]),
             (model.video_encoder.spatial_prompt.act3.weight, p["clip.visual.TemporalPrompt.Conv.4.weight"]),
             (model.video_encoder.spatial_prompt.conv4.bias, p["clip.visual.TemporalPrompt.Conv.5.bias"]),
             (model.video_encoder.spatial_prompt.score_conv.weight, p["clip.visual.TemporalPrompt.Cal_Net.weight"]),
             (model.video_encoder.temporal_prompt.weight_conv.bias, p["clip.visual.TemporalPrompt.Cal_Net_Inter.bias"]),
             (model.video_encoder.temporal_prompt.conv2.weight, p["clip.visual.TemporalPrompt.InterConv.2.weight"]),
             (model.video_encoder.temporal_prompt.mlp[2].weight, p["clip.visual.TemporalPrompt.InterMLP.2.weight"]),
             (model.video_encoder.temporal_prompt.attention.in_proj_weight,
              p["clip.visual.TemporalPrompt.Attention.in_proj_weight"]),
             (model.video_encoder.adapters[1].up.weight, p["clip.visual.transformer.resblocks.1.LoRA.2.weight"]),
             (model.text_encoder.adapters[2].down.bias, p["clip.transformer.resblocks.2.LoRA.0.bias"]),
             (model.text_encoder.adapters[0].act.weight, p["clip.transformer.resblocks.0.LoRA.1.weight"])]
    if latent == "transformer":
        pairs += [(model.prompt_generator.embedding.weight, p["clip.unified_prompt_embedding.weight"]),
                  (model.prompt_generator.block.mlp.c_fc.weight,
                   p["clip.PromptTransformer.resblocks.0.mlp.c_fc.weight"]),
                  (model.prompt_generator.text_mlp.c_proj.bias, p["clip.unified_prompt_mlp.c_proj.bias"])]
    else:
        pairs += [(model.prompt_generator.visual_embedding, p["clip.visual_prompt_embedding"][0]),
                  (model.prompt_generator.postfix_proj.weight, p["clip.postfix_text_prompt_proj_layer.weight"])]
    for ours, theirs in pairs:
        assert torch.equal(ours, theirs)
    back = to_released_state_dict(model.state_dict())
    expected = {k: v for k, v in p.items() if k != "clip.visual.position_ids"}
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in expected)
    assert torch.isfinite(model.encode_video(*video_batch())).all()


def test_checkpoint_that_does_not_fit_the_model_is_refused(tmp_path):
    released = released_state_dict("linear")
    with pytest.raises(CheckpointError, match=r"missing tensors \(e.g. \['prompt_generator.block"):
        load_released(tmp_path, released)
    with pytest.raises(CheckpointError, match=r"shape mismatch for \['prompt_generator.embedding.weight'"):
        load_released(tmp_path, released_state_dict("transformer"), max_frames=4)
    with pytest.raises(CheckpointError, match=r"unexpected \(e.g. \[.*'video_encoder.spatial_prompt"):
        load_released(tmp_path, released, temporal_prompt="none", shared_latent_space="linear")
    with pytest.raises(KeyError, match="'optimizer.step' is not a key of the released"):
        convert_released_state_dict({"optimizer.step": torch.zeros(1)})


def test_patch_layout_model_gets_a_warning(caplog, tmp_path):
    with caplog.at_level(logging.WARNING):
        load_released(tmp_path, released_state_dict("transformer"))
    assert "--spatial_mask_grid lattice" in caplog.text


def test_command_line_converts_a_saved_checkpoint(tmp_path):
    released = released_state_dict("transformer")
    source = tmp_path / "ckpt.pth.tar"
    torch.save({"epoch": 5, "global_step": 7030, "arch": "CLIp4Clip", "state_dict": released, "best_acc1": 47.7,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}}, source)
    main([str(source), str(tmp_path / "out" / "converted.pt")])
    converted = torch.load(tmp_path / "out" / "converted.pt", weights_only=True)
    expected = convert_released_state_dict(released)
    assert converted.keys() == expected.keys() and all(torch.equal(converted[k], expected[k]) for k in expected)
    model = load_trained(source, config=ModelConfig(max_frames=FRAMES, spatial_mask_grid="lattice"),
                         clip=tiny_model(seed=1).clip).model
    assert torch.equal(model.state_dict()["prompt_generator.embedding.weight"],
                       released["module.clip.unified_prompt_embedding.weight"])

    script = subprocess.run([sys.executable, "utils/convert_released_checkpoint.py", str(source),
                             str(tmp_path / "small.pt"), "--without_clip"], cwd=REPO, capture_output=True, text=True)
    assert script.returncode == 0, script.stderr
    small = torch.load(tmp_path / "small.pt", weights_only=True)
    assert small.keys() == {k for k in expected if not k.startswith("clip.")}
    assert "prompt-module parameters" in script.stderr

    with pytest.raises(SystemExit) as error:
        main([str(tmp_path / "missing.pth"), str(tmp_path / "x.pt")])
    assert error.value.code == 1
