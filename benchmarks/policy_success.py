"""The policies issue's success bar: pretrain on demos, evaluate on held-out seeds, and
compare each behaviour mode's share of the rollouts with its share of the demos.

    python benchmarks/policy_success.py --demos runs/demos-reach --run runs/pt-reach --steps 3000 --episodes 100
    python benchmarks/policy_success.py --policy vla --env pick-place-lang --demos runs/demos-ppl \
        --run runs/pt-vla --steps 3000 --episodes 100 --held-out-episodes 50 --eval-set temperature=0

Skips pretraining when --run already holds a finished policy. Prints the wall time of
pretraining (the bar: <= 20 minutes on the 2-core machine), success with its Wilson 95%
interval, and the mode shares beside the demos' (the bar: within 15 points each). For a
language task it also prints success per colour word, and with --held-out-episodes the
success on instruction wordings no demo used (`env.instructions=held-out`).
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
    parser.add_argument("--policy", default="diffusion", help="policy preset to pretrain")
    parser.add_argument("--held-out-episodes", type=int, default=0, help="also evaluate on unseen wordings")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for pretrain, e.g. train.lr=3e-4")
    parser.add_argument("--eval-set", nargs="*", default=[],
                        help="checkpoint config changes for evaluation, e.g. temperature=0 (eval's policy_config.*)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--policy-dir", default=None, help="evaluate this checkpoint instead of RUN/policy")
    args = parser.parse_args()
    run = Path(args.run)
    if not (run / "policy").is_dir() and args.policy_dir is None:
        t = time.perf_counter()
        robalign("pretrain", f"policy={args.policy}", f"env={args.env}", f"dataset={args.demos}", f"steps={args.steps}",
                 f"output_dir={run}", *args.set)
        print(f"pretraining: {(time.perf_counter() - t) / 60:.1f} min for {args.steps} steps")
    policy = args.policy_dir or str(run / "policy")
    out = Path(policy).parent / f"eval-{args.episodes}-{int(time.time())}"
    t = time.perf_counter()
    eval_set = [f"policy_config.{kv}" for kv in args.eval_set]
    metrics = robalign("eval", f"policy={policy}", f"env={args.env}", f"episodes={args.episodes}", f"output_dir={out}",
                       *eval_set)
    print(f"evaluation: {(time.perf_counter() - t) / 60:.1f} min")
    demo_modes = json.loads((Path(args.demos) / "summary.json").read_text())["modes"]
    total = sum(demo_modes.values())
    print(f"success {metrics['success_rate']:.0%} (95% CI {metrics['success_ci95'][0]:.0%}-{metrics['success_ci95'][1]:.0%})")
    for mode, share in metrics["mode_share"].items():
        demo = demo_modes.get(mode, 0) / total
        print(f"  mode {mode:<12} rollouts {share:6.1%}  demos {demo:6.1%}  gap {100 * abs(share - demo):4.1f} points")
    print(json.dumps({k: metrics[k] for k in ("objectives", "objective_satisfied", "episode_length")}, indent=1))
    print_by_colour(metrics)
    if args.held_out_episodes:
        held = robalign("eval", f"policy={policy}", f"env={args.env}", "env.instructions=held-out",
                        f"episodes={args.held_out_episodes}", f"seed={200000}", f"output_dir={out}-held-out", *eval_set)
        lo, hi = held["success_ci95"]
        print(f"held-out wording: success {held['success_rate']:.0%} (95% CI {lo:.0%}-{hi:.0%}) "
              f"over {held['episodes']} episodes")
        print_by_colour(held)


def print_by_colour(metrics: dict) -> None:
    """Success per colour word of the instructions (pick-place-lang names red, green, blue)."""
    counts: dict[str, list[int]] = {}
    for text, (wins, n) in metrics["success_by_instruction"].items():
        colour = next((c for c in ("red", "green", "blue") if c in text.split()), None)
        if colour:
            counts.setdefault(colour, [0, 0])
            counts[colour][0] += wins
            counts[colour][1] += n
    for colour, (wins, n) in counts.items():
        print(f"  {colour:<6} {wins}/{n} = {wins / n:.0%}")


if __name__ == "__main__":
    main()
