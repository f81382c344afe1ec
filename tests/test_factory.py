"""The model factory (create_model, load_trained): every weights layout, configurations restored from checkpoints,
a checkpoint written before the factory existed; and the architecture rules (layering, no SystemExit in the
library)."""
from __future__ import annotations

import ast
import dataclasses
import logging
import re
from pathlib import Path

import pytest
import torch

from models import CheckpointError, ModelConfig, create_model, load_trained
from models.checkpoints import FORMAT, to_released_state_dict
from models.clip import CLIP, CLIPConfig, save_clip_torchscript
from models.tokenizer import tokenize
from tests.conftest import FRAMES, TINY, tiny_model, video_batch
from utils.engine.training.checkpoint import save_atomic

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "checkpoint_2026_12"
LIBRARY = ("models", "dataloaders", "utils")
# command-line entry points inside the library folders, and what they share to exit with one line
ENTRY_POINTS = {"utils/convert_released_checkpoint.py", "utils/engine/run/cli.py"}


def test_a_checkpoint_written_before_the_factory_loads_and_computes_what_it_computed(tmp_path):
    torch.manual_seed(0)
    save_clip_torchscript(CLIP(CLIPConfig.tiny()), tmp_path / "tiny_clip.pt")
    trained = load_trained(FIXTURE / "ckpt_best.pt", clip=tmp_path / "tiny_clip.pt")
    expected = torch.load(FIXTURE / "expected.pt", weights_only=True)
    assert trained.kind == "checkpoint" and trained.inputs == (32, 2, 16)
    assert trained.config == ModelConfig(max_frames=2, max_words=16)  # saved in its args, the rest defaults
    with torch.no_grad():
        model = trained.model.eval()
        video = model.encode_video(expected["video"], expected["video_mask"])
        text = model.encode_text(tokenize(expected["texts"], trained.inputs.max_words))
    torch.testing.assert_close(video, expected["video_features"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(text, expected["text_features"], rtol=1e-5, atol=1e-5)


def _clip_file(tmp_path: Path, clip: CLIP | None = None) -> Path:
    """`clip` (default: a random TINY one) saved as a state dict (exact float32)."""
    path = tmp_path / "clip.pt"
    torch.save((clip or CLIP(TINY)).state_dict(), path)
    return path


def test_every_layout_loads_through_load_trained(tmp_path):
    config = ModelConfig(max_frames=FRAMES, spatial_mask_grid="lattice")
    source = tiny_model(seed=3, spatial_mask_grid="lattice")
    learned = source.learned_state_dict()
    released = {"state_dict": {"module." + k: v for k, v in to_released_state_dict(source.state_dict()).items()}}
    run = tmp_path / "run"
    payloads = {run / "ckpt_best.pt": {"format": FORMAT, "model": learned, "model_config": config.to_dict()},
                tmp_path / "plain.pt": learned, tmp_path / "released.pth.tar": released}
    for path, payload in payloads.items():
        save_atomic(payload, path)
    clip = _clip_file(tmp_path, source.clip)
    video, mask = video_batch()
    with torch.no_grad():
        expected = source.encode_video(video, mask)
    for path, kind in ((run, "checkpoint"), (tmp_path / "plain.pt", "state dict"),
                       (tmp_path / "released.pth.tar", "released checkpoint")):
        trained = load_trained(path, config=None if kind == "checkpoint" else config, clip=clip)
        assert trained.kind == kind and trained.config == config
        with torch.no_grad():
            torch.testing.assert_close(trained.model.eval().encode_video(video, mask), expected, rtol=1e-5, atol=1e-6)


def test_the_saved_configuration_is_rebuilt_and_overrides_apply(tmp_path):
    config = ModelConfig(max_frames=FRAMES, max_words=12, spatial_top_k=3, adapter_width=8, spatial_kernel=(3, 5, 5))
    model = create_model(config, CLIP(TINY))
    save_atomic({"format": FORMAT, "model": model.learned_state_dict(), "model_config": config.to_dict(),
                 "args": {"pretrained_clip_name": str(_clip_file(tmp_path))}}, tmp_path / "ckpt_last.pt")
    trained = load_trained(tmp_path)  # the folder: ckpt_best.pt is absent, ckpt_last.pt is used; CLIP from args
    assert trained.config == config and trained.inputs.max_words == 12
    assert trained.model.video_encoder.spatial_prompt.top_k == 3
    assert load_trained(tmp_path, overrides={"conv_impl": "direct"}).config == config.replace(conv_impl="direct")
    with pytest.raises(CheckpointError, match="missing tensors"):
        load_trained(tmp_path, overrides={"temporal_prompt": "none", "lora": False})
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_trained(tmp_path, config=config.replace(adapter_width=16))


def test_bad_files_and_missing_weights_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ckpt_best.pt or ckpt_last.pt in folder"):
        load_trained(tmp_path)
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="cannot read .*truncated.pt as a checkpoint"):
        load_trained(tmp_path / "truncated.pt")
    save_atomic({"weights": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="neither a checkpoint of this project nor a state dict"):
        load_trained(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="the STOP/DGL prompts are trained weights"):
        load_trained(None, clip=CLIP(TINY))
    meanp = load_trained(None, config=ModelConfig(prompt="none"), clip=CLIP(TINY))
    assert meanp.kind is None and meanp.model.named_trainable_parameters() == []


def test_a_checkpoint_with_float_weights_stored_as_integers_is_refused_naming_the_tensor(tmp_path):
    learned = tiny_model(seed=3).learned_state_dict()
    name = next(k for k, v in learned.items() if v.is_floating_point())
    save_atomic({**learned, name: learned[name].round().long()}, tmp_path / "int64.pt")
    with pytest.raises(CheckpointError, match=rf"int64.pt \(state dict\): 1 floating-point tensors are stored as integers "
                                              rf"\(e.g. '{re.escape(name)}': torch.int64\)"):
        load_trained(tmp_path / "int64.pt", config=ModelConfig(max_frames=FRAMES), clip=CLIP(TINY))


def test_create_model_takes_a_clip_or_its_weights_file(tmp_path):
    clip = CLIP(TINY)
    from_file = create_model(ModelConfig(max_frames=FRAMES), _clip_file(tmp_path, clip))
    assert from_file.clip.state_dict().keys() == clip.state_dict().keys()
    assert all(torch.equal(v, clip.state_dict()[k]) for k, v in from_file.clip.state_dict().items())
    assert all(not p.requires_grad for p in from_file.clip.parameters())
    assert create_model(ModelConfig(max_frames=FRAMES), clip).clip is clip
    with pytest.raises(FileNotFoundError, match="CLIP weights not found"):
        create_model(ModelConfig(), tmp_path / "ViT-B-32.pt")


def test_the_clip_activation_is_saved_in_checkpoints_and_restored(tmp_path, caplog):
    torch.manual_seed(0)
    clip_file = _clip_file(tmp_path, CLIP(dataclasses.replace(TINY, activation="gelu")))  # declares none
    model = create_model(ModelConfig(max_frames=FRAMES, clip_activation="gelu"), clip_file).eval()
    assert model.clip.config.activation == "gelu" and model.config.clip_activation == "gelu"
    save_atomic({"format": FORMAT, "model": model.learned_state_dict(), "model_config": model.config.to_dict(),
                 "args": {"pretrained_clip_name": str(clip_file)}}, tmp_path / "ckpt_best.pt")
    trained = load_trained(tmp_path)
    assert trained.model.clip.config.activation == "gelu" and trained.config.clip_activation == "gelu"
    assert load_trained(tmp_path, overrides={"clip_activation": None}).model.clip.config.activation == "quick_gelu"
    video, mask = video_batch()
    with torch.no_grad():
        torch.testing.assert_close(trained.model.eval().encode_video(video, mask), model.encode_video(video, mask),
                                   rtol=1e-5, atol=1e-6)
    # main.py --init_model builds the flags' configuration: here the default activation, not the run's
    with caplog.at_level(logging.WARNING, logger="models.factory"):
        load_trained(tmp_path, config=ModelConfig(max_frames=FRAMES), clip=clip_file)
    assert "was trained on a CLIP computing gelu, this CLIP computes quick_gelu" in caplog.text
    with pytest.raises(ValueError, match="--clip_activation gelu, but this CLIP computes quick_gelu"):
        create_model(ModelConfig(clip_activation="gelu"), CLIP(TINY))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return {name.split(".")[0] for name in names}


def _library_files():
    return [p for folder in LIBRARY for p in sorted((REPO / folder).rglob("*.py"))]


def test_layering_models_below_dataloaders_below_utils():
    for path in _library_files():
        top = path.relative_to(REPO).parts[0]
        forbidden = {"models": {"dataloaders", "utils"}, "dataloaders": {"utils"}}.get(top, set())
        assert not _imports(path) & forbidden, f"{path.relative_to(REPO)} imports {_imports(path) & forbidden}"


ENGINE_GROUPS = ("runtime", "training", "run", "retrieval", "recognition", "tasks")  # utils/engine's, in order


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, known: set[str]) -> set[str]:
    """The repo modules ``path`` imports (``from a.b import c`` names module a.b.c when there is one)."""
    tree, package = ast.parse(path.read_text()), _module(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = (".".join(package[:len(package) - node.level + 1] + [node.module or ""]) if node.level
                    else node.module)
            base = base.strip(".")
            names |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {name for name in names if name in known}


def test_no_import_cycle_and_the_engine_groups_are_layered():
    files = _library_files() + [REPO / "main.py", REPO / "infer.py"]
    known = {_module(path) for path in files}
    graph = {_module(path): _imported_modules(path, known) for path in files}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            assert state.get(imported) != "open", f"import cycle: {' -> '.join(trail + [module, imported])}"
            if imported not in state:
                visit(imported, trail + [module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    for module, imported in graph.items():
        group = module.split(".")[2] if module.startswith("utils.engine.") else None
        for other in imported:
            other_group = other.split(".")[2] if other.startswith("utils.engine.") else None
            if group in ENGINE_GROUPS and other_group in ENGINE_GROUPS and other_group != group:
                assert ENGINE_GROUPS.index(other_group) < ENGINE_GROUPS.index(group), f"{module} imports {other}"


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and getattr(node.test.left, "id", None) == "__name__")


def test_library_code_raises_typed_errors_not_system_exit():
    for path in _library_files():
        if path.relative_to(REPO).as_posix() in ENTRY_POINTS:
            continue
        tree = ast.parse(path.read_text())
        guarded = {id(n) for node in ast.walk(tree) if _is_main_guard(node) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            name = node.func if isinstance(node, ast.Call) else node.exc if isinstance(node, ast.Raise) else None
            if isinstance(name, ast.Call):
                name = name.func
            text = ast.unparse(name) if name is not None else ""
            assert text not in ("SystemExit", "sys.exit", "exit"), f"{path.relative_to(REPO)}:{node.lineno}"
