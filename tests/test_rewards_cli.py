"""`robalign reward` and `robalign reward eval` end to end on a small store of real videos."""

import json

import numpy as np
import pytest

from robalign.annotators import SimulatedAnnotator
from robalign.cli import main
from robalign.errors import RobalignError
from robalign.preferences import PreferenceStore


def score_objective(traj) -> float:
    """The synthetic trajectories' own score (importable as tests' `test_rewards_cli:score_objective`)."""
    return float(traj.info["score"][0])


@pytest.fixture
def answered_store(tmp_path, make_trajectory):
    """12 synthetic videos; a simulated person ranked 20 triplets by score."""
    root = tmp_path / "store"
    person = SimulatedAnnotator(score_objective, seed=0)
    rng = np.random.default_rng(0)
    with PreferenceStore(root) as store:
        trajs = {store.add_trajectory(make_trajectory(i, steps=12)): make_trajectory(i, steps=12) for i in range(12)}
        ids = list(trajs)
        groups = [[ids[k] for k in rng.choice(len(ids), 3, replace=False)] for _ in range(20)]
        annotator, _ = store.simulated_annotator("sim-score")
        for qid, group in zip(store.add_queries(groups), groups):
            store.record_answer(qid, annotator, "rank", person.rank([trajs[t] for t in group]))
    return root


SMALL = ["image_size=32", "frame_stride=2", "train.max_epochs=5", "progress=false"]


@pytest.mark.parametrize("method", ["rapl", "rlhf", "imagenet-ot", "oracle"])
def test_reward_then_eval_writes_the_metrics_and_plots(answered_store, tmp_path, method, capsys):
    out, ev = tmp_path / "reward", tmp_path / "eval"
    objective = "test_rewards_cli:score_objective"
    assert main(["reward", f"method={method}", f"prefs={answered_store}", f"output_dir={out}",
                 f"objective={objective}", *SMALL]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"reward_config.json", "reward.safetensors", "training.json", "config.yaml"} <= files
    training = json.loads((out / "training.json").read_text())
    assert training["answers"] == 20 and training["trajectories"] == 12
    if method in ("rapl", "rlhf"):
        assert "training_loss.png" in files and 1 <= len(training["history"]["train_loss"]) <= 5
    if method in ("rapl", "imagenet-ot"):
        assert len(training["demos"]) == 5  # the 5 most preferred compared videos
    assert main(["reward", "eval", f"reward={out}", f"prefs={answered_store}", f"output_dir={ev}",
                 "progress=false"]) == 0
    metrics = json.loads((ev / "reward_metrics.json").read_text())
    assert metrics["method"] == method and metrics["objective"] == objective
    assert metrics["comparisons"] == 60 and metrics["trajectories"] == 12
    assert -1 <= metrics["spearman_traj"] <= 1 and 0 <= metrics["accuracy"] <= 1
    if method == "oracle":  # the person's own objective agrees with the person
        assert metrics["spearman_traj"] == pytest.approx(1.0) and metrics["accuracy"] == 1.0
    assert (ev / "scatter.png").stat().st_size > 1000
    assert ((ev / "transport.png").exists()) == (method in ("rapl", "imagenet-ot"))


def test_keypoint_reward_on_a_feature_map(answered_store, tmp_path, capsys):
    out, ev = tmp_path / "kp", tmp_path / "kp-eval"
    assert main(["reward", "method=rlhf", f"prefs={answered_store}", f"output_dir={out}", "features=spatial8",
                 "keypoints=3", *SMALL]) == 0
    cfg = json.loads((out / "reward_config.json").read_text())
    assert (cfg["features"], cfg["keypoints"], cfg["feature_shape"]) == ("spatial8", 3, [40, 4, 4])  # 32 px / 8
    assert main(["reward", "eval", f"reward={out}", f"prefs={answered_store}", f"output_dir={ev}",
                 "objective=test_rewards_cli:score_objective", "progress=false"]) == 0
    assert json.loads((ev / "reward_metrics.json").read_text())["trajectories"] == 12
    assert main(["reward", "method=rlhf", f"prefs={answered_store}", f"output_dir={tmp_path / 'bad'}", "keypoints=3",
                 *SMALL]) == 2
    assert "keypoints=3 reads places off a feature map" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()



