"""What one round of expert-iteration imitation does to a policy, apart from the search.

Takes the episodes a run's round imitated (`rounds/NNN/kept.safetensors`), or the
pretraining demos themselves (`--imitate demos`: the control, data the policy already
fits), imitates them from the pretrained policy exactly as `ExpertIteration.update` does
(its `imitate`, with `--set` method overrides such as lr, updates, anchor_weight), then lets
the policy act alone on held-out seeds with `robalign eval`. A round costs 30+ min of
best-of-n rollouts here; this costs one imitation and one evaluation (2-4 min), so the
imitation's settings can be compared on the same kept episodes.

    python benchmarks/imitation.py --policy runs/mug/pt200/policy --env mug-grasp \
        --demos runs/mug/demos200 --kept runs/mug/bench/align-rapl/rounds/000 \
        --out runs/mug/imitation/default
    python benchmarks/imitation.py ... --imitate demos --out runs/mug/imitation/demos-control
    python benchmarks/imitation.py ... --set lr=3e-5 anchor_weight=1 --out runs/mug/imitation/lr3e-5-anchor1
    python benchmarks/imitation.py ... --set kept_windows=chunk --out runs/mug/imitation/chunk-windows

Writes OUT/policy, OUT/imitation.json (the settings and the update's figures) and OUT/eval
(`robalign eval`'s metrics.json and episodes.json); prints success, the objective's
satisfied shares and the mode shares.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from robalign.alignment.anchor import DemoAnchor, make_anchor
from robalign.alignment.loop import KEPT_FILE, load_episodes
from robalign.alignment.methods import MethodConfig, make_aligner
from robalign.cli import VERBS, compose
from robalign.preferences.store import PreferenceStore
from robalign.policies import load_policy
from robalign.policies.data import DemoWindows
from robalign.policies.pretrained import config_from_dict

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="the pretrained policy directory (the round's start)")
    parser.add_argument("--env", required=True)
    parser.add_argument("--demos", required=True, help="the pretraining demos: the anchor (anchor_weight > 0), "
                                                       "and --imitate demos")
    parser.add_argument("--kept", help="a run's rounds/NNN directory (or its kept.safetensors)")
    parser.add_argument("--imitate", choices=["kept", "demos", "rollouts"], default="kept",
                        help="the kept episodes; the demos (the control: what a round's optimiser does alone); or "
                             "the plain rollouts in a preference store (--rollouts: the policy's own episodes, no search)")
    parser.add_argument("--demo-episodes", type=int, default=None,
                        help="with --imitate demos: only the first N demos (as few episodes as a round keeps)")
    parser.add_argument("--rollouts", help="a preference store directory (`robalign rollouts` output)")
    parser.add_argument("--out", required=True, help="a new directory")
    parser.add_argument("--set", nargs="*", default=[], help="method overrides, e.g. lr=3e-5 anchor_weight=1")
    parser.add_argument("--episodes", type=int, default=80, help="held-out episodes")
    parser.add_argument("--seed", type=int, default=100000, help="the first held-out seed")
    parser.add_argument("--batch-seed", type=int, default=0, help="seeds the windows drawn and the loss's noise")
    args = parser.parse_args()
    if args.imitate == "kept" and not args.kept:
        parser.error("--imitate kept needs --kept (a run's rounds/NNN directory)")
    if args.imitate == "rollouts" and not args.rollouts:
        parser.error("--imitate rollouts needs --rollouts (a preference store directory)")
    out = Path(args.out)
    if out.exists():
        parser.error(f"{out} exists; give a new --out")

    # `robalign align`'s own composition: the method's yaml, its typo check, then the overrides
    method_cfg = compose("align", ["method=expert-iteration", *(f"method.{x}" for x in args.set)]).method
    method_dict = OmegaConf.to_container(method_cfg)
    method = config_from_dict(MethodConfig, method_dict, "method")
    aligner = make_aligner(method)
    policy = load_policy(args.policy)
    aligner.check(policy)
    c, cls = policy.config, type(policy)
    keys, horizon = cls.input_keys(c), cls.window_horizon(c)
    anchor_windows = DemoWindows(args.demos, keys, c.n_obs_steps, horizon) if method.anchor_weight > 0 else None
    if args.imitate == "demos":
        windows = (anchor_windows if anchor_windows is not None and args.demo_episodes is None else
                   DemoWindows(args.demos, keys, c.n_obs_steps, horizon, max_episodes=args.demo_episodes))
        imitated = f"{windows.num_episodes} demos"
    else:
        if args.imitate == "kept":
            path = Path(args.kept)
            path = path / KEPT_FILE if path.is_dir() else path
            episodes, imitated = load_episodes(path), str(path)
        else:  # the store's rollouts, the successful ones under method.successful_only, as update() filters
            with PreferenceStore(args.rollouts, create=False) as store:
                episodes = [store.load_trajectory(i) for i in store.trajectory_ids(args.env)]
            episodes = [t for t in episodes if t.success or not method.successful_only]
            imitated = f"{len(episodes)} rollouts of {args.rollouts}"
        windows = aligner.windows(policy, episodes)  # as the round cut them (method.kept_windows)

    torch.manual_seed(args.batch_seed)  # the losses' own noise draws
    generator = torch.Generator().manual_seed(args.batch_seed)
    anchor = make_anchor(aligner, None if anchor_windows is None else DemoAnchor(anchor_windows), [], generator)
    # eval mode throughout, as in the loop (its rollouts set it; the diffusion networks have no dropout)
    t0 = time.perf_counter()
    stats = aligner.imitate(policy, windows, anchor, generator)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True)
    policy.save_pretrained(out / "policy")
    record = {"policy": str(Path(args.policy).absolute()), "imitated": imitated, "method": method_dict,
              "batch_seed": args.batch_seed, "update": stats, "seconds": round(seconds, 1)}
    (out / "imitation.json").write_text(json.dumps(record, indent=2))
    print(f"imitated {imitated} for {method.updates} updates in {seconds:.0f} s: loss {stats['loss_first']:.4f} -> "
          f"{stats['loss_last']:.4f}" + (f", anchor {stats['anchor']:.4f}" if stats["anchor"] is not None else ""))

    run_eval = VERBS["eval"]
    metrics = run_eval(compose("eval", [f"policy={out / 'policy'}", f"env={args.env}", f"episodes={args.episodes}",
                                        f"seed={args.seed}", "videos=0", "progress=false", f"output_dir={out / 'eval'}"]))
    satisfied = ", ".join(f"{k} satisfied {v:.1%}" for k, v in metrics["objective_satisfied"].items())
    print(f"success {metrics['success_rate']:.1%}, mean length {metrics['episode_length']:.1f}, {satisfied}, "
          f"modes {json.dumps({k: round(v, 3) for k, v in metrics['mode_share'].items()})}")


if __name__ == "__main__":
    main()
