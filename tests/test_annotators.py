import math

import numpy as np
import pytest

from robalign.annotators import SimulatedAnnotator
from robalign.errors import RobalignError, UnknownNameError
from robalign.types import Trajectory


def traj(score: float, env: str = "reach-around", steps: int = 3) -> Trajectory:
    return Trajectory(
        state=np.zeros((steps, 16), np.float32), action=np.zeros((steps, 7), np.float32),
        instruction="x", success=True, info={"score": np.full(steps, score, np.float32),
                                             "vase_clearance": np.full(steps, score, np.float32)},
        provenance={"env": env},
    )


def by_score(t: Trajectory) -> float:
    return float(t.info["score"][0])


def test_fully_rational_always_prefers_the_better():
    person = SimulatedAnnotator(by_score, rationality=math.inf)
    assert all(person.compare(traj(1.0), traj(0.5)) == "A" for _ in range(20))
    assert person.compare(traj(0.1), traj(0.2)) == "B"
    assert person.rank([traj(0.2), traj(0.9), traj(0.5)]) == [1, 2, 0]


def test_choice_frequency_follows_bradley_terry():
    beta, diff, n = 2.0, 0.5, 4000
    person = SimulatedAnnotator(by_score, rationality=beta, seed=0)
    a, b = traj(diff), traj(0.0)
    wins = sum(person.compare(a, b) == "A" for _ in range(n)) / n
    expected = 1 / (1 + math.exp(-beta * diff))
    assert abs(wins - expected) < 3 * math.sqrt(expected * (1 - expected) / n)


def test_triplet_ranking_puts_the_best_first_most_often():
    person = SimulatedAnnotator(by_score, rationality=3.0, seed=1)
    trio = [traj(0.0), traj(1.0), traj(0.5)]
    firsts = [person.rank(trio)[0] for _ in range(3000)]
    share = np.bincount(firsts, minlength=3) / len(firsts)
    logits = 3.0 * np.array([0.0, 1.0, 0.5])
    expected = np.exp(logits) / np.exp(logits).sum()  # Plackett-Luce first choice
    np.testing.assert_allclose(share, expected, atol=0.03)
    assert sorted(person.rank(trio)) == [0, 1, 2]


def test_ties_within_margin():
    person = SimulatedAnnotator(by_score, rationality=math.inf, tie_margin=0.1)
    assert person.compare(traj(0.50), traj(0.45)) == "tie"
    assert person.compare(traj(0.50), traj(0.30)) == "A"


def test_registered_objective_by_name():
    person = SimulatedAnnotator("clearance")
    assert person.score(traj(0.07)) == pytest.approx(0.07)
    assert person.compare(traj(0.08), traj(0.02)) == "A"


def test_registered_objective_checks_the_env():
    person = SimulatedAnnotator("clearance")
    with pytest.raises(RobalignError, match="reach-around"):
        person.score(traj(0.07, env="cube-group"))


@pytest.mark.parametrize("kwargs", [{"rationality": 0}, {"rationality": -1}, {"rationality": float("nan")},
                                    {"tie_margin": -0.1}, {"tie_margin": float("inf")}])
def test_bad_parameters(kwargs):
    with pytest.raises(RobalignError):
        SimulatedAnnotator(by_score, **kwargs)


def test_unknown_objective_names_the_choices():
    with pytest.raises(UnknownNameError, match="clearance"):
        SimulatedAnnotator("clearence")


def test_objective_returning_nan_is_an_error():
    person = SimulatedAnnotator(lambda t: float("nan"))
    with pytest.raises(RobalignError, match="finite"):
        person.compare(traj(0), traj(1))


def test_rank_needs_two():
    with pytest.raises(RobalignError):
        SimulatedAnnotator(by_score).rank([traj(0)])


def test_rationality_none_takes_the_objectives_registered_scale():
    """Each objective registers the rationality that suits its units; a callable has none."""
    from robalign.envs.objectives import objective

    assert SimulatedAnnotator("clearance", rationality=None).rationality == 200.0  # per metre
    assert SimulatedAnnotator("handle-grasp", rationality=None).rationality == 10.0  # per share
    assert math.isinf(SimulatedAnnotator("time", rationality=None).rationality)  # registered none
    assert math.isinf(SimulatedAnnotator(by_score, rationality=None).rationality)
    assert SimulatedAnnotator("clearance", rationality=3.0).rationality == 3.0  # a given one wins
    with pytest.raises(RobalignError, match="objective 'wobble': rationality must be a number > 0"):
        objective("wobble", rationality=-1.0)