def test_augmented_copies_change_what_the_reward_learns(answered_store, tmp_path, capsys):
    from safetensors.torch import load_file

    plain, augmented = tmp_path / "plain", tmp_path / "aug"
    assert main(["reward", "method=rlhf", f"prefs={answered_store}", f"output_dir={plain}", *SMALL]) == 0
    assert main(["reward", "method=rlhf", f"prefs={answered_store}", f"output_dir={augmented}", "train.augment=2",
                 *SMALL]) == 0
    assert json.loads((augmented / "training.json").read_text())["train"]["augment"] == 2
    a, b = (load_file(d / "reward.safetensors") for d in (plain, augmented))
    assert a.keys() == b.keys() and any(not (a[k] == b[k]).all() for k in a)  # same seed, other training data
    assert main(["reward", "method=rlhf", f"prefs={answered_store}", f"output_dir={tmp_path / 'bad'}",
                 "train.augment=-1", *SMALL]) == 2
    assert "bad reward training setting augment=-1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

def test_reward_bad_input_leaves_nothing_behind(tmp_path, make_trajectory, capsys):
    empty = tmp_path / "empty"
    with PreferenceStore(empty) as store:
        store.add_trajectory(make_trajectory(0))
    out = tmp_path / "out"
    assert main(["reward", f"prefs={empty}", f"output_dir={out}", "progress=false"]) == 2
    assert "no preferences to learn from" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    assert main(["reward", "method=dpo", f"prefs={empty}", f"output_dir={out}"]) == 2
    assert "unknown reward method 'dpo'; valid choices: imagenet-ot, oracle, rapl, rlhf" in capsys.readouterr().err
    assert main(["reward", f"prefs={empty}", "train.lr=-1", f"output_dir={out}"]) == 2
    assert "bad reward training setting lr=-1" in capsys.readouterr().err
    assert main(["reward", "eval", f"reward={tmp_path / 'nothing'}", f"prefs={empty}", f"output_dir={out}"]) == 2
    assert "is not a reward checkpoint" in capsys.readouterr().err
    assert main(["reward", f"prefs={empty}", "sinkhorn_epss=1"]) == 2
    assert "unknown setting 'sinkhorn_epss'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_ot_reward_against_a_demos_dataset(answered_store, tmp_path, capsys):
    demos, out = tmp_path / "demos", tmp_path / "reward"
    assert main(["demos", "env=reach-around", "n=2", "preview=0", f"output_dir={demos}", "progress=false"]) == 0
    assert main(["reward", "method=imagenet-ot", f"prefs={answered_store}", f"demos={demos}", f"output_dir={out}",
                 *SMALL]) == 0
    training = json.loads((out / "training.json").read_text())
    assert training["demos"] == [f"{demos}:demo-0", f"{demos}:demo-1"]
    from robalign.rewards import load_reward

    reward = load_reward(out)
    assert len(reward.demos) == 2 and reward.demos[0].shape[1] == 1280
    assert main(["reward", "method=rapl", f"prefs={answered_store}", f"demos={tmp_path}",
                 f"output_dir={tmp_path / 'x'}", *SMALL]) == 2
    assert "is not a LeRobotDataset" in capsys.readouterr().err


