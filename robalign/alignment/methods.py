"""Alignment methods: what one round does with its scored rollouts. The loop around them
(`robalign.alignment.loop`) is the same for all.

    tpo            GRAPE's trajectory preference optimisation: exact log-probs (token policies)
    diffusion-dpo  Diffusion-DPO: the same loss with the denoising-loss surrogate of log pi
    dppo           DPPO: PPO over env steps x the last denoising steps, KL-penalised to the reference
    best-of-n      training-free: N candidate chunks, each tried in the simulator, the best runs
                   (robalign.alignment.best_of_n; the loop skips its rounds)
    expert-iteration  best-of-n distilled into the weights: each round's rollouts act best-of-n,
                   the top m per state are imitated with the policy's own training loss

Preference loss over chosen w and rejected l trajectories (Rafailov et al.; GRAPE eq. 4):
    -log sigmoid(beta * [(log pi(w) - log pi_ref(w)) - (log pi(l) - log pi_ref(l))])
where log pi(tau) is the sum over the trajectory's chunks. Diffusion-DPO (Wallace et al.)
replaces log pi(chunk) - log pi_ref(chunk) by -(l_theta - l_ref), the difference of
denoising losses on one shared noise and timestep; winner and loser share them too (chunk
j of each uses draw j).

Glossary: P pairs in a batch, C chunks of a trajectory (W of them with `window`), Hz chunk
length, A action size, N denoising steps, F fine-tuned denoising steps.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from robalign.errors import RobalignError
from robalign.registry import Registry

from .rollouts import Chunk, Rollout, stack_obs

ALIGNERS: Registry = Registry("alignment method")


@dataclasses.dataclass
class MethodConfig:
    """Settings of one alignment method; each method's yaml in configs/align_method/ sets its own."""

    name: str = "diffusion-dpo"   # tpo | diffusion-dpo | dppo | best-of-n | expert-iteration
    lr: float = 1e-5              # AdamW learning rate (a fresh optimiser each round)
    updates: int = 40             # gradient steps per round (>= 1)
    batch: int = 8                # pairs (preference methods) or chunks x 8 (dppo) per gradient step
    beta: float = 0.1             # preference temperature: scales the log-ratio difference
    window: int = 0               # chunks per trajectory per step (0: the whole trajectory)
    window_at: str = "random"     # where a window starts: random, or start (the first chunks, where the
                                  # align setting explore_chunks puts an early choice; the pair then compares it alone)
    # sum: a trajectory's log-ratio is the sum over its chunks (GRAPE); mean: their mean, so a
    # longer trajectory's log-ratio is not larger for its length alone (with `efficiency` the
    # loser is always the longer one, and a policy that grows surer of every step then moves
    # the loser's sum further than the winner's: the loss rises while nothing is preferred)
    reduce: str = "sum"
    anchor_weight: float = 0.0    # weight of the imitation anchor (demo windows if demos= is given, else chosen chunks)
    # share of the demo windows the anchor draws from: those whose actions lead to the steps the
    # learnt reward (scorer=reward) scores highest, meant to keep the way to the goal and drop
    # the stretches the person would not want (alignment/anchor.py); 1: every window
    anchor_keep: float = 1.0
    grad_clip: float = 1.0        # max global gradient norm
    # dppo
    ft_denoising_steps: int = 3   # the last F denoising steps are fine-tuned (DPPO)
    clip_ratio: float = 0.1       # PPO clipping of the per-step probability ratio
    kl_coef: float = 0.05         # KL penalty to the reference on the fine-tuned steps (FDPP)
    gamma: float = 0.99           # discount per chunk
    eta: float = 1.0              # DDIM stochasticity of the rollout sampler
    min_std: float = 0.1          # floor of each denoising step's std (model units)
    # best-of-n (and the rollouts of expert-iteration)
    n: int = 8                    # candidate chunks sampled and tried per chunk
    lookahead: int = 0            # chunks the policy plans after each candidate before it is scored
    unfinished: str = "prefix"    # how an OT reward scores a lookahead that has not ended: against the demos'
    # first as many frames (prefix) or against whole demos, as it scores finished episodes (whole)
    # expert-iteration
    successful_only: bool = False  # imitate only kept episodes that reached the task's success
    # imitate the kept episodes of every round so far, not only this round's (ExIt's growing
    # dataset): 16 episodes a round are few beside the demos' anchor, and what an earlier
    # round's search found is not forgotten by the next round's fresh optimiser
    aggregate: bool = False
    # imitate only this share of the states' kept episodes: those the scorer rates highest
    # across the round's states, a global threshold as in ReST's filtered behaviour cloning.
    # A state's best is not always good: on reach-around RAPL's best of 2 kept clear in 81% of
    # 64 states, its top half in 97% (README); 1: every state's
    top_share: float = 1.0
    # diffusion policies: the kept episodes' loss draws its timesteps from this share of the
    # noise schedule up (0.3: t >= 30 of 100), the demos' anchor from all of it. The search's
    # episodes are the policy's own samples, whose fine structure the pretrained denoiser
    # scores 7-8x worse than the demos' at t < 15 and 1.7x at t >= 60 (mug-grasp, README):
    # imitating them at every t teaches the last denoising steps to leave that in. Offline on
    # mug-grasp 0.3 raised the handle share and did not keep success (3 seeds); 0: all t
    kept_timestep_floor: float = 0.0
    # expert-iteration: the windows cut from the kept episodes. all: one at every step, as from
    # demos; chunk: one at each chunk start, its loss on the steps that chunk executed. A
    # window elsewhere joins two chunks sampled from different observations; on mug-grasp
    # imitating those cost 14-21 points of success (3 seeds) and chunk windows 2.5 (2 seeds,
    # README); `all` stays the default while reach-around's met bar was measured with it
    kept_windows: str = "all"

    def __post_init__(self):
        checks = {"lr": self.lr > 0, "updates": self.updates >= 1, "batch": self.batch >= 1, "beta": self.beta > 0,
                  "window": self.window >= 0, "anchor_weight": self.anchor_weight >= 0,
                  "anchor_keep": 0 < self.anchor_keep <= 1, "grad_clip": self.grad_clip > 0,
                  "ft_denoising_steps": self.ft_denoising_steps >= 1, "clip_ratio": 0 < self.clip_ratio < 1,
                  "kl_coef": self.kl_coef >= 0, "gamma": 0 < self.gamma <= 1, "eta": 0 < self.eta <= 1,
                  "min_std": self.min_std > 0, "n": isinstance(self.n, int) and self.n >= 2,
                  "lookahead": isinstance(self.lookahead, int) and self.lookahead >= 0,
                  "unfinished": self.unfinished in ("prefix", "whole"), "reduce": self.reduce in ("sum", "mean"),
                  "window_at": self.window_at in ("random", "start"),
                  "successful_only": isinstance(self.successful_only, bool),
                  "aggregate": isinstance(self.aggregate, bool), "top_share": 0 < self.top_share <= 1,
                  "kept_timestep_floor": 0 <= self.kept_timestep_floor < 1,
                  "kept_windows": self.kept_windows in ("all", "chunk")}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise RobalignError(f"bad alignment setting method.{bad[0]}={getattr(self, bad[0])!r}; allowed: lr, beta, "
                                f"grad_clip, min_std > 0; window, anchor_weight, kl_coef >= 0; updates, batch, "
                                f"ft_denoising_steps >= 1; 0 < clip_ratio < 1; 0 < anchor_keep <= 1; 0 < top_share <= 1; 0 <= kept_timestep_floor < 1; 0 < gamma, eta <= 1; n: an int >= 2; lookahead: an int >= 0; "
                                f"unfinished: prefix or whole; reduce: sum or mean; window_at: random or start; "
                                f"kept_windows: all or chunk; successful_only, aggregate: true or false")


