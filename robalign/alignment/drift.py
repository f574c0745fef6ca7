"""How far alignment moved the policy from its reference: reported beside every result.

    kl_per_step   KL(pi_ref || pi) per executed action step on held-out states: the
                  observation windows the reference saw in its own held-out evaluation.
                  Token policies: the exact KL of each token's distribution given the
                  reference's own sampled tokens before it, summed over the executed steps
                  (chain rule: its mean over reference samples is the chunk KL).
                  Diffusion policies: the KL between the two stochastic denoising chains
                  (DDIM eta=1, std floor 0.1): each step's Gaussian KL, exact given the
                  step's input, averaged over reference chains, per step of the window.
    demo_nll      the demos' negative log-likelihood per action step (token policies) or
                  their mean denoising loss on fixed draws (diffusion: a surrogate), and the
                  reference's, for scale.
    success       in the before / after evaluations themselves.

Glossary: n held-out windows, K executed steps per chunk, Hz chunk length.
"""

from __future__ import annotations

import torch

from .rollouts import Chunk, stack_obs

MAX_WINDOWS = 64  # held-out windows scored (enough for a stable mean; cheap on the CPU)


@torch.no_grad()
def kl_per_step(policy, reference, held_out: list[Chunk], seed: int = 0) -> float | None:
    """KL(pi_ref || pi) per executed action step; None for policies with neither form."""
    if not held_out:
        return None
    chunks = held_out[:MAX_WINDOWS]
    obs = stack_obs(chunks, policy.device)
    if hasattr(policy, "token_distributions"):
        samples = torch.stack([c.sample for c in chunks]).to(policy.device)
        ref, pol = reference.token_distributions(obs, samples), policy.token_distributions(obs, samples)
        per_token = (ref.exp() * (ref - pol)).sum(-1)  # (n, Hz, A): exact KL given the reference's prefix
        return float(per_token[:, :policy.n_action_steps].sum((1, 2)).mean()) / policy.n_action_steps
    if hasattr(policy, "sample_chain"):
        g = torch.Generator(device=policy.device).manual_seed(seed)
        chain = reference.sample_chain(obs, generator=g).chain
        (m_ref, std), (m_pol, _) = reference.chain_moments(obs, chain), policy.chain_moments(obs, chain)
        # both steps are Gaussians with the same std: KL = |mean gap|^2 / (2 std^2), exact per step
        per_step = (m_ref - m_pol).pow(2).flatten(2).sum(-1) / (2 * std.pow(2))  # (n, N)
        return float(per_step.sum(1).mean()) / policy.config.horizon
    return None


@torch.no_grad()
def demo_nll(policy, demos, seed: int = 0, batch: int = 256) -> float | None:
    """The policy's training loss on a fixed batch of demo windows (fixed noise too)."""
    if demos is None:
        return None
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(len(demos), (min(batch, len(demos)),), generator=g)
    data = demos.batch(index, policy.device)
    state = torch.get_rng_state()
    torch.manual_seed(seed)  # compute_loss draws noise and timesteps from the global stream
    try:
        was_training = policy.training
        policy.eval()
        loss = float(policy.compute_loss(data))
        policy.train(was_training)
    finally:
        torch.set_rng_state(state)
    return loss
