"""Policy alignment: one loop (roll out, score, pair, update) for every method.

    from robalign.alignment import AlignConfig, MethodConfig, align, make_scorer
    scorer = make_scorer("reward", reward="runs/reward")          # or objective / grape
    align("runs/pretrain/policy", "reach-around", scorer, MethodConfig("diffusion-dpo"),
          AlignConfig(rounds=4), "runs/align", objective="clearance")

Methods (`ALIGNERS`): tpo, diffusion-dpo, dppo, best-of-n, expert-iteration. See `robalign.alignment.methods`.
"""

from .loop import AlignConfig, AlignmentError, align
from .methods import ALIGNERS, MethodConfig, make_aligner
from .scorers import Scorer, ScoringError, make_scorer

__all__ = ["ALIGNERS", "AlignConfig", "AlignmentError", "MethodConfig", "Scorer", "ScoringError", "align",
           "make_aligner", "make_scorer"]
