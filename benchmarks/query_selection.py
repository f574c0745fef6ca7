"""Does disagreement-based query selection need fewer answers than random selection?

    MUJOCO_GL=egl .venv/bin/python benchmarks/query_selection.py [--pool 60 --seeds 3 --batch 4 --budget 40]

A pool of reach-around trajectories (the scripted expert in all three modes, with slowly
varying action noise so the closest approach to the vase varies) is split into train and
held-out trajectories. For each strategy and seed, a fresh PreferenceStore gets the train
trajectories; then, round after round, `--batch` queries are selected and added, a
simulated person who cares about `clearance` (rationality 200: a 1 cm difference is
answered correctly 88% of the time) answers them through the real annotation server and
HTTP client, and a Bradley-Terry ensemble fit on all answers so far is scored on every
held-out pair (labelled by the true clearance). Printed: held-out accuracy per number of
answers (mean over seeds) and the answers each strategy needs to reach a target accuracy.

The pool is cached per episode under benchmarks/.cache/ (2-3 s an episode to simulate on
CPU, so a 60-trajectory pool takes ~2-3 minutes once and seconds afterwards); selection,
answering and fitting take well under a second a round. Figures were taken on a 2-core
shared CPU VM, no GPU (MuJoCo physics with the camera off; the reward model is numpy).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import robalign.envs as envs  # before anything imports mujoco
from robalign.annotators import SimulatedAnnotator
from robalign.envs import ScriptedExpert, get_objective
from robalign.preferences.client import PreferenceClient
from robalign.preferences.selection import BradleyTerryEnsemble, select_queries, store_features, trajectory_features
from robalign.preferences.simulate import running_server, simulate_annotator
from robalign.preferences.store import PreferenceStore, pack_arrays, unpack_arrays
from robalign.rollout import record_episode
from robalign.types import Trajectory

ENV, OBJECTIVE = "reach-around", "clearance"
CACHE = Path(__file__).parent / ".cache" / "query-selection-v2"
STRATEGIES = ("random", "disagreement")


# ---- the pool ------------------------------------------------------------------------------
def noisy_expert_episode(env, seed: int) -> Trajectory:
    """The expert in mode seed % 3 with AR(1) noise on its translation: smooth noise bends
    the path (white noise would mostly average out in the OSC controller)."""
    mode = env.modes[seed % len(env.modes)]
    rng = np.random.default_rng([seed, 2])
    sigma = float(rng.uniform(0.0, 0.6))
    holder = {"drift": np.zeros(3)}

    def plan() -> None:
        holder["expert"] = ScriptedExpert(env, mode, np.random.default_rng([seed, 1]))

    def act(obs) -> np.ndarray:
        action = holder["expert"].act()
        holder["drift"] = 0.9 * holder["drift"] + np.sqrt(1 - 0.9**2) * sigma * rng.normal(size=3)
        action[:3] = np.clip(action[:3] + holder["drift"], -1, 1)
        return action

    return record_episode(env, act, seed, mode=mode, on_reset=plan,
                          provenance={"actor": f"expert:{mode}", "action_noise": round(sigma, 3)})


def save_trajectory(path: Path, t: Trajectory) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pack_arrays(t))  # the preference store's own format
    tmp.rename(path)  # a killed run leaves no half-written episode behind


def build_pool(size: int) -> list[Trajectory]:
    CACHE.mkdir(parents=True, exist_ok=True)
    missing = [s for s in range(size) if not (CACHE / f"{s:05d}.safetensors").exists()]
    if missing:
        env = envs.make(ENV, camera=False)
        start = time.perf_counter()
        for k, seed in enumerate(missing):
            save_trajectory(CACHE / f"{seed:05d}.safetensors", noisy_expert_episode(env, seed))
            print(f"\rsimulating the pool: {k + 1}/{len(missing)} episodes", end="", flush=True)
        env.close()
        print(f" ({(time.perf_counter() - start) / len(missing):.1f} s/episode)")
    return [unpack_arrays((CACHE / f"{s:05d}.safetensors").read_bytes()) for s in range(size)]


# ---- one run -------------------------------------------------------------------------------
def run(strategy: str, seed: int, train: list[Trajectory], held: tuple, batch: int, budget: int) -> list[tuple]:
    """(answers, held-out accuracy) after each round of one strategy and seed."""
    held_pairs, held_labels = held
    curve = []
    with tempfile.TemporaryDirectory() as tmp, PreferenceStore(tmp) as store:
        for t in train:
            store.add_trajectory(t)
        _, token = store.add_annotator("simulated-clearance", kind="simulated")
        person = SimulatedAnnotator(OBJECTIVE, rationality=200, seed=seed)
        with running_server(store) as url, PreferenceClient(url, token) as client:
            for round_ in range(budget // batch):
                groups = select_queries(store, batch, strategy, seed=seed * 1000 + round_, env=ENV)
                store.add_queries(groups, strategy=strategy)
                simulate_annotator(client, person, n=batch)
                comparisons = store.comparisons()
                features = store_features(store, store.trajectory_ids(ENV))
                model = BradleyTerryEnsemble(seed=seed).fit(features, comparisons)
                curve.append((len(comparisons), model.accuracy(held_pairs, held_labels)))
    return curve


def first_reaching(budgets, accuracy, target):
    hit = np.flatnonzero(np.asarray(accuracy) >= target)
    return int(budgets[hit[0]]) if len(hit) else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", type=int, default=60, help="trajectories, a third of them held out")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="queries selected per round")
    parser.add_argument("--budget", type=int, default=40, help="answers per run")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.75, 0.80, 0.85, 0.90])
    args = parser.parse_args()

    pool = build_pool(args.pool)
    score = get_objective(OBJECTIVE)
    values = np.array([score(t) for t in pool])
    print(f"pool: {len(pool)} trajectories, {OBJECTIVE} {values.min():.3f} .. {values.max():.3f} m "
          f"(median {np.median(values):.3f}), success {np.mean([t.success for t in pool]):.0%}")
    order = np.random.default_rng(0).permutation(len(pool))
    n_held = len(pool) // 3
    held_idx, train = order[:n_held], [pool[k] for k in order[n_held:]]
    # Held-out pairs labelled by the true objective; exact ties say nothing about order.
    feats = {k: trajectory_features(pool[k]) for k in held_idx}
    pairs = [(i, j) for n, i in enumerate(held_idx) for j in held_idx[n + 1:] if values[i] != values[j]]
    held = ([(feats[i], feats[j]) for i, j in pairs], [float(values[i] > values[j]) for i, j in pairs])
    print(f"train {len(train)} trajectories, held out {n_held} ({len(pairs)} pairs); "
          f"{args.seeds} seeds, batches of {args.batch}, {args.budget} answers")
    # The most these features allow: every train pair, labelled without noise by the truth.
    train_idx = order[n_held:]
    truth = [(i, j, float(values[i] > values[j])) for n, i in enumerate(train_idx) for j in train_idx[n + 1:]]
    ceiling = BradleyTerryEnsemble().fit({k: trajectory_features(pool[k]) for k in train_idx}, truth)
    print(f"ceiling (all {len(truth)} train pairs, noiseless labels): {ceiling.accuracy(*held):.1%}\n")

    curves = {}
    for strategy in STRATEGIES:
        start = time.perf_counter()
        runs = [run(strategy, seed, train, held, args.batch, args.budget) for seed in range(args.seeds)]
        budgets = np.array([n for n, _ in runs[0]])
        curves[strategy] = np.array([[acc for _, acc in r] for r in runs])  # (seeds, rounds)
        print(f"{strategy}: {(time.perf_counter() - start) / args.seeds:.1f} s/run")

    print(f"\n| answers | {' | '.join(STRATEGIES)} |")
    print(f"|---|{'---|' * len(STRATEGIES)}")
    for k, n in enumerate(budgets):
        cells = [f"{curves[s][:, k].mean():.1%} ± {curves[s][:, k].std():.1%}" for s in STRATEGIES]
        print(f"| {n} | {' | '.join(cells)} |")

    print(f"\n| target | answers: {' | '.join(STRATEGIES)} | random / disagreement |")
    print(f"|---|{'---|' * len(STRATEGIES)}---|")
    for target in args.targets:
        need = {s: first_reaching(budgets, curves[s].mean(0), target) for s in STRATEGIES}
        cells = [str(need[s]) if need[s] is not None else f"> {budgets[-1]}" for s in STRATEGIES]
        ratio = (f"{need['random'] / need['disagreement']:.2f}" if None not in need.values()
                 else "n/a (not reached)")
        print(f"| {target:.0%} | {' | '.join(cells)} | {ratio} |")


if __name__ == "__main__":
    main()
