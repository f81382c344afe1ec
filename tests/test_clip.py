"""The CLIP backbone and its loader against OpenAI's reference implementation (clip/model.py)."""

import argparse
import dataclasses
import hashlib
import logging
import shutil

import pytest
import torch
from safetensors.torch import save_file

from models import ModelConfig, add_model_args, create_model
from models import clip as clip_module
from models.clip import CLIP, CLIPConfig, ResidualAttentionBlock, build_clip, load_clip, save_clip_torchscript

B32_SHA = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def reference_clip(reference_clip_model, config: CLIPConfig, seed: int = 0):
    """OpenAI's CLIP of `config`'s sizes; a gelu config swaps its QuickGELU for nn.GELU (open_clip's CLIP)."""
    torch.manual_seed(seed)
    fields = dataclasses.asdict(config)
    quick_gelu = reference_clip_model.QuickGELU
    if fields.pop("activation") == "gelu":
        reference_clip_model.QuickGELU = torch.nn.GELU  # looked up when the blocks are built
    try:
        return reference_clip_model.CLIP(**fields).eval()
    finally:
        reference_clip_model.QuickGELU = quick_gelu


def save_like_openai(reference_clip_model, model, path):
    """What OpenAI ships: the model traced to TorchScript with fp16 weights plus three integer entries."""
    for key, value in (("input_resolution", model.visual.input_resolution),
                       ("context_length", model.context_length), ("vocab_size", model.vocab_size)):
        model.__dict__.pop(key, None)
        model.register_buffer(key, torch.tensor(value))
    reference_clip_model.convert_weights(model)
    size = model.input_resolution.item()
    with torch.no_grad():
        traced = torch.jit.trace(model.float(), (torch.zeros(1, 3, size, size),
                                                 torch.zeros(1, model.context_length.item(), dtype=torch.long)),
                                 check_trace=False)
    torch.jit.save(traced.half(), str(path))
    # The reference computes with the fp16-rounded weights, in float32 like load_clip.
    return model.float()


def inputs(config: CLIPConfig, n: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, config.image_resolution, config.image_resolution, generator=g)
    ids = torch.zeros(n, config.context_length, dtype=torch.long)
    for row, length in enumerate([5, 17, config.context_length - 2][:n]):
        ids[row, 0] = config.vocab_size - 2
        ids[row, 1:length + 1] = torch.randint(1, config.vocab_size - 2, (length,), generator=g)
        ids[row, length + 1] = config.vocab_size - 1
    return images, ids


def assert_same_features(ours: CLIP, reference, config: CLIPConfig):
    images, ids = inputs(config)
    with torch.no_grad():
        assert relative_error(ours.encode_image(images), reference.encode_image(images)) < 1e-5
        assert relative_error(ours.encode_text(ids), reference.encode_text(ids)) < 1e-5


SMALL = CLIPConfig(embed_dim=48, image_resolution=48, vision_layers=3, vision_width=128, vision_patch_size=16,
                   context_length=20, vocab_size=500, transformer_width=64, transformer_heads=1,
                   transformer_layers=2)


@pytest.mark.parametrize("config", [CLIPConfig.tiny(), SMALL], ids=["tiny", "small"])
def test_state_dict_and_torchscript_match_reference(reference_clip_model, config, tmp_path):
    reference = reference_clip(reference_clip_model, config)
    assert_same_features(build_clip(reference.state_dict()), reference, config)

    torch.save(reference.state_dict(), tmp_path / "plain.pt")
    assert_same_features(load_clip(str(tmp_path / "plain.pt")), reference, config)

    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "w.safetensors")
    assert_same_features(load_clip(str(tmp_path / "w.safetensors")), reference, config)

    reference16 = save_like_openai(reference_clip_model, reference, tmp_path / "openai.pt")
    loaded = load_clip(str(tmp_path / "openai.pt"))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert loaded.config == config
    assert_same_features(loaded, reference16, config)


