"""The alignment issue's bars: align a pretrained policy with a simulated person's objective
through rewards learnt from at most 150 preferences, and report before / after on the same
held-out seeds, side by side for each reward.

    python benchmarks/alignment.py --policy runs/pt/policy --demos runs/demos --run runs/bench-align \
        --rewards rapl rlhf oracle --objective clearance
    python benchmarks/alignment.py ... --set method=best-of-n method.n=8 --suffix=-best-of-8
    python benchmarks/alignment.py --env mug-grasp --objective handle-grasp ...
    python benchmarks/alignment.py ... --rewards rapl --grape-reward 0.15 --suffix=-grape  # success + 0.15 x rapl
    python benchmarks/alignment.py ... --rewards rapl --reward-set encoder=scene-cnn \
        encoder_weights=runs/encoder/encoder.safetensors --reward-suffix=-scene --suffix=-scene
    python benchmarks/alignment.py ... --rewards oracle --scorer grape \
        --set 'grape.objectives={clearance: 20}' --suffix=-grape                        # success + 20 x clearance

Steps (each skipped when its directory already exists, so a killed benchmark continues):
  1. `rollouts` of the pretrained policy into a preference store, `prefs queries` (random
     triplets: each implies 3 pairs, so 50 triplets = 150 preferences), `prefs simulate`
  2. `reward method=M` per reward (oracle: the objective itself). OT rewards (rapl,
     imagenet-ot) match rollouts against the 5 compared rollouts the answers rank highest
     (`--references preferred`, as benchmarks/reward_alignment.py does) or against every
     pretraining demo (`--references demos`, the runs before 2026-12-04). The demos show
     every mode, the disliked ones too; on 40 held-out rollouts the two choices ranked the
     objective about equally (Spearman rho 0.46 vs 0.40 reach-around, 0.62 vs 0.68
     mug-grasp: within one seed's noise), so the README's rows say which they used.
  3. `align scorer=reward reward=...` per reward with the same seeds and settings; with
     `--grape-reward W`, `scorer=grape grape.success=1 grape.reward=W reward=...` (GRAPE's
     sum: the simulator's success beside the learnt reward); with `--scorer grape` and no
     `--grape-reward`, a grape score set by `--set grape.*` alone (no learnt reward)
Prints one table: success, the objective's mean and satisfied share, KL to the reference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from robalign.cli import VERBS, compose
from robalign.envs.objectives import get_objective


def robalign(*argv: str):
    return VERBS[argv[0]](compose(argv[0], list(argv[1:])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="pretrained policy directory")
    parser.add_argument("--demos", required=True, help="`robalign demos` run (OT rewards' demos, anchor, demo NLL)")
    parser.add_argument("--run", required=True)
    parser.add_argument("--env", default="reach-around")
    parser.add_argument("--objective", default="clearance")
    parser.add_argument("--rationality", type=float, default=None,
                        help="the simulated person's; default: the objective's registered one "
                             "(clearance 200 per metre, handle-grasp 10)")
    parser.add_argument("--references", choices=["preferred", "demos"], default="preferred",
                        help="what OT rewards match rollouts against: the 5 most preferred compared "
                             "rollouts, or every demo in --demos")
    parser.add_argument("--rewards", nargs="+", default=["rapl", "rlhf", "oracle"])
    parser.add_argument("--rollouts", type=int, default=40, help="episodes people compare")
    parser.add_argument("--triplets", type=int, default=50, help="triplet queries (x3 preferences)")
    parser.add_argument("--set", nargs="*", default=[], help="extra `robalign align` overrides, e.g. rounds=4")
    parser.add_argument("--scorer", choices=["reward", "grape"], default="reward",
                        help="what ranks rollouts: the learnt reward alone, or GRAPE's weighted sum")
    parser.add_argument("--grape-reward", type=float, default=None,
                        help="the learnt reward's weight in the grape score, beside success weighted 1 "
                             "(implies --scorer grape)")
    parser.add_argument("--suffix", default="", help="appended to each align-REWARD directory (another method's run)")
    parser.add_argument("--reward-set", nargs="*", default=[],
                        help="extra `robalign reward` overrides, e.g. encoder=scene-cnn encoder_weights=PATH")
    parser.add_argument("--reward-suffix", default="", help="appended to each reward-REWARD directory (another reward's run)")
    args = parser.parse_args()
    if args.rationality is None:
        args.rationality = getattr(get_objective(args.objective), "rationality", None)
        if args.rationality is None:
            parser.error(f"objective {args.objective!r} registers no rationality; pass --rationality")
    if args.grape_reward is not None and not args.grape_reward > 0:
        parser.error(f"--grape-reward is the learnt reward's weight, > 0; got {args.grape_reward}")
    if args.grape_reward is not None:
        scoring = ["scorer=grape", "grape.success=1", f"grape.reward={args.grape_reward}"]
    elif args.scorer == "grape":
        scoring = ["scorer=grape"]  # grape.* in --set say what it weighs; no learnt reward
    else:
        scoring = ["scorer=reward"]
    weighs_reward = args.scorer == "reward" or args.grape_reward is not None
    run = Path(args.run)
    store = run / "prefs"
    if not (store / ".complete").is_file():
        robalign("rollouts", f"env={args.env}", f"policy={args.policy}", f"n={args.rollouts}", f"store={store}",
                 "seed=20000", "progress=false")
        robalign("prefs queries", f"store={store}", f"n={args.triplets}", "kind=triplet", "strategy=random")
        robalign("prefs simulate", f"store={store}", f"objective={args.objective}", f"rationality={args.rationality}",
                 "progress=false")
        (store / ".complete").write_text("")
    rows = []
    for method in args.rewards:
        reward = run / f"reward-{method}{args.reward_suffix}"
        if not (reward / "reward_config.json").is_file():
            references = [f"demos={args.demos}"] if args.references == "demos" else []
            robalign("reward", f"method={method}", f"prefs={store}", *references,
                     f"objective={args.objective}", f"output_dir={reward}", "progress=false", *args.reward_set)
        out = run / f"align-{method}{args.suffix}"
        if not (out / "metrics.json").is_file():
            t = time.perf_counter()
            resume = ["resume=true"] if (out / "align.json").is_file() else []
            weighed = [f"reward={reward}"] if weighs_reward else []
            robalign("align", f"env={args.env}", f"policy={args.policy}", *scoring, *weighed,
                     f"objective={args.objective}", f"demos={args.demos}", f"output_dir={out}", "progress=false",
                     *args.set, *resume)
            print(f"align with {method}: {(time.perf_counter() - t) / 60:.1f} min")
        rows.append((method, json.loads((out / "metrics.json").read_text())))
    print(f"\n{args.env}, objective {args.objective}: held-out episodes before -> after")
    print(f"{'reward':<8} {'success':>15} {'satisfied':>15} {'objective':>19} {'KL/step':>8} {'demo NLL':>15}")
    for method, m in rows:
        b, a, d = m["before"], m["after"], m["drift"]
        nll = f"{d['demo_nll_reference']:.4f}->{d['demo_nll']:.4f}" if d["demo_nll"] is not None else "-"
        print(f"{method:<8} {b['success_rate']:>6.0%} -> {a['success_rate']:<5.0%} "
              f"{b['satisfied_share']:>6.0%} -> {a['satisfied_share']:<5.0%} "
              f"{b['objective_mean']:>8.4f} -> {a['objective_mean']:<7.4f} {d['kl_per_step']:>8.3f} {nll:>15}")
    for method, m in rows:
        if "best_of_n" in m:
            print(method, "best-of-n choices:", m["best_of_n"])
        print(method, "rounds:", [(h["round"], round(h["satisfied_share"] or 0, 2), round(h["success_rate"], 2))
                                  for h in m["rounds"]])


if __name__ == "__main__":
    main()