class Aligner:
    """One method: checks the policy fits it, then updates the policy once per round."""

    name: ClassVar[str]
    uses_step_rewards: ClassVar[bool] = False  # update() reads each rollout's per-step rewards
    trains: ClassVar[bool] = True  # False: no rounds; the policy acts through the method instead (best-of-n)
    acts_best_of_n: ClassVar[bool] = False  # the rounds' rollouts act best-of-n (they then record no chunks)

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg

    def sampling(self) -> dict:
        """Arguments for `policy.sample_chunk` in this method's rollouts."""
        return {}

    def check(self, policy) -> None:
        """Raise RobalignError naming what the policy lacks for this method."""

    def update(self, policy, reference, rollouts: list[Rollout], pairs, anchor, generator) -> dict:
        """Gradient steps on this round's data; returns figures for the round's log."""
        raise NotImplementedError

    def log_likelihood(self, policy, rollout: Rollout) -> float:
        """log pi(trajectory) (or its surrogate), for GRAPE's likelihood term."""
        raise NotImplementedError

    def _optimizer(self, policy):
        return torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=self.cfg.lr,
                                 weight_decay=0.0)


def _step(optimizer, policy, loss, clip) -> None:
    if not torch.isfinite(loss):
        raise RobalignError(f"the alignment loss became {float(loss)}; lower method.lr or method.beta")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), clip)
    optimizer.step()


