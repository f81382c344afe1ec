"""CLIP folders of Hugging Face transformers (models/hf_clip.py) against transformers' own CLIPModel: tiny random
models with QuickGELU and GELU, saved with save_pretrained, loaded through load_clip, the factory and infer.py;
the folders load_clip refuses."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig as HFCLIPConfig
from transformers import CLIPModel

import infer
from models import ModelConfig, create_model
from models.clip import build_clip, load_clip, read_clip_weights
from models.tokenizer import tokenize

ACTIVATIONS = ["quick_gelu", "gelu"]


def hf_config(hidden_act: str) -> HFCLIPConfig:
    """Tiny towers with OpenAI's vocabulary and context (so the real tokenizer applies); 64-wide heads."""
    text = dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1,
                max_position_embeddings=77, hidden_act=hidden_act)
    vision = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=2, image_size=32,
                  patch_size=8, hidden_act=hidden_act)
    return HFCLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory) -> dict[str, tuple[CLIPModel, Path]]:
    """activation -> (a random transformers CLIPModel in eval mode, the folder save_pretrained wrote)."""
    models = {}
    for seed, act in enumerate(ACTIVATIONS):
        torch.manual_seed(seed)
        model = CLIPModel(hf_config(act)).eval()
        folder = tmp_path_factory.mktemp(f"hf_{act}")
        model.save_pretrained(folder)
        models[act] = (model, folder)
    return models


def features(output) -> torch.Tensor:
    """get_*_features' result: a tensor (transformers 4) or an output whose pooler_output it is (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 3, 32, 32, generator=g), tokenize(["a dog runs", "two cats on a red sofa", "snow"], 20)


def max_differences(ours, hf: CLIPModel) -> tuple[float, float]:
    """max |ours - transformers| of the image and the text features."""
    images, ids = inputs()
    with torch.no_grad():
        image = (ours.encode_image(images) - features(hf.get_image_features(pixel_values=images))).abs().max()
        text = (ours.encode_text(ids) - features(hf.get_text_features(input_ids=ids))).abs().max()
    return image.item(), text.item()


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_a_transformers_folder_computes_transformers_features(hf_models, act, tmp_path):
    hf, folder = hf_models[act]
    model = load_clip(str(folder))
    assert model.config.activation == act
    assert model.config.vision_layers == 3 and model.config.transformer_layers == 2
    assert model.visual.heads == 2 and model.visual.input_resolution == 32
    assert max(max_differences(model, hf)) < 1e-5
    # The same folder in the older layout: pytorch_model.bin
    old = tmp_path / "bin"
    old.mkdir()
    shutil.copy(folder / "config.json", old)
    torch.save(load_file(str(folder / "model.safetensors")), old / "pytorch_model.bin")
    assert max(max_differences(load_clip(str(old)), hf)) < 1e-5
    # The activation is what makes the match: the other one is far off.
    other = ACTIVATIONS[1 - ACTIVATIONS.index(act)]
    assert max(max_differences(build_clip(read_clip_weights(folder).state_dict, other), hf)) > 1e-4


def test_the_folder_is_a_clip_for_the_factory_and_infer(hf_models, tmp_path):
    hf, folder = hf_models["gelu"]
    model = create_model(ModelConfig(max_frames=2), folder)
    assert model.clip.config.activation == "gelu"
    with pytest.raises(ValueError, match="--clip_activation quick_gelu contradicts the weights: config.json"):
        create_model(ModelConfig(clip_activation="quick_gelu"), folder)
    texts = ["a dog runs on the beach", "snow"]
    written = infer.main(["embed-text", "--prompt", "none", "--pretrained_clip_name", str(folder),
                          "--output", str(tmp_path / "text.npy"), *texts])
    with torch.no_grad():
        expected = features(hf.get_text_features(input_ids=tokenize(texts, 32))).numpy()
    assert np.abs(written - expected).max() < 1e-5


def _broken_folder(source: Path, target: Path, weights: bool = True, **tower_changes) -> Path:
    """A copy of `source` with `tower_changes` ({"text_config": {...}}, or top-level values) in its config.json."""
    target.mkdir()
    config = json.loads((source / "config.json").read_text())
    for key, value in tower_changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    (target / "config.json").write_text(json.dumps(config))
    if weights:
        shutil.copy(source / "model.safetensors", target)
    return target


@pytest.mark.parametrize("changes, message", [
    (dict(weights=False), "no model.safetensors or pytorch_model.bin beside config.json"),
    (dict(text_config={"hidden_act": "gelu_new"}), "text_config.hidden_act 'gelu_new' is not supported"),
    (dict(vision_config={"hidden_act": "quick_gelu"}), "the text and vision towers use different activations"),
    (dict(vision_config={"num_attention_heads": 4}), "only 64-wide heads"),
    (dict(text_config={"layer_norm_eps": 1e-6}), "layer_norm_eps 1e-06 is not supported"),
    (dict(model_type="siglip"), "model_type 'siglip': not a transformers CLIPModel"),
    (dict(text_config="gelu"), "config.json: text_config must be a JSON object of the tower's settings, got str 'gelu'"),
    (dict(vision_config_dict=[1, 2]), "config.json: vision_config_dict must be a JSON object .*, got list"),
])
def test_folders_that_are_not_a_supported_clip_are_refused_by_name(hf_models, tmp_path, changes, message):
    folder = _broken_folder(hf_models["gelu"][1], tmp_path / "broken", **changes)
    with pytest.raises(ValueError, match=message) as error:
        load_clip(str(folder))
    assert str(folder) in str(error.value)


def test_a_folder_without_a_config_or_with_foreign_tensors_is_refused(hf_models, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json in this folder: a folder of CLIP weights must be"):
        load_clip(str(tmp_path / "empty"))
    folder = _broken_folder(hf_models["gelu"][1], tmp_path / "extra")
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({**tensors, "vision_model.head.weight": torch.zeros(2)}, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"1 tensors that a transformers CLIPModel does not have.*head\.weight"):
        load_clip(str(folder))
    with pytest.raises(FileNotFoundError, match="is not downloaded: download the folder and pass its path"):
        load_clip("openai/clip-vit-base-patch32")


@pytest.mark.parametrize("shape", [(64, 32), (32, 64)])  # the first used to end in torch.cat's traceback
def test_a_q_k_or_v_projection_of_the_wrong_shape_is_refused_naming_the_tensor(hf_models, tmp_path, shape):
    folder = _broken_folder(hf_models["gelu"][1], tmp_path / "broken")
    tensors = load_file(str(folder / "model.safetensors"))
    name = "text_model.encoder.layers.1.self_attn.k_proj.weight"
    save_file({**tensors, name: torch.zeros(shape)}, folder / "model.safetensors")
    with pytest.raises(ValueError) as error:
        load_clip(str(folder))
    assert str(error.value) == (f"{folder}: model.safetensors: {name} has shape {list(shape)}, expected [64, 64]: a "
                                "layer's q, k and v projections are [width, width] matrices (the weights file is "
                                "damaged or not a CLIPModel's)")
