"""One alignment loop for every method:

    before: evaluate the policy on held-out seeds (also the drift's held-out states)
    for round r in 0 .. R-1:
        roll out K episodes from each of S new initial states with the current policy
        score them (a learnt reward, a person's objective, or GRAPE's weighted sum)
        pair them: per state, the top m against the bottom m
        update the policy (the method's loss), against a frozen reference throughout
        save the round (policy + figures) atomically
    after: evaluate on the same held-out seeds; drift (KL to the reference, demo NLL)

Everything a round draws (initial states, policy noise, minibatches) is seeded by
(seed, round), so a killed run resumed with `resume=true` continues from its last saved
round and ends where an uninterrupted run would. Each round starts a fresh AdamW.

Run directory:
    align.json            the settings (a resume must match them)
    before.json           held-out evaluation of the reference; heldout.safetensors its windows
    rounds/NNN/           policy/ after round NNN and round.json (each episode's score, pairs, loss, seconds)
    policy/               the aligned policy (the last round's)
    metrics.json          before, after, drift, per-round history (best-of-n: no rounds; its choices)
                          (expert-iteration: each round also has its best-of-n choices)
    alignment.png         the rounds' scores and satisfied share, before vs after
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from robalign.errors import RobalignError, UnknownNameError
from robalign.types import Trajectory

from . import drift
from .anchor import DemoAnchor, make_anchor, reward_filtered
from .methods import MethodConfig, make_aligner
from .rollouts import NO_EXPLORE, Chunk, Rollout, collect, noise_seed, preference_pairs
from .scorers import ObjectiveScorer, Scorer, ScoringError

TRAIN_SEED_BASE = 50000  # training states: apart from demos (0, 1, ...) and evaluation (100000 + i)
SEEDS_PER_RUN = 1000  # training states a run (one `seed`) may use
LAUNCHERS = ("serial", "vector")
KEPT_FILE = "kept.safetensors"  # rounds/NNN/: the episodes expert-iteration imitated that round
PAIRINGS = ("all", "successful")  # which rollouts of a state are ranked and paired
# Each stream's seed starts with its own tag: numpy pads short keys with zeros, so without
# it (seed, r, 1) would equal rollout (seed, r, 1, 0)'s stream.
STREAM_ROLLOUT, STREAM_LOSS, STREAM_BATCHES = 1, 2, 3


class AlignmentError(RobalignError):
    """An alignment run that had to stop; what it had saved is kept."""


@dataclasses.dataclass
class AlignConfig:
    rounds: int = 4              # R: rounds of roll out -> score -> pair -> update
    states: int = 8              # S: new initial states (env seeds) per round
    rollouts: int = 4            # K: episodes per initial state
    top_m: int = 2               # pairs per state: each of the top m against each of the bottom m
    margin: float = 0.0          # skip pairs whose scores differ by this much or less
    # The rounds' rollouts sample their first explore_chunks chunks at explore_temperature
    # (token policies), the rest as the policy is set. A choice made early and never flipped
    # at the rollout temperature never reaches a pair: pick-place-lang's vla at 0.1 grasped
    # across the same face pair in 23 of 24 rollouts of a state, so no pair showed it the
    # pair that keeps clear of a neighbour; its first 3 chunks at 1.0 flip it in 1 of 3.
    explore_chunks: int = 0
    explore_temperature: float = 1.0
    # all | successful: pair only the rollouts that reached the task's success. A preference
    # method lowers the loser's log-likelihood, and a failed loser shares its approach and
    # grasp with the winner, so pairs against failures can unteach the task itself.
    pairs: str = "all"
    seed: int = 0                # seeds every draw of the run (states, policy noise, minibatches)
    eval_episodes: int = 20      # held-out episodes before and after (seeds eval_seed + i)
    eval_seed: int = 100000
    launcher: str = "vector"     # serial | vector (gymnasium AsyncVectorEnv)
    num_envs: int = 2            # parallel envs with launcher=vector
    distractors: bool = False    # random colours, distractor objects and camera jitter
    layout: str = "default"      # the task's scene layout for every episode (pick-place-lang: default | dense | tight)
    max_steps: int | None = None  # episode length limit; null: the task's default
    threshold: float | None = None  # objective value that counts as satisfied; null: the objective's own

    def __post_init__(self):
        ints = {"rounds": 1, "states": 1, "rollouts": 2, "top_m": 1, "seed": 0, "eval_episodes": 1,
                "eval_seed": 0, "num_envs": 1, "explore_chunks": 0}
        for key, low in ints.items():
            value = getattr(self, key)
            if not isinstance(value, int) or value < low:
                raise RobalignError(f"bad alignment setting {key}={value!r}; allowed: rounds, states, top_m, "
                                    f"eval_episodes, num_envs: ints >= 1; rollouts >= 2 (pairs need two); seed, "
                                    f"eval_seed, explore_chunks >= 0")
        if not self.explore_temperature > 0:
            raise RobalignError(f"bad alignment setting explore_temperature={self.explore_temperature!r}; allowed: > 0 "
                                f"(the early chunks' sampling temperature)")
        if not self.margin >= 0 or (self.max_steps is not None and self.max_steps < 1):
            raise RobalignError(f"bad alignment setting: margin={self.margin!r} (>= 0), max_steps={self.max_steps!r} "
                                f"(>= 1 or null)")
        if self.launcher not in LAUNCHERS:
            raise UnknownNameError("launcher", self.launcher, list(LAUNCHERS))
        if self.pairs not in PAIRINGS:
            raise UnknownNameError("pairs setting", self.pairs, list(PAIRINGS))
        last = self.train_seed(self.rounds - 1, self.states - 1)
        if self.rounds * self.states > SEEDS_PER_RUN or last >= self.eval_seed:
            raise RobalignError(f"training states {self.train_seed(0, 0)}..{last} would reach the held-out seeds "
                                f"(eval_seed={self.eval_seed}) or the next run seed's; keep rounds x states <= "
                                f"{SEEDS_PER_RUN} and seed small, or raise eval_seed")

    def train_seed(self, r: int, i: int) -> int:
        """Env seed of initial state i of round r: apart from demos (0, ...) and evaluation."""
        return TRAIN_SEED_BASE + SEEDS_PER_RUN * self.seed + r * self.states + i


def align(policy_dir: str | Path, env_name: str, scorer: Scorer, method: MethodConfig, cfg: AlignConfig,
          output_dir: str | Path, objective=None, demos: str | Path | None = None, resume: bool = False,
          progress: bool = True, config_text: str | None = None, policy_overrides: dict | None = None) -> dict:
    """Align the policy at `policy_dir` on `env_name` with `scorer`; returns metrics.json's
    content. `objective` (name or callable) is the person's objective the before/after
    figures report (by default the scorer's own, when it is an objective). `policy_overrides`
    changes checkpoint config fields (inference settings such as a vla's temperature) of the
    policy and its reference alike; the aligned checkpoint keeps them."""
    import robalign.envs as envs
    from robalign.data.outputs import check_output_dir
    from robalign.policies import load_policy

    envs.check_layout(env_name, cfg.layout)
    out = Path(output_dir).expanduser().absolute()
    aligner = make_aligner(method)
    overrides = dict(policy_overrides or {})
    if not aligner.trains or aligner.acts_best_of_n:  # check its settings before anything is loaded, run or written
        from .best_of_n import check_scorer

        check_scorer(scorer)
        if overrides:  # its worker processes load the checkpoint as saved
            raise RobalignError(f"policy_config ({', '.join(overrides)}) is not passed to {method.name}'s worker "
                                f"processes; save a checkpoint with those settings and align that instead")
    if aligner.acts_best_of_n and method.anchor_weight > 0 and not demos:
        raise RobalignError(f"{method.name}'s anchor (method.anchor_weight={method.anchor_weight}) is the demos' "
                            f"training loss: give demos=PATH, or set method.anchor_weight=0")
    if method.anchor_keep < 1 and not (demos and method.anchor_weight > 0 and aligner.trains):
        raise RobalignError(f"method.anchor_keep={method.anchor_keep} filters the demos' anchor: it needs demos=PATH "
                            f"and method.anchor_weight > 0 (now {method.anchor_weight}) with a method that trains "
                            f"(not {method.name}); or set method.anchor_keep=1")
    policy = load_policy(policy_dir, overrides=overrides)
    aligner.check(policy)
    if cfg.explore_chunks and not (policy.samples_at_temperature and aligner.trains and not aligner.acts_best_of_n):
        raise RobalignError(f"explore_chunks={cfg.explore_chunks} samples the rollouts' early chunks at a temperature: "
                            f"it needs a token policy (vla) and a method whose rounds sample rollouts (tpo), not "
                            f"{policy.name} with {method.name}; set explore_chunks=0")
    reference = load_policy(policy_dir, overrides=overrides).requires_grad_(False)
    truth = ObjectiveScorer(objective) if objective is not None else (
        scorer if isinstance(scorer, ObjectiveScorer) else None)
    threshold = cfg.threshold if cfg.threshold is not None else getattr(getattr(truth, "objective", None),
                                                                         "threshold", None)
    settings = {"policy": str(Path(policy_dir).absolute()), "env": env_name, "scorer": scorer.describe(),
                "objective": truth.name if truth else None, "method": dataclasses.asdict(method),
                "align": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "rounds"},
                "demos": str(Path(demos).absolute()) if demos else None}
    if overrides:  # absent otherwise, so runs saved before the setting existed still resume
        settings["policy_overrides"] = overrides
    if resume:
        _check_resume(out, settings)
    else:
        check_output_dir(out)
    demo_windows = _demo_windows(policy, demos) if demos else None
    demo_anchor = None if demo_windows is None else (
        reward_filtered(demo_windows, demos, scorer, method.anchor_keep, progress) if method.anchor_keep < 1
        else DemoAnchor(demo_windows))
    options = _env_options(policy, scorer, cfg)
    _check_env_fits(policy, env_name, options)
    torch.set_num_threads(1)  # the policy shares the cores with the env processes
    out.mkdir(parents=True, exist_ok=True)
    (out / "align.json").write_text(json.dumps(settings, indent=2))
    if config_text is not None:
        (out / "config.yaml").write_text(config_text)

    seeds = [cfg.eval_seed + i for i in range(cfg.eval_episodes)]  # held-out: the same before and after

    def evaluate(p, tag: str) -> tuple[dict, list[Rollout]]:
        rollouts = _collect(p, env_name, seeds, seeds, list(range(len(seeds))), options, cfg, {}, f"eval {tag}",
                            progress)
        return _figures(rollouts, env_name, scorer, truth, threshold, out, tag), rollouts

    if (out / "before.json").is_file() and (out / "heldout.safetensors").is_file():
        before, held_out = json.loads((out / "before.json").read_text()), load_chunks(out / "heldout.safetensors")
    else:
        before, ref_rollouts = evaluate(reference, "before")
        held_out = [c for r in ref_rollouts for c in r.chunks]
        save_chunks(held_out[:drift.MAX_WINDOWS], out / "heldout.safetensors")
        (out / "before.json").write_text(json.dumps(before, indent=2))

    extra = {}
    if aligner.trains:
        history, start = _saved_rounds(out, policy, cfg.rounds)
        if method.aggregate:  # the earlier rounds' kept episodes, as the uninterrupted run holds them
            aligner.imitated = [t for p in range(start) for t in _load_kept(out / "rounds" / f"{p:03d}")]
        for r in range(start, cfg.rounds):
            history.append(_round(r, policy, policy_dir, reference, aligner, scorer, truth, threshold, env_name,
                                  options, method, cfg, demo_anchor, out, progress))
            _plot(before, None, history, out / "alignment.png")
        after, _ = evaluate(policy, "after")
    else:  # best-of-n: the unchanged policy acts through the method on the same held-out seeds
        history = []
        after, extra["best_of_n"] = _evaluate_best_of_n(policy, policy_dir, env_name, seeds, scorer, truth,
                                                        threshold, options, method, cfg, out, progress)
    policy.eval()
    result = {
        "env": env_name, "method": method.name, "scorer": scorer.name, "objective": truth.name if truth else None,
        "policy": settings["policy"], "policy_overrides": overrides, "eval_seed": cfg.eval_seed, "before": before,
        "after": after,
        "rounds": history, **extra,
        "anchor": demo_anchor.figures if demo_anchor is not None and method.anchor_weight > 0 else None,
        "drift": {"kl_per_step": drift.kl_per_step(policy, reference, held_out, cfg.seed),
                  "demo_nll": drift.demo_nll(policy, demo_windows, cfg.seed),
                  "demo_nll_reference": drift.demo_nll(reference, demo_windows, cfg.seed)},
    }
    result["after"]["drift"] = result["drift"]
    result["before"]["drift"] = {"kl_per_step": 0.0, "demo_nll": result["drift"]["demo_nll_reference"]}
    from robalign.data.outputs import atomic_output_dir

    shutil.rmtree(out / "policy", ignore_errors=True)  # one left by a run killed before metrics.json
    with atomic_output_dir(out / "policy") as tmp:
        policy.save_pretrained(tmp)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    _plot(before, after, history, out / "alignment.png")
    return result


# ---- one round -----------------------------------------------------------------------------
def _round(r, policy, policy_dir, reference, aligner, scorer, truth, threshold, env_name, options, method, cfg,
           demo_anchor, out, progress) -> dict:
    t0 = time.perf_counter()
    S, K = cfg.states, cfg.rollouts
    env_seeds = [cfg.train_seed(r, i) for i in range(S) for _ in range(K)]
    noise = [noise_seed(STREAM_ROLLOUT, cfg.seed, r, i, k) for i in range(S) for k in range(K)]
    states = [i for i in range(S) for _ in range(K)]
    policy.eval()
    choice_figures = {}
    if aligner.acts_best_of_n:  # the workers load the round's weights: the last saved round's
        current = out / "rounds" / f"{r - 1:03d}" / "policy" if r else policy_dir
        trajectories, choices = _best_of_n(policy, current, env_name, env_seeds, noise, options, scorer, method, cfg,
                                           f"round {r} rollouts (best of {method.n})", progress, out)
        rollouts = [Rollout(t, [], i) for t, i in zip(trajectories, states)]
        choice_figures = {"best_of_n": _choice_figures(choices, method)}
    else:
        rollouts = _collect(policy, env_name, env_seeds, noise, states, options, cfg, aligner.sampling(),
                            f"round {r} rollouts", progress, explore=(cfg.explore_chunks, cfg.explore_temperature))
    trajectories = [x.trajectory for x in rollouts]
    try:
        likelihoods = [aligner.log_likelihood(policy, x) for x in rollouts] if scorer.needs_likelihood else None
        scores = scorer.score(trajectories, likelihoods)
        for x, s in zip(rollouts, scores):
            x.score = float(s)
            if aligner.uses_step_rewards:
                x.step_rewards = scorer.step_rewards(x.trajectory, x.score)
        true_values = truth.score(trajectories) if truth is not None else None
    except ScoringError as err:
        kept = f"rounds 0-{r - 1} are saved in {out / 'rounds'}" if r else "no round had finished"
        raise AlignmentError(f"{err}. Round {r} stopped before its update; {kept}; fix the scorer and rerun "
                             f"with resume=true to continue from round {r}") from None
    pairs = preference_pairs(rollouts, cfg.top_m, cfg.margin, successful=cfg.pairs == "successful")
    torch.manual_seed(noise_seed(STREAM_LOSS, cfg.seed, r))  # draws inside the losses (anchors)
    generator = torch.Generator().manual_seed(noise_seed(STREAM_BATCHES, cfg.seed, r))
    anchor = make_anchor(aligner, demo_anchor, [w for w, _ in pairs] or rollouts, generator)
    stats = aligner.update(policy, reference, rollouts, pairs, anchor, generator)
    import robalign.envs as envs

    classify = envs.env_class(env_name).behaviour_mode
    record = {"round": r, "seeds": [env_seeds[0], env_seeds[-1]], "episodes": len(rollouts),
              "score_mean": float(np.mean(scores)), "score_min": float(np.min(scores)),
              "score_max": float(np.max(scores)), "success_rate": float(np.mean([t.success for t in trajectories])),
              **_objective_figures(true_values, threshold), **choice_figures,
              # each episode's score and objective, in rollout order (states x rollouts): what
              # the pairs were formed from, and whether a state's rollouts tied
              "episode_scores": [float(s) for s in scores],
              "episode_objective_values": None if true_values is None else [float(v) for v in true_values],
              # and each episode's success and behaviour mode: which layouts a round's picks came
              # from is otherwise lost (on mug-grasp they clustered by the handle's heading)
              "episode_success": [bool(t.success) for t in trajectories],
              "episode_modes": [classify(t) for t in trajectories],
              "update": stats, "seconds": round(time.perf_counter() - t0, 1)}
    _save_round(out, r, policy, record, getattr(aligner, "kept", None))
    if progress:
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in record.items()
                 if k != "update" and not k.startswith("episode_")}  # per-episode lists: in round.json
        print(f"round {r}: {shown}", flush=True)
    return record


def _collect(policy, env_name, env_seeds, noise, states, options, cfg, sampling, desc, progress,
             explore=NO_EXPLORE) -> list[Rollout]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(env_seeds), desc=desc, unit="ep", disable=not progress, leave=False)
    try:
        return collect(policy, env_name, env_seeds, noise, states, options, cfg.launcher, cfg.num_envs, sampling, bar,
                       explore)
    finally:
        bar.close()


def _evaluate_best_of_n(policy, policy_dir, env_name, seeds, scorer, truth, threshold, options, method, cfg, out,
                        progress):
    """after.json's figures for best-of-n on the held-out seeds, and how its choices went:
    per chunk, the chosen candidate's score against the candidates' mean."""
    trajectories, choices = _best_of_n(policy, policy_dir, env_name, seeds, seeds, options, scorer, method, cfg,
                                       f"eval after (best of {method.n})", progress, out)
    rollouts = [Rollout(t, [], i) for i, t in enumerate(trajectories)]
    return _figures(rollouts, env_name, scorer, truth, threshold, out, "after"), _choice_figures(choices, method)


def _best_of_n(policy, policy_dir, env_name, seeds, noise, options, scorer, method, cfg, desc, progress, out):
    """Best-of-n episodes (trajectories, per-chunk choices), in `num_envs` processes unless
    launcher=serial; each process loads the weights from `policy_dir`, the same as `policy`'s."""
    from tqdm.auto import tqdm

    from .best_of_n import best_of_n_episodes

    bar = tqdm(total=len(seeds), desc=desc, unit="ep", disable=not progress, leave=False)
    try:
        return best_of_n_episodes(policy, env_name, seeds, noise, options, scorer, method.n, method.lookahead, bar,
                                  method.unfinished, workers=1 if cfg.launcher == "serial" else cfg.num_envs,
                                  policy_dir=policy_dir)
    except ScoringError as err:
        raise AlignmentError(f"{err} (in a best-of-{method.n} lookahead); the run stopped, {out} keeps what was "
                             f"saved") from None
    finally:
        bar.close()


def _choice_figures(choices: list[list[dict]], method) -> dict:
    """How best-of-n's choices went: per chunk, the chosen candidate's score against the candidates' mean."""
    picks = [c for episode in choices for c in episode]
    gains = [c["scores"][c["chosen"]] - float(np.mean(c["scores"])) for c in picks]
    return {"n": method.n, "lookahead": method.lookahead, "unfinished": method.unfinished, "chunks": len(picks),
            "chosen_minus_mean_score": float(np.mean(gains)) if gains else None,
            "chosen_share_not_first": float(np.mean([c["chosen"] != 0 for c in picks])) if picks else None}


def _figures(rollouts, env_name, scorer, truth, threshold, out, tag) -> dict:
    """before.json / after.json: success, the person's objective and its satisfied share,
    the scorer's mean, modes and episode length."""
    from robalign.policies.evaluation import episode_metrics, episode_records

    trajectories = [x.trajectory for x in rollouts]
    m = episode_metrics(episode_records(trajectories, env_name), env_name)
    try:
        scores = scorer.score(trajectories) if not scorer.needs_likelihood else None
        values = truth.score(trajectories) if truth is not None else None
    except ScoringError as err:
        raise AlignmentError(f"{err} (in the {tag} evaluation); the run stopped, {out} keeps what was saved") from None
    return {"success_rate": m["success_rate"], "success_ci95": m["success_ci95"],
            **_objective_figures(values, threshold),
            "score_mean": float(np.mean(scores)) if scores is not None else None,
            "episode_length": m["episode_length"], "mode_share": m["mode_share"], "episodes": len(trajectories),
            "objective_values": None if values is None else [round(float(v), 5) for v in values]}


def _objective_figures(values, threshold) -> dict:
    """The person's objective over some episodes: its mean and the share at or above threshold."""
    if values is None:
        return {"objective_mean": None, "satisfied_share": None}
    values = np.asarray(values)
    return {"objective_mean": float(values.mean()),
            "satisfied_share": float(np.mean(values >= threshold)) if threshold is not None else None}


def _env_options(policy, scorer, cfg) -> dict:
    """The policy's env settings, with the agentview camera on when the scorer reads frames
    (at the policy's image size if it reads images too: the reward resizes what it reads)."""
    from robalign.policies.evaluation import env_options

    opts = env_options(policy, cfg.distractors, cfg.max_steps, layout=cfg.layout)
    if scorer.needs_frames and not opts["camera"]:
        opts.update(camera=True, image_size=int(scorer.image_size))
    return opts


def _demo_windows(policy, demos):
    from robalign.policies.data import DemoWindows

    c = policy.config
    return DemoWindows(demos, type(policy).input_keys(c), c.n_obs_steps, type(policy).window_horizon(c))


# ---- saving and resuming -------------------------------------------------------------------
def _save_round(out: Path, r: int, policy, record: dict, kept: list[Trajectory] | None = None) -> None:
    """rounds/NNN written whole or not at all (a kill mid-write leaves the previous rounds);
    `kept`: the episodes the round imitated (expert-iteration), as kept.safetensors."""
    from robalign.data.outputs import atomic_output_dir

    final = out / "rounds" / f"{r:03d}"
    shutil.rmtree(final, ignore_errors=True)  # an incomplete one (no round.json) from a killed run
    with atomic_output_dir(final) as tmp:
        policy.save_pretrained(tmp / "policy")
        if kept is not None:
            save_episodes(kept, tmp / KEPT_FILE, frames="image" in type(policy).input_keys(policy.config))
        (tmp / "round.json").write_text(json.dumps(record, indent=2))


def _load_kept(round_dir: Path) -> list[Trajectory]:
    path = round_dir / KEPT_FILE
    if not path.is_file():
        raise AlignmentError(f"{path} is missing: method.aggregate imitates every earlier round's kept episodes, "
                             f"and this round was saved without them (by a run with another method or an older "
                             f"robalign); start a new run")
    return load_episodes(path)


def _saved_rounds(out: Path, policy, rounds: int) -> tuple[list[dict], int]:
    """History of the complete rounds on disk, and the next round; loads the last one's weights
    (not its normaliser: min/max statistics do not round-trip bit for bit, and they never change)."""
    from robalign.policies.pretrained import load_weights, read_checkpoint

    done = sorted(p for p in (out / "rounds").glob("[0-9][0-9][0-9]") if (p / "round.json").is_file())
    done = [p for i, p in enumerate(done) if p.name == f"{i:03d}"]  # contiguous from 000
    if len(done) > rounds:
        raise AlignmentError(f"{out} already holds {len(done)} rounds; resume with rounds >= {len(done)}")
    if not done:
        return [], 0
    _, _, weights, _ = read_checkpoint(done[-1] / "policy")
    load_weights(policy, weights, str(done[-1] / "policy"))
    return [json.loads((p / "round.json").read_text()) for p in done], len(done)


def _check_env_fits(policy, env_name: str, options: dict) -> None:
    """The policy can act on this env's observations (else the error comes before any file)."""
    import robalign.envs as envs

    env = envs.make(env_name, **{**options, "camera": "image" in policy.input_shapes()})
    try:
        obs, _ = env.reset(seed=0)
        window = {k: torch.as_tensor(np.asarray(obs[k]))[None, None].expand(1, policy.n_obs_steps,
                                                                             *np.shape(obs[k]))
                  for k in policy.input_shapes() if k in obs}
        window.update({k: [obs[k]] for k in policy.text_inputs() if k in obs})
        policy.check_observation(window)
    finally:
        env.close()


def _check_resume(out: Path, settings: dict) -> None:
    saved_path = out / "align.json"
    if not saved_path.is_file():
        raise AlignmentError(f"resume=true but {str(out)!r} holds no alignment run (no align.json); start without resume")
    saved = json.loads(saved_path.read_text())
    # A setting added since the run was saved reads as its default, which does what the code
    # did before the setting existed.
    for key, defaults in (("method", MethodConfig()), ("align", AlignConfig())):
        if isinstance(saved.get(key), dict) and isinstance(settings.get(key), dict):
            saved[key] = {**{k: v for k, v in dataclasses.asdict(defaults).items() if k in settings[key]},
                          **saved[key]}
    diff = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if diff:
        raise AlignmentError(f"resume: settings differ from the run's align.json: {diff} (saved, given); only "
                             f"`rounds` may change")


def save_chunks(chunks: list[Chunk], path: Path) -> None:
    """Observation windows and samples as safetensors (text inputs in its metadata)."""
    from safetensors.torch import save_file

    if not chunks:
        save_file({"empty": torch.zeros(0)}, path)
        return
    tensors, text = {"sample": torch.stack([c.sample for c in chunks]).contiguous()}, {}
    for key, value in chunks[0].obs.items():
        if isinstance(value, str):
            text[key] = [c.obs[key] for c in chunks]
        else:
            tensors[f"obs.{key}"] = torch.stack([c.obs[key] for c in chunks]).contiguous()
    save_file(tensors, path, metadata={"text": json.dumps(text), "start": json.dumps([c.start for c in chunks])})


def save_episodes(trajectories: list[Trajectory], path: Path, frames: bool) -> None:
    """What imitating the episodes needs, as safetensors: state, action and env_state, and the
    frames when `frames` (an image policy reads them); instruction, success and mode in its
    metadata. The arrays round-trip bit for bit, so a resumed run imitates what it held."""
    from safetensors.numpy import save_file

    tensors = {"count": np.zeros(len(trajectories), np.int8)}  # a file needs a tensor, even with no episode
    for i, t in enumerate(trajectories):
        tensors.update({f"{i}.state": t.state, f"{i}.action": t.action})
        if t.env_state is not None:
            tensors[f"{i}.env_state"] = t.env_state
        if frames and t.frames is not None:
            tensors[f"{i}.frames"] = t.frames
    records = [{"instruction": t.instruction, "success": bool(t.success), "mode": t.mode} for t in trajectories]
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
              metadata={"episodes": json.dumps(records)})


def load_episodes(path: Path) -> list[Trajectory]:
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        records = json.loads((f.metadata() or {})["episodes"])
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    return [Trajectory(state=arrays[f"{i}.state"], action=arrays[f"{i}.action"], env_state=arrays.get(f"{i}.env_state"),
                       frames=arrays.get(f"{i}.frames"), **record) for i, record in enumerate(records)]


def load_chunks(path: Path) -> list[Chunk]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "sample" not in tensors:
        return []
    text, starts = json.loads(meta.get("text", "{}")), json.loads(meta.get("start", "[]"))
    obs_keys = [k for k in tensors if k.startswith("obs.")]
    return [Chunk({**{k[4:]: tensors[k][i] for k in obs_keys}, **{k: v[i] for k, v in text.items()}},
                  tensors["sample"][i], starts[i]) for i in range(len(tensors["sample"]))]


# ---- plot ----------------------------------------------------------------------------------
def _plot(before: dict, after: dict | None, history: list[dict], path: Path) -> None:
    """Rollout score and satisfied share per round; before vs after success and satisfied share."""
    from robalign.data.plots import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    rounds = [h["round"] for h in history]
    axes[0].plot(rounds, [h["score_mean"] for h in history], "o-", label="mean score")
    axes[0].set(xlabel="round", ylabel="scorer (rollouts)", title="alignment rounds")
    axes[0].set_xticks(rounds)  # rounds are whole numbers
    if not history and after is not None:  # best-of-n trains nothing
        axes[0].text(0.5, 0.5, "no training rounds\n(the method acts at inference)", ha="center", va="center",
                     transform=axes[0].transAxes)
    if history and history[0]["satisfied_share"] is not None:
        twin = axes[0].twinx()
        twin.plot(rounds, [h["satisfied_share"] for h in history], "s--", color="tab:green", label="satisfied")
        twin.plot(rounds, [h["success_rate"] for h in history], "^:", color="tab:gray", label="success")
        twin.set_ylim(0, 1)
        twin.set_ylabel("share of the rounds' rollouts")
        handles = axes[0].get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        twin.legend(handles=handles, loc="lower right")  # the score's line too, drawn on the left axis
    labels = ["success", "satisfied"]
    values_before = [before["success_rate"], before["satisfied_share"] or 0.0]
    x = np.arange(len(labels))
    bars = axes[1].bar(x - 0.2, values_before, 0.4, label="before")
    axes[1].bar_label(bars, fmt="%.2f")
    if after is not None:
        bars = axes[1].bar(x + 0.2, [after["success_rate"], after["satisfied_share"] or 0.0], 0.4, label="after")
        axes[1].bar_label(bars, fmt="%.2f")
    axes[1].set_xticks(x, labels)
    axes[1].set_ylim(0, 1.1)  # room above a bar near 1 for its label
    axes[1].legend(loc="lower left")
    axes[1].set_title("held-out episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