class PreferenceAligner(Aligner):
    """tpo and diffusion-dpo: the preference loss over chosen / rejected trajectories."""

    def chunk_log_ratios(self, policy, reference, chunks: list[Chunk], slots: list[int], generator) -> torch.Tensor:
        """(n,) log pi(chunk) - log pi_ref(chunk) (or its surrogate); chunks with the same
        slot share noise and timesteps."""
        raise NotImplementedError

    def chunk_nll(self, policy, chunks: list[Chunk]) -> torch.Tensor:
        """Mean negative log-likelihood (or denoising loss) of chunks: the imitation anchor."""
        raise NotImplementedError

    def update(self, policy, reference, rollouts, pairs, anchor, generator):
        if not pairs:
            return {"pairs": 0, "loss": None, "accuracy": None}
        optimizer = self._optimizer(policy)
        cfg = self.cfg
        losses, anchors, accs, margins = [], [], [], []
        for _ in range(cfg.updates):
            pick = torch.randint(len(pairs), (min(cfg.batch, len(pairs)),), generator=generator).tolist()
            chunks, slots, owner = [], [], []
            for p, i in enumerate(pick):
                w, lo = pairs[i]
                for side, r in enumerate((w, lo)):
                    chosen = self._window(r.chunks, generator)
                    chunks += chosen
                    slots += [p * 100000 + j for j in range(len(chosen))]
                    owner += [2 * p + side] * len(chosen)
            ratios = self.chunk_log_ratios(policy, reference, chunks, slots, generator)
            owners = torch.tensor(owner, device=ratios.device)
            per_traj = ratios.new_zeros(2 * len(pick)).index_add(0, owners, ratios)
            if cfg.reduce == "mean":
                per_traj = per_traj / torch.bincount(owners, minlength=2 * len(pick)).to(per_traj)
            logits = cfg.beta * (per_traj[0::2] - per_traj[1::2])
            loss = -F.logsigmoid(logits).mean()
            losses.append(float(loss.detach()))
            if cfg.anchor_weight > 0:
                anchor_loss = anchor(policy)
                anchors.append(float(anchor_loss.detach()))
                loss = loss + cfg.anchor_weight * anchor_loss
            _step(optimizer, policy, loss, cfg.grad_clip)
            accs.append(float((logits > 0).float().mean()))
            margins.append(float(logits.detach().mean()))
        # loss: the preference loss alone (log 2 while the policy equals the reference)
        return {"pairs": len(pairs), "loss": float(np.mean(losses)), "loss_first": losses[0],
                "loss_last": losses[-1], "anchor": float(np.mean(anchors)) if anchors else None,
                "accuracy": float(np.mean(accs)), "logit_margin": float(np.mean(margins))}

    def _window(self, chunks: list[Chunk], generator) -> list[Chunk]:
        W = self.cfg.window
        if W == 0 or len(chunks) <= W:
            return chunks
        if self.cfg.window_at == "start":
            return chunks[:W]
        start = int(torch.randint(len(chunks) - W + 1, (1,), generator=generator))
        return chunks[start:start + W]


@ALIGNERS.register("tpo")
class TPO(PreferenceAligner):
    """GRAPE's TPO with the exact chunk log-probs of a token policy (`log_prob`)."""

    name = "tpo"

    def check(self, policy):
        if not hasattr(policy, "log_prob"):
            raise RobalignError(f"tpo needs exact action log-probabilities (a token policy such as vla); the "
                                f"{policy.name} policy has none: use method=diffusion-dpo")

    @staticmethod
    def _executed_log_prob(policy, chunks):
        """(n,) log pi of the executed steps of each sampled chunk: tokens are emitted step by
        step, so that is exactly the probability of the actions that ran (the rest never did,
        including the steps cut off when the episode ended mid-chunk)."""
        obs = stack_obs(chunks, policy.device)
        samples = torch.stack([c.sample for c in chunks]).to(policy.device)
        executed = torch.tensor([c.executed or policy.n_action_steps for c in chunks], device=policy.device)
        pad = torch.arange(samples.shape[1], device=policy.device)[None] >= executed[:, None]
        return policy.log_prob(obs, samples, pad)

    def chunk_log_ratios(self, policy, reference, chunks, slots, generator):
        with torch.no_grad():
            ref = self._executed_log_prob(reference, chunks)
        return self._executed_log_prob(policy, chunks) - ref

    def chunk_nll(self, policy, chunks):
        steps = sum(c.executed or policy.n_action_steps for c in chunks)
        return -self._executed_log_prob(policy, chunks).sum() / steps

    def log_likelihood(self, policy, rollout):
        with torch.no_grad():
            return float(self._executed_log_prob(policy, rollout.chunks).sum())