def test_a_gelu_state_dict_with_clip_activation_gelu_matches_a_gelu_reference(reference_clip_model, tmp_path,
                                                                              caplog):
    """open_clip's LAION / DataComp ViTs: OpenAI's names, GELU. --clip_activation gelu computes them; without it
    the default (QuickGELU) is used and a warning says so."""
    config = dataclasses.replace(SMALL, activation="gelu")
    reference = reference_clip(reference_clip_model, config)
    assert isinstance(reference.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    torch.save(reference.state_dict(), tmp_path / "gelu.pt")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "gelu.safetensors")
    for name in ("gelu.pt", "gelu.safetensors"):
        with caplog.at_level(logging.INFO, logger="models.clip"):
            model = load_clip(str(tmp_path / name), activation="gelu")
        assert model.config == config and "gelu activation (--clip_activation)" in caplog.text
        assert_same_features(model, reference, config)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="models.clip"):
        default = load_clip(str(tmp_path / "gelu.pt"))
    assert default.config.activation == "quick_gelu"
    assert "quick_gelu activation, the default for weights that do not declare one" in caplog.text
    assert "--clip_activation gelu" in caplog.text
    images, _ = inputs(config)
    with torch.no_grad():
        assert relative_error(default.encode_image(images), reference.encode_image(images)) > 1e-3
    args = add_model_args(argparse.ArgumentParser()).parse_args(["--clip_activation", "gelu"])
    assert create_model(ModelConfig.from_args(args), tmp_path / "gelu.pt").clip.config.activation == "gelu"


def test_openai_archives_are_quick_gelu(tmp_path):
    save_clip_torchscript(CLIP(CLIPConfig.tiny()), tmp_path / "tiny.pt")
    assert load_clip(str(tmp_path / "tiny.pt"), activation="quick_gelu").config.activation == "quick_gelu"
    with pytest.raises(ValueError, match="--clip_activation gelu contradicts the weights: an OpenAI TorchScript "
                                         "archive says quick_gelu"):
        load_clip(str(tmp_path / "tiny.pt"), activation="gelu")
    with pytest.raises(ValueError, match="a gelu CLIP cannot be saved as an OpenAI archive"):
        save_clip_torchscript(CLIP(dataclasses.replace(CLIPConfig.tiny(), activation="gelu")), tmp_path / "g.pt")
    with pytest.raises(ValueError, match="unknown CLIP activation 'relu'"):
        dataclasses.replace(CLIPConfig.tiny(), activation="relu")


@pytest.mark.slow
def test_vit_b32_shaped_torchscript_matches_reference(reference_clip_model, tmp_path, monkeypatch):
    monkeypatch.setenv("STOP_SKIP_CLIP_CHECKSUM", "1")  # random weights under OpenAI's file name
    config = CLIPConfig.vit_b_32()
    reference = save_like_openai(reference_clip_model, reference_clip(reference_clip_model, config),
                                 tmp_path / "ViT-B-32.pt")
    model = load_clip("ViT-B/32", pretrained_dir=str(tmp_path))
    assert model.visual.input_resolution == 224 and model.visual.grid_size == 7
    assert model.visual.width == 768 and model.visual.layers == 12 and model.visual.heads == 12
    assert model.config == config
    images, ids = inputs(config, n=2)
    with torch.no_grad():
        assert relative_error(model.encode_image(images), reference.encode_image(images)) < 1e-5
        assert relative_error(model.encode_text(ids), reference.encode_text(ids)) < 1e-5


def test_our_torchscript_export_round_trips(tmp_path):
    torch.manual_seed(0)
    model = CLIP(CLIPConfig.tiny()).eval()
    save_clip_torchscript(model, tmp_path / "tiny.pt")
    stored = torch.jit.load(str(tmp_path / "tiny.pt")).state_dict()
    assert stored["visual.conv1.weight"].dtype == torch.float16
    loaded = load_clip(str(tmp_path / "tiny.pt"))
    expected = model.half().float()
    images, ids = inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), expected.encode_image(images))
        torch.testing.assert_close(loaded.encode_text(ids), expected.encode_text(ids))


def test_short_text_uses_leading_positions():
    """Texts shorter than the context (max_words = 32) read the first positional embeddings, as released."""
    torch.manual_seed(0)
    model = CLIP(CLIPConfig.tiny()).eval()
    _, ids = inputs(model.config, n=2)
    short = ids[:, :24]
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(short), model.encode_text(ids), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="exceeds the context length"):
        model.encode_text(torch.zeros(1, 78, dtype=torch.long))


