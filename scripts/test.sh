#!/usr/bin/env bash
# Set up (or reuse) .venv with everything the tests need, then run the test suite.
#   bash scripts/test.sh              # all tests
#   bash scripts/test.sh -k clip      # extra arguments go to pytest
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0, the CPU wheel).
# If a torch is already importable in .venv it is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
# The browser test (tests/test_serve.py) drives Debian's chromium headless: installed here when missing and this
# runs as root with apt-get (CI: .ci/run); elsewhere the test is skipped, saying so.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium for the browser test (apt-get)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
        >/dev/null || echo "could not install chromium: the browser test will be skipped" >&2
fi
python -m pytest "$@"