@ALIGNERS.register("diffusion-dpo")
class DiffusionDPO(PreferenceAligner):
    """Diffusion-DPO with `denoise_loss`: shared noise and timesteps between policy and
    reference and between chosen and rejected chunks in the same slot."""

    name = "diffusion-dpo"

    def check(self, policy):
        if not hasattr(policy, "denoise_loss"):
            raise RobalignError(f"diffusion-dpo needs a denoising policy (denoise_loss); the {policy.name} policy "
                                f"has none: use method=tpo for token policies")

    def chunk_log_ratios(self, policy, reference, chunks, slots, generator):
        obs = stack_obs(chunks, policy.device)
        samples = torch.stack([c.sample for c in chunks]).to(policy.device)
        noise, t = _draws(policy, samples, slots, generator)
        with torch.no_grad():
            ref = reference.denoise_loss(obs, samples, noise, t)
        return -(policy.denoise_loss(obs, samples, noise, t) - ref)

    def chunk_nll(self, policy, chunks):
        return _denoise_nll(policy, chunks)

    def log_likelihood(self, policy, rollout):
        """Minus the summed denoising loss (seeded draws): a surrogate, not a log-prob."""
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            obs = stack_obs(rollout.chunks, policy.device)
            samples = torch.stack([c.sample for c in rollout.chunks]).to(policy.device)
            noise, t = _draws(policy, samples, list(range(len(samples))), g)
            return -float(policy.denoise_loss(obs, samples, noise, t).sum())


