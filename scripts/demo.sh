#!/usr/bin/env bash
# The main job until the full loop exists: record scripted-expert demonstrations of every
# task (LeRobotDataset) with an mp4 preview per mode, under runs/demos-<time>/<task>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MUJOCO_GL=egl HF_HUB_OFFLINE=1
OUT="runs/demos-$(date +%Y%m%d-%H%M%S)"
for task in reach-around mug-grasp cube-group pick-place-lang; do
  .venv/bin/robalign demos env="$task" n="${N:-6}" preview=1 env.distractors="${DISTRACTORS:-false}" \
    output_dir="$OUT/$task" "$@"
done
echo "videos:"; ls "$OUT"/*/videos/*.mp4
