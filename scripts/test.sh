#!/usr/bin/env bash
# Set up (or reuse) .venv with everything the tests need, then run the test suite.
#   bash scripts/test.sh              # all tests
#   bash scripts/test.sh -k clip      # extra arguments go to pytest
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0, the CPU wheel).
# If a torch is already importable in .venv it is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
python -m pytest "$@"