@ALIGNERS.register("dppo")
class DPPO(Aligner):
    """PPO on the denoising MDP (Ren et al., DPPO): each chunk is one env-level action whose
    last F denoising steps are the policy's decisions. Advantages are discounted returns of
    the per-step rewards minus the mean return of the rollouts from the same initial state
    at the same chunk (a group baseline in place of DPPO's learnt critic), normalised. The
    KL to the reference (FDPP) is the k3 estimate on the fine-tuned steps."""

    name = "dppo"
    uses_step_rewards = True

    def sampling(self):
        return {"stochastic": True, "eta": self.cfg.eta, "min_std": self.cfg.min_std}

    def check(self, policy):
        if not hasattr(policy, "chain_log_prob"):
            raise RobalignError(f"dppo needs a diffusion policy with a stochastic denoising chain (chain_log_prob); "
                                f"the {policy.name} policy has none")
        if self.cfg.ft_denoising_steps > policy.config.num_inference_steps:
            raise RobalignError(f"method.ft_denoising_steps={self.cfg.ft_denoising_steps} exceeds the policy's "
                                f"{policy.config.num_inference_steps} denoising steps")

    def advantages(self, rollouts: list[Rollout]) -> list[np.ndarray]:
        """Per rollout, (C,) normalised advantages of its chunks."""
        returns = []
        for r in rollouts:
            steps = r.step_rewards
            bounds = [c.start for c in r.chunks] + [len(steps)]
            rewards = np.array([steps[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])])
            g, out = 0.0, np.zeros(len(rewards))
            for i in range(len(rewards) - 1, -1, -1):
                g = rewards[i] + self.cfg.gamma * g
                out[i] = g
            returns.append(out)
        baseline: dict[tuple[int, int], list[float]] = {}
        for r, ret in zip(rollouts, returns):
            for i, v in enumerate(ret):
                baseline.setdefault((r.state, i), []).append(v)
        adv = [np.array([v - np.mean(baseline[(r.state, i)]) for i, v in enumerate(ret)])
               for r, ret in zip(rollouts, returns)]
        flat = np.concatenate(adv)
        std = flat.std() + 1e-8
        return [a / std for a in adv]

    def update(self, policy, reference, rollouts, pairs, anchor, generator):
        cfg = self.cfg
        adv = self.advantages(rollouts)
        chunks = [c for r in rollouts for c in r.chunks]
        advantages = torch.tensor(np.concatenate(adv), dtype=torch.float32)
        N = policy.config.num_inference_steps
        steps = slice(N - cfg.ft_denoising_steps, N)
        old = torch.stack([c.log_probs[steps] for c in chunks])  # (n, F)
        optimizer = self._optimizer(policy)
        losses, kls, clipped = [], [], []
        size = min(len(chunks), cfg.batch * 8)
        for _ in range(cfg.updates):
            pick = torch.randperm(len(chunks), generator=generator)[:size]
            batch = [chunks[i] for i in pick.tolist()]
            obs = stack_obs(batch, policy.device)
            chain = torch.stack([c.chain for c in batch]).to(policy.device)
            new = policy.chain_log_prob(obs, chain, cfg.eta, cfg.min_std, steps)  # (b, F)
            with torch.no_grad():
                ref = reference.chain_log_prob(obs, chain, cfg.eta, cfg.min_std, steps)
            ratio = (new - old[pick].to(new.device)).exp()
            a = advantages[pick].to(new.device)[:, None]
            pg = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip_ratio, 1 + cfg.clip_ratio) * a).mean()
            log_r = ref - new
            kl = (log_r.exp() - 1 - log_r).mean()  # k3 estimate of KL(pi || pi_ref), >= 0
            loss = pg + cfg.kl_coef * kl
            if cfg.anchor_weight > 0:
                loss = loss + cfg.anchor_weight * anchor(policy)
            _step(optimizer, policy, loss, cfg.grad_clip)
            losses.append(float(loss.detach()))
            kls.append(float(kl.detach()))
            clipped.append(float(((ratio - 1).abs() > cfg.clip_ratio).float().mean()))
        return {"chunks": len(chunks), "loss": float(np.mean(losses)) if losses else None,
                "kl_ref": float(np.mean(kls)) if kls else None, "clip_fraction": float(np.mean(clipped)) if clipped else None}

    def chunk_nll(self, policy, chunks):
        return _denoise_nll(policy, chunks)

    def log_likelihood(self, policy, rollout):
        with torch.no_grad():
            obs = stack_obs(rollout.chunks, policy.device)
            chain = torch.stack([c.chain for c in rollout.chunks]).to(policy.device)
            return float(policy.chain_log_prob(obs, chain, self.cfg.eta, self.cfg.min_std).sum())


@ALIGNERS.register("best-of-n")
class BestOfN(Aligner):
    """Training-free: the loop evaluates the unchanged policy acting through
    `best_of_n.best_of_n_episodes` (n candidates per chunk, each tried in the simulator)."""

    name = "best-of-n"
    trains = False

    def update(self, policy, reference, rollouts, pairs, anchor, generator):
        raise RobalignError("best-of-n does not update the policy")


