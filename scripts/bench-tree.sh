#!/usr/bin/env bash
# Freeze a commit for a long benchmark run, so that editing the working tree meanwhile
# cannot change the code under it.
#
#   bash scripts/bench-tree.sh [COMMIT] [DIR]      (defaults: HEAD, ../robalign-bench)
#   DIR/.venv/bin/python benchmarks/alignment.py ...   (run from DIR)
#
# Why: `pip install -e` points every process at this checkout, and the benchmarks spawn
# worker processes (episode pools, vector envs, Ray) that import robalign when they start,
# not when the benchmark did. A file saved mid-run therefore reaches the workers and not
# the parent; two alignment runs crashed that way. DIR is a detached git worktree of
# COMMIT; DIR/.venv is a light venv that reuses this checkout's installed packages (no
# download, no copy) and imports robalign from DIR instead of from here. Remove it with
# `git worktree remove --force DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN="$PWD"
COMMIT="${1:-HEAD}"
DIR="${2:-$MAIN/../robalign-bench}"
SITE="$MAIN/.venv/lib/python3.11/site-packages"
FINDER="$SITE/__editable___robalign_0_1_0_finder.py"
if [[ ! -f "$FINDER" ]]; then
  echo "bench-tree: no editable robalign install in $MAIN/.venv; run scripts/setup.sh first" >&2
  exit 1
fi
if [[ -e "$DIR" ]]; then
  echo "bench-tree: $DIR exists; remove it (git worktree remove --force $DIR) or pass another DIR" >&2
  exit 1
fi
git worktree add --detach "$DIR" "$COMMIT"
DIR="$(cd "$DIR" && pwd)"
python3.11 -m venv --without-pip "$DIR/.venv"
BENCH_SITE="$DIR/.venv/lib/python3.11/site-packages"
# Packages from the main venv; .pth files in it are not run, so its robalign finder is not either.
echo "$SITE" > "$BENCH_SITE/zz_main_site_packages.pth"
sed "s#$MAIN#$DIR#g" "$FINDER" > "$BENCH_SITE/__editable___robalign_bench_finder.py"
echo "import __editable___robalign_bench_finder; __editable___robalign_bench_finder.install()" \
  > "$BENCH_SITE/__editable__.robalign_bench.pth"
(cd /tmp && "$DIR/.venv/bin/python" - "$DIR" <<'EOF'
import pathlib, sys
import robalign
where = pathlib.Path(robalign.__file__).resolve()
if not where.is_relative_to(pathlib.Path(sys.argv[1]).resolve()):
    sys.exit(f"bench-tree: robalign imports from {where}, not from {sys.argv[1]}")
print(f"bench-tree: {sys.argv[1]} imports robalign from {where.parent}")
EOF
)
echo "run benchmarks from $DIR with $DIR/.venv/bin/python (export MUJOCO_GL=egl HF_HUB_OFFLINE=1)"