def test_rapl_on_a_scene_cnn_encoder(answered_store, tmp_path, monkeypatch):
    """A reward trained on a pretrained scene-cnn reads its 128 features (or its lifted
    gripper-to-object offsets), and records which weights."""
    from safetensors.torch import save_file

    from robalign.rewards import load_reward, scene_encoder
    from robalign.rewards.scene_encoder import OFFSET_FEATURES, pretrain_scene_encoder, save_scene_encoder

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(64, 32, 32, 3), dtype=np.uint8)
    targets = np.c_[frames.mean((1, 2)), frames[:, :16].mean((1, 2, 3))].astype(np.float32)
    net = pretrain_scene_encoder(frames, targets, epochs=1, batch=32, progress=False)
    weights, out = tmp_path / "scene.safetensors", tmp_path / "reward"
    save_scene_encoder(net, weights, ["eef_x", "eef_y", "eef_z", "vase_x"])
    assert main(["reward", "method=rapl", "encoder=scene-cnn", f"encoder_weights={weights}", f"prefs={answered_store}",
                 f"output_dir={out}", *SMALL]) == 0
    reward = load_reward(out)
    assert reward.cfg.encoder == "scene-cnn" and reward.cfg.feature_dim == 128
    assert len(reward.demos) == 5 and reward.demos[0].shape[1] == 128
    assert main(["reward", "method=rapl", "encoder=scene-cnn", f"encoder_weights={weights}", "features=offsets",
                 f"prefs={answered_store}", f"output_dir={tmp_path / 'offsets'}", *SMALL]) == 0
    lifted = load_reward(tmp_path / "offsets")
    assert lifted.cfg.feature_dim == OFFSET_FEATURES and lifted.demos[0].shape[1] == OFFSET_FEATURES
    # the lift is not in the checkpoint but recorded: a robalign that lifts otherwise refuses it
    assert lifted.cfg.offset_lift == {"features": OFFSET_FEATURES, "bandwidth": 0.1, "seed": 0}
    config = tmp_path / "offsets" / "reward_config.json"
    config.write_text(config.read_text().replace('"bandwidth": 0.1', '"bandwidth": 0.05'))
    with pytest.raises(RobalignError, match="lifted with .*train the reward again"):
        load_reward(tmp_path / "offsets")
    # a reward saved before the lift was recorded is taken to have the first one, which this robalign has
    config.write_text(config.read_text().replace('"bandwidth": 0.05', '"bandwidth": 0.1'))
    raw = json.loads(config.read_text())
    config.write_text(json.dumps({k: v for k, v in raw.items() if k != "offset_lift"}))
    assert load_reward(tmp_path / "offsets").cfg.offset_lift is None
    monkeypatch.setattr(scene_encoder, "OFFSET_BANDWIDTH", 0.05)  # a robalign whose lift changed
    with pytest.raises(RobalignError, match="lifted with .*'bandwidth': 0.1.*lifts with .*'bandwidth': 0.05"):
        load_reward(tmp_path / "offsets")
    monkeypatch.undo()
    save_file({k: (v + 1).contiguous() for k, v in net.state_dict().items()}, weights)  # other weights, same path
    with pytest.raises(RobalignError, match="sha256"):
        load_reward(out).backbone


def _store_of_looks(root, make_trajectory, looks):
    """A store whose synthetic videos say how they drew the robot; a person ranked 20 triplets."""
    import dataclasses

    person, rng = SimulatedAnnotator(score_objective, seed=0), np.random.default_rng(0)
    with PreferenceStore(root) as store:
        trajs = {}
        for i, look in enumerate(looks):
            t = make_trajectory(i, steps=12)
            t = dataclasses.replace(t, provenance={**t.provenance, "robot_meshes": look})
            trajs[store.add_trajectory(t)] = t
        ids = list(trajs)
        groups = [[ids[k] for k in rng.choice(len(ids), 3, replace=False)] for _ in range(20)]
        annotator, _ = store.simulated_annotator("sim-score")
        for qid, group in zip(store.add_queries(groups), groups):
            store.record_answer(qid, annotator, "rank", person.rank([trajs[t] for t in group]))
    return root


def test_a_reward_is_used_only_with_the_robot_look_it_learnt_from(tmp_path, make_trajectory, monkeypatch):
    from robalign.alignment.scorers import ScoringError, make_scorer
    from robalign.errors import RobalignError

    store, out = _store_of_looks(tmp_path / "store", make_trajectory, ["collision"] * 12), tmp_path / "reward"
    assert main(["reward", "method=rapl", f"prefs={store}", f"output_dir={out}", *SMALL]) == 0
    assert json.loads((out / "reward_config.json").read_text())["robot_meshes"] == "collision"
    scorer = make_scorer("reward", reward=str(out))  # this process draws hulls too (the default)
    seen = make_trajectory(0, steps=12)
    seen.provenance["robot_meshes"] = "visual"  # an episode recorded on another machine's setting
    with pytest.raises(ScoringError, match="ROBALIGN_ROBOT_MESHES=collision.*drawn with visual"):
        scorer.score([seen])
    monkeypatch.setenv("ROBALIGN_ROBOT_MESHES", "visual")
    with pytest.raises(RobalignError, match="set ROBALIGN_ROBOT_MESHES=collision"):
        make_scorer("reward", reward=str(out))


def test_videos_of_two_robot_looks_are_refused(tmp_path, make_trajectory, capsys):
    store = _store_of_looks(tmp_path / "store", make_trajectory, ["collision"] * 6 + ["visual"] * 6)
    assert main(["reward", "method=rlhf", f"prefs={store}", f"output_dir={tmp_path / 'reward'}", *SMALL]) != 0
    assert "draw the robot in different ways (collision, visual" in capsys.readouterr().err
    assert not (tmp_path / "reward").exists()
