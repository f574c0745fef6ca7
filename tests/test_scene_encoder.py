"""The scene-cnn encoder: it learns where things are, loads as a reward backbone, and
`robalign reward encoder` pretrains it on a real demos dataset."""

import json

import numpy as np
import pytest
import torch

from robalign.cli import main
from robalign.errors import RobalignError
from robalign.rewards.encoders import make_backbone
from robalign.rewards.scene_encoder import (OFFSET_FEATURES, offset_features, pretrain_scene_encoder, save_scene_encoder,
                                           scene_encoder_error)


def blob_frames(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """n frames of a grey scene with one white 4 px square at a random place; targets its (x, y)."""
    rng = np.random.default_rng(seed)
    frames = np.full((n, size, size, 3), 90, np.uint8)
    xy = rng.integers(0, size - 4, size=(n, 2))
    for f, (x, y) in zip(frames, xy):
        f[y:y + 4, x:x + 4] = 255
    return frames, xy.astype(np.float32)


def test_pretraining_learns_where_the_blob_is():
    frames, xy = blob_frames(768, seed=0)
    val_frames, val_xy = blob_frames(128, seed=1)
    torch.set_num_threads(2)
    net = pretrain_scene_encoder(frames, xy, epochs=4, batch=64, lr=3e-3, shift=0, progress=False)
    error = scene_encoder_error(net, val_frames, val_xy)
    # guessing the mean errs by the spread (~8 px); a net that reads the place does far better
    assert (error < 0.35 * val_xy.std(0)).all(), (error, val_xy.std(0))


def test_pretraining_refuses_bad_input():
    frames, xy = blob_frames(16, seed=0)
    with pytest.raises(RobalignError, match="do not vary"):
        pretrain_scene_encoder(frames, np.concatenate([xy, np.ones((16, 1), np.float32)], 1), batch=8,
                               progress=False)
    with pytest.raises(RobalignError, match=r"\(M, K\) with M = 16"):
        pretrain_scene_encoder(frames, xy[:8], progress=False)
    with pytest.raises(RobalignError, match="uint8"):
        pretrain_scene_encoder(frames.astype(np.float32), xy, progress=False)
    with pytest.raises(RobalignError, match=r"batch must be an int in \[2, 16\]"):
        pretrain_scene_encoder(frames, xy, batch=32, progress=False)


def test_scene_cnn_backbone_loads_its_weights_and_refuses_others(tmp_path):
    from safetensors.torch import save_file

    frames, xy = blob_frames(64, seed=0)
    net = pretrain_scene_encoder(frames, xy, epochs=1, batch=32, progress=False)
    path = tmp_path / "encoder.safetensors"
    save_scene_encoder(net, path, ["blob_x", "blob_y"])
    backbone = make_backbone("scene-cnn", str(path))
    feats = backbone.features(frames[:5])
    assert feats.shape == (5, 128) and backbone.dim == 128
    with torch.no_grad():  # the same features the pretrained net computes, normalised the same way
        expected = net(torch.from_numpy(frames[:5]).permute(0, 3, 1, 2).float().div(127.5).sub(1))
    torch.testing.assert_close(feats, expected)
    with pytest.raises(RobalignError, match="needs encoder_weights=PATH"):
        make_backbone("scene-cnn")
    save_file({"weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(RobalignError, match="not a scene-cnn weights file"):
        make_backbone("scene-cnn", str(tmp_path / "other.safetensors"))
    with pytest.raises(RobalignError, match="features=pooled or offsets only"):
        backbone.features(frames[:2], kind="spatial")
    with pytest.raises(RobalignError, match="needs the gripper's"):  # no eef among blob_x, blob_y
        backbone.features(frames[:2], kind="offsets")
    with pytest.raises(RobalignError, match="2 target names for a read-out of 3"):
        save_scene_encoder(pretrain_scene_encoder(frames, np.c_[xy, xy.sum(1)], epochs=1, batch=32, progress=False),
                           tmp_path / "x.safetensors", ["blob_x", "blob_y"])


NAMES = ["eef_x", "eef_y", "eef_z", "finger_0", "vase_x", "vase_y", "goal_x", "goal_y"]  # goal_z: never varied


def test_offset_features_see_where_the_gripper_is_relative_to_objects():
    rng = np.random.default_rng(0)
    values = torch.from_numpy(rng.normal(0, 0.1, (6, len(NAMES)))).float()
    feats = offset_features(values, NAMES)
    assert feats.shape == (6, OFFSET_FEATURES)
    # moving the gripper and every object together (x, y) changes no offset, so no feature
    moved = values.clone()
    moved[:, [0, 4, 6]] += 0.3
    moved[:, [1, 5, 7]] -= 0.2
    torch.testing.assert_close(offset_features(moved, NAMES), feats)
    # what the fingers do is no offset either
    moved[:, 3] += 1.0
    torch.testing.assert_close(offset_features(moved, NAMES), feats)
    # a kernel of width ~10 cm: 1 cm closer to the vase keeps a frame alike, 30 cm does not
    def similarity(shift):
        other = values.clone()
        other[:, 4] += shift
        return torch.nn.functional.cosine_similarity(offset_features(other, NAMES), feats).mean()
    assert similarity(0.01) > 0.95 and similarity(0.3) < 0.5, (similarity(0.01), similarity(0.3))
    with pytest.raises(RobalignError, match="needs the gripper's"):
        offset_features(values[:, 3:], NAMES[3:])


def test_offsets_backbone_lifts_the_readout_and_refuses_files_without_names(tmp_path):
    from safetensors.torch import save_file

    frames, xy = blob_frames(64, seed=0)
    targets = np.c_[xy, xy[:, :1] * 0.5, xy[:, 1:] + 1, xy.sum(1, keepdims=True), xy[:, :1] - xy[:, 1:], xy[:, :1] * 2,
                    xy[:, 1:] * 3].astype(np.float32) / 100
    net = pretrain_scene_encoder(frames, targets, epochs=1, batch=32, progress=False)
    path = tmp_path / "encoder.safetensors"
    save_scene_encoder(net, path, NAMES)
    backbone = make_backbone("scene-cnn", str(path))
    assert backbone.feature_shape("offsets", 32) == (OFFSET_FEATURES,)
    with torch.no_grad():
        x = torch.from_numpy(frames[:5]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        values = net.predict(x) * net.target_std + net.target_mean  # the read-out, in target units
    torch.testing.assert_close(backbone.features(frames[:5], kind="offsets"), offset_features(values, NAMES))
    # weights saved without names (before names were kept) still give pooled features, not offsets
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "old.safetensors")
    old = make_backbone("scene-cnn", str(tmp_path / "old.safetensors"))
    assert old.features(frames[:2]).shape == (2, 128)
    with pytest.raises(RobalignError, match="records no target names"):
        old.features(frames[:2], kind="offsets")


def test_reward_encoder_pretrains_on_a_demos_dataset(tmp_path, capsys):
    demos, enc = tmp_path / "demos", tmp_path / "encoder"
    assert main(["demos", "env=reach-around", "n=3", "preview=0", f"output_dir={demos}", "progress=false"]) == 0
    assert main(["reward", "encoder", f"demos={demos}", "epochs=1", "batch=16", f"output_dir={enc}",
                 "progress=false"]) == 0
    assert {p.name for p in enc.iterdir()} == {"encoder.safetensors", "encoder.json", "errors.png", "config.yaml"}
    summary = json.loads((enc / "encoder.json").read_text())
    assert summary["env"] == "reach-around" and summary["episodes"] == 3 and summary["held_out_episodes"] == 1
    # positions of the gripper and of the objects the task moves; the goal's fixed height is left out
    assert {"eef_x", "eef_z", "vase_x", "vase_y", "goal_y"} <= set(summary["targets"])
    assert "goal_z" not in summary["targets"]
    assert all(np.isfinite(v) for v in summary["held_out_rmse"].values())
    # the weights file names its read-out's values, so features=offsets can find the gripper and the vase
    assert make_backbone("scene-cnn", str(enc / "encoder.safetensors")).target_names == summary["targets"]


def test_reward_encoder_bad_input_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "enc"
    assert main(["reward", "encoder", f"output_dir={out}", "progress=false"]) == 2
    assert "demos=PATH is required" in capsys.readouterr().err
    assert main(["reward", "encoder", f"demos={tmp_path}", f"output_dir={out}", "progress=false"]) == 2
    assert "robalign demos" in capsys.readouterr().err
    assert main(["reward", "encoder", f"demos={tmp_path}", "epochs=0", f"output_dir={out}", "progress=false"]) == 2
    assert "epochs must be an int >= 1" in capsys.readouterr().err
    assert not out.exists()
