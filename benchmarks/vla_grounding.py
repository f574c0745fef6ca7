"""Does a `vla` use the instruction's colour word? On the first frame of each demo episode
(the only point where nothing but the instruction says which cube is wanted):

- the first chunk's NLL per token under the true instruction and with the colour swapped
  (red -> green -> blue -> red); equal numbers mean the colour word is ignored;
- how often the greedy first move heads closest to the named cube (chance is about 1/3)
  beside how often the demo's own first move does.

    python benchmarks/vla_grounding.py runs/pt-vla/policy runs/demos-ppl

A policy can fit pick-place-lang's training windows well without this: mid-episode the
arm's motion already gives the target away, so only the first steps need the language.

Then, does it steer by the cube? On demo frames where the open gripper is within 3 cm (xy)
of the named cube, the expert's xy action is 30x the offset to its target (gain 1.5 over
OSC's 5 cm per unit), 0.3 per cm. The greedy first action is taken again with the named
cube moved 1 cm along x and along y in the observation, and with another cube moved the
same: a policy that steers by the cube follows the first by about 0.3 and ignores the
second; one that replays the demos' path from the arm's state follows neither.
"""

from __future__ import annotations

import argparse

import torch

from robalign.policies import load_policy
from robalign.policies.data import DemoWindows

COLOURS = ("red", "green", "blue")


def colour_of(text: str) -> int:
    return next(i for i, c in enumerate(COLOURS) if c in text.split())


def swap_colour(text: str) -> str:
    i = colour_of(text)
    return text.replace(COLOURS[i], COLOURS[(i + 1) % 3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policy")
    parser.add_argument("demos")
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    policy = load_policy(args.policy, overrides={"temperature": 0})
    c = policy.config
    windows = DemoWindows(args.demos, policy.input_keys(c), c.n_obs_steps, policy.window_horizon(c))
    firsts = torch.tensor(sorted(set(windows.episode_start.tolist()))[:args.episodes])
    batch = windows.batch(firsts)
    obs = {k: batch[k] for k in policy.input_keys(c)}
    chunk = batch["action"][:, c.n_obs_steps - 1:c.n_obs_steps - 1 + c.horizon]
    tokens = chunk[0].numel()
    with torch.no_grad():
        nll = -policy.log_prob(obs, chunk).mean() / tokens
        swapped = {**obs, "instruction": [swap_colour(t) for t in obs["instruction"]]}
        nll_swapped = -policy.log_prob(swapped, chunk).mean() / tokens
        move = policy.detokenize(policy.sample_tokens(obs, temperature=0)[0])[:, 0, :2]
    # pick-place-lang's environment_state: per cube (red, green, blue) xyz + sin, cos; then the bowl
    eef, state = batch["state"][:, -1, :2], batch["environment_state"][:, -1]
    to_cubes = torch.stack([state[:, 5 * i:5 * i + 2] - eef for i in range(3)], 1)  # (B, 3, 2)
    named = torch.tensor([colour_of(t) for t in obs["instruction"]])

    def heads_to_named(xy: torch.Tensor) -> float:
        cos = torch.nn.functional.cosine_similarity(xy[:, None], to_cubes, dim=-1)
        return float((cos.argmax(1) == named).float().mean())

    print(f"{len(firsts)} first frames: NLL/token of the demo's first chunk {nll:.3f} with the true colour, "
          f"{nll_swapped:.3f} with it swapped")
    print(f"first move heads to the named cube: policy {heads_to_named(move):.0%}, "
          f"demos {heads_to_named(chunk[:, 0, :2]):.0%} (chance ~33%)")
    steering(policy, windows, args.episodes)


def steering(policy, windows, n: int, shift: float = 0.01) -> None:
    """Greedy first action's xy response to moving the named cube, or another cube, by
    `shift` metres (see the module docstring)."""
    c = policy.config
    keys = policy.input_keys(c)
    frames = torch.randperm(len(windows), generator=torch.Generator().manual_seed(0))[:20 * n]
    batch = windows.batch(frames)
    eef, env = batch["state"][:, -1, :3], batch["environment_state"][:, -1]
    named = torch.tensor([colour_of(t) for t in batch["instruction"]])
    cube = torch.stack([env[i, 5 * k:5 * k + 3] for i, k in enumerate(named.tolist())])
    near = ((cube[:, :2] - eef[:, :2]).norm(dim=1) < 0.03) & (eef[:, 2] > cube[:, 2]) & (batch["action"][:, c.n_obs_steps - 1, -1] < 0)
    pick = torch.nonzero(near)[:n, 0]
    obs = {k: (batch[k][pick] if torch.is_tensor(batch[k]) else [batch[k][i] for i in pick.tolist()]) for k in keys}
    named, other = named[pick], (named[pick] + 1) % 3

    def first_xy(o):
        with torch.no_grad():
            return policy.detokenize(policy.sample_tokens(o, temperature=0)[0])[:, 0, :2]

    base = first_xy(obs)
    print(f"{len(pick)} demo frames with the open gripper within 3 cm of the named cube; "
          f"xy action response per {shift * 100:.0f} cm (the expert: {30 * shift:.2f}):")
    for who, index in (("named cube", named), ("another cube", other)):
        for axis in (0, 1):
            moved = obs["environment_state"].clone()
            moved[torch.arange(len(pick)), :, 5 * index + axis] += shift
            delta = first_xy({**obs, "environment_state": moved})[:, axis] - base[:, axis]
            print(f"  {who} moved along {'xy'[axis]}: mean {delta.mean():+.3f}, median {delta.median():+.3f}")


if __name__ == "__main__":
    main()
