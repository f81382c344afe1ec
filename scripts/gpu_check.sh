#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): every CUDA path of the repository, checked and measured, in under 8
# minutes on one GPU; --device cpu --tiny runs the same checks small on a CPU (under a minute; the test suite's).
#
#   bash scripts/gpu_check.sh [--device auto|cuda|cuda:N|cpu] [--tiny] [--output DIR] [--checks NAME ...]
#
# Writes DIR/gpu_check.json (every check's status, reason and figures) and DIR/gpu_check.md (a readable summary);
# DIR defaults to gpu_check/. Exit status 1 when a check failed, 0 otherwise (passed or not applicable).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m benchmarks.gpu_check "$@"
