"""The policies issue's success bar: pretrain on demos, evaluate on held-out seeds, and
compare each behaviour mode's share of the rollouts with its share of the demos.

    python benchmarks/policy_success.py --demos runs/demos-reach --run runs/pt-reach --steps 3000 --episodes 100

Skips pretraining when --run already holds a finished policy. Prints the wall time of
pretraining (the bar: <= 20 minutes on the 2-core machine), success with its Wilson 95%
interval, and the mode shares beside the demos' (the bar: within 15 points each).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from robalign.cli import VERBS, compose


def robalign(*argv: str):
    return VERBS[argv[0]](compose(argv[0], list(argv[1:])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--env", default="reach-around")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--policy-dir", default=None, help="evaluate this checkpoint instead of RUN/policy")
    args = parser.parse_args()
    run = Path(args.run)
    if not (run / "policy").is_dir() and args.policy_dir is None:
        t = time.perf_counter()
        robalign("pretrain", f"env={args.env}", f"dataset={args.demos}", f"steps={args.steps}", f"output_dir={run}")
        print(f"pretraining: {(time.perf_counter() - t) / 60:.1f} min for {args.steps} steps")
    policy = args.policy_dir or str(run / "policy")
    out = Path(policy).parent / f"eval-{args.episodes}-{int(time.time())}"
    t = time.perf_counter()
    metrics = robalign("eval", f"policy={policy}", f"env={args.env}", f"episodes={args.episodes}", f"output_dir={out}")
    print(f"evaluation: {(time.perf_counter() - t) / 60:.1f} min")
    demo_modes = json.loads((Path(args.demos) / "summary.json").read_text())["modes"]
    total = sum(demo_modes.values())
    print(f"success {metrics['success_rate']:.0%} (95% CI {metrics['success_ci95'][0]:.0%}-{metrics['success_ci95'][1]:.0%})")
    for mode, share in metrics["mode_share"].items():
        demo = demo_modes.get(mode, 0) / total
        print(f"  mode {mode:<12} rollouts {share:6.1%}  demos {demo:6.1%}  gap {100 * abs(share - demo):4.1f} points")
    print(json.dumps({k: metrics[k] for k in ("objectives", "objective_satisfied", "episode_length")}, indent=1))


if __name__ == "__main__":
    main()
