#!/usr/bin/env bash
# The test suite, from a fresh machine: set up (idempotent), then pytest. Extra arguments
# go to pytest. Any pytest failure, including "no tests collected" (exit 5), fails this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=egl HF_HUB_OFFLINE=1
exec "${ROBALIGN_VENV:-.venv}/bin/python" -m pytest "$@"
