"""Visual rewards learnt from preferences: RAPL (OT matching in a representation aligned
with the person) and its baselines (rlhf, imagenet-ot, oracle).

    from robalign.rewards import load_reward
    reward = load_reward("runs/reward")      # written by `robalign reward`
    per_step = reward.reward(trajectory)     # (T,) numpy; its sum is the trajectory reward
"""

from robalign.rewards.models import REWARDS, RewardConfig, RewardModel, load_reward, make_reward

__all__ = ["REWARDS", "RewardConfig", "RewardModel", "load_reward", "make_reward"]