@ALIGNERS.register("expert-iteration")
class ExpertIteration(Aligner):
    """Expert iteration (Anthony et al. 2017), with best-of-n as the expert: the round's
    rollouts act best-of-n with the scorer (n candidates per chunk, lookahead), and the
    policy imitates the top m of each initial state (the chosen side of the loop's pairs: a
    state whose rollouts the scorer could not tell apart gives none, as it shows nothing of
    what the scorer prefers; keeping them measured worse, README)
    with its own training loss, on windows cut from those episodes as from demos. What
    best-of-n found in the simulator ends up in weights that act alone, on the real arm too;
    the next round searches around the improved policy."""

    name = "expert-iteration"
    acts_best_of_n = True

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        self.kept: list = []      # this round's imitated episodes (Trajectory); the loop saves them with the round
        self.imitated: list = []  # earlier rounds' (method.aggregate), oldest first; the loop restores them on resume

    def check(self, policy):
        if not hasattr(policy, "compute_loss"):
            raise RobalignError(f"expert-iteration imitates episodes with the policy's training loss; the "
                                f"{policy.name} policy has no compute_loss")
        if self.cfg.kept_timestep_floor > 0 and "timestep_floor" not in inspect.signature(policy.compute_loss).parameters:
            raise RobalignError(f"method.kept_timestep_floor={self.cfg.kept_timestep_floor} limits a diffusion "
                                f"policy's denoising timesteps; the {policy.name} policy's loss has none: set "
                                f"method.kept_timestep_floor=0")

    def update(self, policy, reference, rollouts, pairs, anchor, generator):
        kept = list({id(w): w for w, _ in pairs}.values())  # the top m of each state, once each
        dropped = 0
        if self.cfg.successful_only:  # the scorer's best of a state can still fail; imitating it teaches that
            succeeded = [w for w in kept if w.trajectory.success]
            kept, dropped = succeeded, len(kept) - len(succeeded)
        below = 0
        if self.cfg.top_share < 1 and kept:  # the best across states, in state order
            best = sorted(range(len(kept)), key=lambda i: -kept[i].score)[:math.ceil(self.cfg.top_share * len(kept))]
            below = len(kept) - len(best)
            kept = [kept[i] for i in sorted(best)]
        self.kept = [r.trajectory for r in kept]
        episodes = (self.imitated if self.cfg.aggregate else []) + self.kept
        if self.cfg.aggregate:
            self.imitated = episodes
        if not episodes:
            return {"kept": 0, "loss": None, "dropped_failed": dropped, "dropped_below_top": below}
        windows = self.windows(policy, episodes)
        return {"kept": len(kept), "dropped_failed": dropped, "dropped_below_top": below, "imitated": len(episodes),
                "kept_success": float(np.mean([r.trajectory.success for r in kept])) if kept else None,
                "kept_score_mean": float(np.mean([r.score for r in kept])) if kept else None,
                **self.imitate(policy, windows, anchor, generator)}

    def windows(self, policy, episodes: list):
        """The training windows of the episodes (Trajectory) as `method.kept_windows` cuts them."""
        from robalign.policies.data import ChunkStartWindows, DemoWindows

        c = policy.config
        windows = DemoWindows.from_trajectories(episodes, type(policy).input_keys(c), c.n_obs_steps,
                                                type(policy).window_horizon(c))
        return ChunkStartWindows(windows, c.n_action_steps) if self.cfg.kept_windows == "chunk" else windows

    def imitate(self, policy, windows, anchor, generator) -> dict:
        """`method.updates` steps of the policy's training loss on `windows` (`windows()`),
        the anchor beside it; apart from update() so a benchmark can re-imitate a saved round."""
        optimizer = self._optimizer(policy)
        losses, anchors = [], []
        for _ in range(self.cfg.updates):
            index = torch.randint(len(windows), (self.cfg.batch * 8,), generator=generator)
            batch = windows.batch(index, policy.device)
            floor = self.cfg.kept_timestep_floor
            loss = policy.compute_loss(batch, timestep_floor=floor) if floor > 0 else policy.compute_loss(batch)
            losses.append(float(loss.detach()))
            if self.cfg.anchor_weight > 0:
                anchor_loss = anchor(policy)
                anchors.append(float(anchor_loss.detach()))
                loss = loss + self.cfg.anchor_weight * anchor_loss
            _step(optimizer, policy, loss, self.cfg.grad_clip)
        return {"windows": len(windows), "loss": float(np.mean(losses)), "loss_first": losses[0],
                "loss_last": losses[-1], "anchor": float(np.mean(anchors)) if anchors else None}


def _draws(policy, samples: torch.Tensor, slots: list[int], generator):
    """Noise (n, Hz, A) and timesteps (n,) for `denoise_loss`, one draw per distinct slot."""
    distinct = sorted(set(slots))
    index = torch.tensor([distinct.index(s) for s in slots])
    noise = torch.randn((len(distinct), *samples.shape[1:]), generator=generator)[index]
    if policy.name == "smolvla":  # flow matching: times in [0, 1] (1 = pure noise)
        t = torch.rand((len(distinct),), generator=generator)[index].clamp(1e-3, 1.0)
    else:
        t = torch.randint(policy.config.num_train_timesteps, (len(distinct),), generator=generator)[index]
    return noise.to(policy.device), t.to(policy.device)


def _denoise_nll(policy, chunks: list[Chunk]) -> torch.Tensor:
    """Mean denoising loss of the chunks' samples (fresh draws): the imitation anchor."""
    obs = stack_obs(chunks, policy.device)
    samples = torch.stack([c.sample for c in chunks]).to(policy.device)
    noise, t = _draws(policy, samples, list(range(len(chunks))), None)
    return policy.denoise_loss(obs, samples, noise, t).mean()


def make_aligner(cfg: MethodConfig) -> Aligner:
    return ALIGNERS.get(cfg.name)(cfg)
