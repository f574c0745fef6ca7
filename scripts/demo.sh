#!/usr/bin/env bash
# The main job: the whole loop on the small default (`robalign pipeline`): reach-around
# expert demos -> pretrain the diffusion policy -> rollouts of it -> triplet queries that a
# simulated person who cares about clearance from the vase answers through the annotation
# server -> a RAPL visual reward -> diffusion-DPO alignment with that reward -> report.html
# with the before/after table, plots and side-by-side videos. Extra key=value arguments go
# to the pipeline (e.g. objective=left-side, or objective=mymodule:my_objective); rerunning
# with the same OUT continues a killed run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=egl HF_HUB_OFFLINE=1
OUT="${OUT:-runs/pipeline-$(date +%Y%m%d-%H%M%S)}"
.venv/bin/robalign pipeline output_dir="$OUT" "$@"
echo "report: $OUT/report.html  (figures: $OUT/summary.json; per round: $OUT/align/rounds/)"
echo "compare rollouts yourself: .venv/bin/robalign prefs annotator store=$OUT/prefs name=YOU  (prints a token), then"
echo "  .venv/bin/robalign prefs serve store=$OUT/prefs  and open http://127.0.0.1:8000/?token=TOKEN"