def test_missing_weights_message_names_path_source_and_checksum(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_clip("ViT-B/32", pretrained_dir=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "ViT-B-32.pt") in message
    assert B32_SHA in message and "openaipublic" in message and "--pretrained_dir" in message


def test_incomplete_state_dict_lists_missing_keys(tmp_path):
    state_dict = CLIP(CLIPConfig.tiny()).state_dict()
    del state_dict["visual.ln_post.weight"], state_dict["transformer.resblocks.1.mlp.c_fc.bias"]
    torch.save(state_dict, tmp_path / "broken.pt")
    with pytest.raises(ValueError) as error:
        load_clip(str(tmp_path / "broken.pt"))
    assert "visual.ln_post.weight" in str(error.value)
    assert "transformer.resblocks.1.mlp.c_fc.bias" in str(error.value)
    assert str(tmp_path / "broken.pt") in str(error.value)


def test_non_clip_file_is_rejected_clearly(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="Not a ViT CLIP state dict: missing"):
        load_clip(str(tmp_path / "other.pt"))
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        load_clip(str(tmp_path / "list.pt"))


def test_pickled_code_is_not_executed(tmp_path):
    """Plain state dicts load with weights_only=True: a pickle that would run code is refused."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception) as error:
        load_clip(str(tmp_path / "evil.pt"))
    assert "Weights only load failed" in str(error.value) or "weights_only" in str(error.value)


def test_float_weights_stored_as_integers_are_refused_naming_the_file_and_the_tensor(tmp_path):
    state_dict = CLIP(CLIPConfig.tiny()).state_dict()
    state_dict["visual.proj"] = (state_dict["visual.proj"] * 100).long()  # written wrong: rounded to integers
    torch.save(state_dict, tmp_path / "int64.pt")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'int64.pt'}: the CLIP weights: 1 floating-point tensors "
                                         r"are stored as integers \(e.g. 'visual.proj': torch.int64\)"):
        load_clip(str(tmp_path / "int64.pt"))


def test_a_file_named_like_an_openai_clip_must_have_its_sha256(tmp_path, monkeypatch):
    path = tmp_path / "ViT-B-32.pt"
    save_clip_torchscript(CLIP(CLIPConfig.tiny()), path)  # not OpenAI's file, under its name
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError) as error:
        load_clip("ViT-B/32", pretrained_dir=str(tmp_path))
    assert str(error.value) == (
        f"{path}: SHA-256 {found} is not OpenAI's {B32_SHA} for ViT-B-32.pt: the file is damaged or another file "
        f"under its name; download it again (https://openaipublic.azureedge.net/clip/models/{B32_SHA}/ViT-B-32.pt), "
        "or set STOP_SKIP_CLIP_CHECKSUM=1 to load a deliberately modified file")
    monkeypatch.setenv("STOP_SKIP_CLIP_CHECKSUM", "1")
    assert load_clip(str(path)).config == CLIPConfig.tiny()  # the documented way past the check
    monkeypatch.delenv("STOP_SKIP_CLIP_CHECKSUM")
    shutil.copy(path, tmp_path / "mine.pt")
    assert load_clip(str(tmp_path / "mine.pt")).config == CLIPConfig.tiny()  # other names are not checked
    monkeypatch.setitem(clip_module.PRETRAINED, "ViT-B/32", ("ViT-B-32.pt", found))  # as if it were OpenAI's
    assert load_clip("ViT-B/32", pretrained_dir=str(tmp_path)).config == CLIPConfig.tiny()
    flipped = bytearray(path.read_bytes())
    flipped[len(flipped) // 2] ^= 1
    (tmp_path / "flipped").mkdir()
    (tmp_path / "flipped" / "ViT-B-32.pt").write_bytes(bytes(flipped))  # one bit of it flipped
    with pytest.raises(ValueError, match=rf"ViT-B-32.pt: SHA-256 [0-9a-f]{{64}} is not OpenAI's {found} for "
                                         r"ViT-B-32.pt: the file is damaged"):
        load_clip("ViT-B/32", pretrained_dir=str(tmp_path / "flipped"))


def test_a_block_read_at_its_first_tokens_equals_those_rows_of_the_whole_block():
    """The vision tower's last block runs for the class token alone: the same rows, values and input gradients."""
    torch.manual_seed(0)
    block = ResidualAttentionBlock(64, 4)
    whole_x, read_x = (torch.randn(3, 10, 64).requires_grad_() for _ in range(2))
    with torch.no_grad():
        read_x.copy_(whole_x)
    expected, read = block(whole_x)[:, :2], block(read_x, read=2)
    torch.testing.assert_close(read, expected, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(read)
    (expected * weights).sum().backward()
    (read * weights).sum().backward()
    torch.testing.assert_close(read_x.grad, whole_x.grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no causal mask"):
        block(read_x, is_causal=True, read=2)
