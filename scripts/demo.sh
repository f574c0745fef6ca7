#!/usr/bin/env bash
# The main job until the full loop exists: record scripted-expert demonstrations of every
# task (LeRobotDataset) with an mp4 preview per mode, under runs/demos-<time>/<task>/,
# then the preference stage: reach-around rollouts into a preference store, queries, and a
# simulated person answering them through the annotation server; then a RAPL visual
# reward learnt from those answers, and its evaluation (metrics and plots).
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

R=.venv/bin/robalign
STORE="$OUT/prefs"
$R rollouts env=reach-around n="${ROLLOUTS:-8}" drift=0.3 store="$STORE"
$R prefs queries store="$STORE" n=6 strategy=random kind=triplet
$R prefs simulate store="$STORE" objective=clearance rationality=200
$R prefs queries store="$STORE" n=4 strategy=disagreement
$R reward method=rapl prefs="$STORE" objective=clearance demos_top=2 output_dir="$OUT/reward"
$R reward eval reward="$OUT/reward" prefs="$STORE" output_dir="$OUT/reward-eval"
echo "preference store: $STORE; reward: $OUT/reward (plots in $OUT/reward-eval)"
echo "compare rollouts yourself: $R prefs annotator store=$STORE name=YOU  (prints a token), then"
echo "  $R prefs serve store=$STORE  and open http://127.0.0.1:8000/?token=TOKEN"
