"""Success rate of every scripted-expert mode over N seeds (default 50), printed as a table.

    .venv/bin/python benchmarks/expert_success.py [--seeds 50] [--distractors] [--env NAME]
    .venv/bin/python benchmarks/expert_success.py --env reach-around --objective clearance

The foundation issue's bar: every mode >= 95%. With `--objective`, also the share of each
mode's episodes that satisfy that objective (what demos of the mode teach a policy about it).
"""

import argparse
import time

import numpy as np

import robalign.envs as envs
from robalign.envs.objectives import get_objective
from robalign.rollout import expert_episode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--distractors", action="store_true")
    parser.add_argument("--env", action="append", help="task name (repeatable); default all")
    parser.add_argument("--objective", help="also print the share of episodes satisfying this objective")
    args = parser.parse_args()
    objective = get_objective(args.objective) if args.objective else None
    extra = f" {args.objective} satisfied |" if objective else ""
    print(f"| env | mode | success ({args.seeds} seeds) | mean length | s/episode |{extra}")
    print("|---|---|---|---|---|" + ("---|" if objective else ""))
    for name in args.env or envs.available():
        env = envs.make(name, camera=False, distractors=args.distractors)
        for mode in env.modes:
            start = time.perf_counter()
            runs = [expert_episode(env, mode, seed) for seed in range(args.seeds)]
            took = (time.perf_counter() - start) / args.seeds
            rate = np.mean([t.success for t in runs])
            flag = "" if rate >= 0.95 else " **below 95%**"
            cells = f" {np.mean([objective.satisfied(t) for t in runs]):.0%} |" if objective else ""
            print(f"| {name} | {mode} | {rate:.0%}{flag} | {np.mean([len(t) for t in runs]):.0f} | {took:.2f} |{cells}",
                  flush=True)
        env.close()


if __name__ == "__main__":
    main()
