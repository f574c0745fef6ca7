import subprocess
import sys

import pytest

from robalign.cli import compose, main
from robalign.errors import RobalignError


def test_help_lists_verbs(capsys):
    assert main(["--help"]) == 0
    assert "demos" in capsys.readouterr().out


def test_unknown_verb(capsys):
    assert main(["demoz"]) == 2
    assert "valid choices: demos" in capsys.readouterr().err


def test_unknown_setting_lists_valid_ones():
    with pytest.raises(RobalignError, match="unknown setting 'nn'.*env.distractors"):
        compose("demos", ["nn=3"])


def test_adding_settings_is_refused():
    with pytest.raises(RobalignError, match="not allowed"):
        compose("demos", ["+nn=3"])


def test_unknown_env_names_the_choices(capsys):
    assert main(["demos", "env=nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown env 'nope'" in err and "mug-grasp" in err


def test_env_group_override():
    cfg = compose("demos", ["env=mug-grasp", "env.distractors=true", "n=3"])
    assert cfg.env.name == "mug-grasp" and cfg.env.distractors is True and cfg.n == 3


def test_python_dash_m_is_the_same_cli():
    out = subprocess.run([sys.executable, "-m", "robalign", "envs"], capture_output=True, text=True, check=True)
    assert "reach-around" in out.stdout
    # each objective with what it measures, its threshold and the simulated person's rationality
    assert ("    clearance: Closest approach of any gripper geom to the vase over the episode, metres "
            "(satisfied at >= 0.05; rationality 200)") in out.stdout.splitlines()
    assert "    time: Minus the number of steps: shorter episodes are better (no threshold; rationality inf)" in out.stdout


def test_every_verb_composes_with_its_defaults():
    from robalign.cli import VERBS

    for verb in VERBS:
        cfg = compose(verb, [])  # `prefs queries` has no env group unless env=NAME picks one
        assert cfg is not None, verb


def test_env_layout_only_where_it_is_run():
    assert compose("eval", ["env=pick-place-lang", "env.layout=dense"]).env.layout == "dense"
    assert compose("align", ["env=pick-place-lang", "env.layout=dense"]).env.layout == "dense"
    with pytest.raises(RobalignError, match="env.layout=dense is read by eval and align only"):
        compose("rollouts", ["env=pick-place-lang", "env.layout=dense"])


def test_prefs_queries_takes_an_env_like_every_verb():
    assert compose("prefs queries", ["env=mug-grasp"]).env.name == "mug-grasp"
    assert compose("prefs queries", []).get("env") is None
