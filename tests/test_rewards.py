"""Visual rewards: the Sinkhorn layer, encoders, reward models, training, checkpoints, errors."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from robalign.errors import RobalignError
from robalign.rewards.data import (augment_video, check_labels, compute_features, compute_views, load_videos,
                                   preferred_ids)
from robalign.rewards.encoders import load_state_dict_file, make_backbone
from robalign.rewards.evaluation import LinearProbe, evaluate, trajectory_summary
from robalign.rewards.models import RewardConfig, load_reward, make_reward
from robalign.rewards.sinkhorn import cosine_cost, ot_step_costs, pad_sequences, sinkhorn
from robalign.rewards.training import TrainConfig, train_reward
from robalign.types import Trajectory


# ---- Sinkhorn ------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_sinkhorn_matches_pot(eps):
    ot = pytest.importorskip("ot")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 12, 6, generator=gen, dtype=torch.float64), torch.randn(4, 9, 6, generator=gen,
                                                                                 dtype=torch.float64)
    cost = cosine_cost(x, y)
    plans = sinkhorn(cost, eps, iters=2000)
    for b in range(4):
        ref = ot.sinkhorn(np.full(12, 1 / 12), np.full(9, 1 / 9), cost[b].numpy(), eps, numItermax=100000,
                          stopThr=1e-13)
        assert np.abs(plans[b].numpy() - ref).max() < 1e-5


def test_sinkhorn_masks_match_unpadded_problems():
    ot = pytest.importorskip("ot")
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(n, 5, generator=gen, dtype=torch.float64) for n in (7, 3)]
    ys = [torch.randn(m, 5, generator=gen, dtype=torch.float64) for m in (4, 8)]
    (x, mx), (y, my) = pad_sequences(xs), pad_sequences(ys)
    plans = sinkhorn(cosine_cost(x, y), 0.1, 2000, mx, my)
    for b in range(2):
        n, m = len(xs[b]), len(ys[b])
        ref = ot.sinkhorn(np.full(n, 1 / n), np.full(m, 1 / m), cosine_cost(xs[b], ys[b]).numpy(), 0.1,
                          numItermax=100000, stopThr=1e-13)
        assert np.abs(plans[b, :n, :m].numpy() - ref).max() < 1e-5
        assert plans[b, n:].abs().sum() == 0 and plans[b, :, m:].abs().sum() == 0  # padding carries no mass


def test_sinkhorn_gradcheck():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    mx = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    assert torch.autograd.gradcheck(lambda a, b: ot_step_costs(a, b, mx, None, eps=0.1, iters=30), (x, y))


def test_sinkhorn_small_eps_in_float32_keeps_plans_and_gradients_finite():
    """exp(-C / eps) underflows to 0 in float32 for eps 0.01 and costs above ~0.9: from zero
    potentials whole rows of the kernel vanished and every gradient was NaN."""
    gen = torch.Generator().manual_seed(4)
    y = (torch.tensor([1.0, 0.0, 0.0]) + 0.3 * torch.randn(2, 5, 3, generator=gen)).requires_grad_()
    x = torch.randn(2, 6, 3, generator=gen)
    x[:, 0] = torch.tensor([-1.0, 0.1, 0.0])  # facing away from every y: costs near 2
    x.requires_grad_()
    mx = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    cost = cosine_cost(x, y)
    assert (torch.exp(-cost.detach() / 0.01).sum(2) == 0).any()  # from zero potentials, a kernel row of zeros
    plans = sinkhorn(cost, 0.01, 300, mx)
    (plans * cost).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all() and x.grad.abs().sum() > 0
    exact = sinkhorn(cosine_cost(x.detach().double(), y.detach().double()), 0.01, 300, mx)
    assert (plans.double() - exact).abs().max() < 1e-5


def test_sinkhorn_tol_stops_at_the_first_check_within_it():
    gen = torch.Generator().manual_seed(3)
    cost = cosine_cost(torch.randn(3, 20, 4, generator=gen, dtype=torch.float64),
                       torch.randn(3, 15, 4, generator=gen, dtype=torch.float64))

    def row_error(plans):
        return float((plans.sum(2) - 1 / 20).abs().sum(-1).max())

    early = sinkhorn(cost, 0.05, iters=1000, tol=1e-9)
    assert row_error(early) <= 1e-9
    # the same plan as a fixed run of some multiple of absorb_every iterations, the first whose
    # rows are within tol: it stopped there, not at `iters`
    stopped = next(k for k in range(10, 1000, 10) if torch.equal(sinkhorn(cost, 0.05, iters=k), early))
    assert row_error(sinkhorn(cost, 0.05, iters=stopped - 10)) > 1e-9
    x = torch.randn(2, 6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: sinkhorn(cosine_cost(a, b), 0.1, 500, tol=1e-6), (x, y))


def test_sinkhorn_scaling_and_absorbing_solvers_agree():
    """At eps 0.01 a float32 kernel exp(-C / eps) could underflow (C / eps past 40% of
    float32's exponent range), so float32 takes the absorbing solver; float64's range holds
    it, so the same problem in float64 takes the one-kernel scaling solver."""
    gen = torch.Generator().manual_seed(5)
    cost = cosine_cost(torch.randn(2, 6, 3, generator=gen, dtype=torch.float64),
                       torch.randn(2, 5, 3, generator=gen, dtype=torch.float64))
    mx = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    bound32, bound64 = (0.4 * -np.log(torch.finfo(d).tiny) for d in (torch.float32, torch.float64))
    assert bound64 > float(cost.max()) / 0.01 > bound32
    absorbed, scaled = sinkhorn(cost.float(), 0.01, 2000, mx), sinkhorn(cost, 0.01, 2000, mx)
    assert (absorbed.double() - scaled).abs().max() < 1e-5
    assert scaled[1, 4:].abs().sum() == 0 and abs(float(scaled[1].sum()) - 1) < 1e-9


def test_sinkhorn_rejects_bad_settings():
    with pytest.raises(RobalignError, match="eps must be > 0"):
        sinkhorn(torch.zeros(3, 3), eps=0)
    with pytest.raises(RobalignError, match="iters"):
        sinkhorn(torch.zeros(3, 3), iters=0)
    with pytest.raises(RobalignError, match="tol must be > 0 or None"):
        sinkhorn(torch.zeros(3, 3), tol=0.0)
    with pytest.raises(RobalignError, match=r"at least one real frame; mask_y has none in batch entries \[1\]"):
        sinkhorn(torch.zeros(2, 3, 3), mask_y=torch.tensor([[True] * 3, [False] * 3]))


# ---- encoders ------------------------------------------------------------------------------
def test_efficientnet_loads_packaged_imagenet_weights_strictly():
    backbone = make_backbone("efficientnet-lite0")
    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    feats = backbone.features(frames)
    assert feats.shape == (3, 1280) and torch.isfinite(feats).all()
    assert not any(p.requires_grad for p in backbone.parameters())  # frozen
    assert not torch.allclose(feats[0], feats[1])


def test_encoder_weights_that_do_not_fit_are_refused(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    good = {k: v.contiguous() for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}
    save_file(good, tmp_path / "r18.safetensors")
    backbone = make_backbone("resnet18", str(tmp_path / "r18.safetensors"))
    assert backbone.features(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 512)
    save_file({k: v for k, v in good.items() if k != "fc.bias"}, tmp_path / "partial.safetensors")
    with pytest.raises(RobalignError, match="do not fit"):
        make_backbone("resnet18", str(tmp_path / "partial.safetensors"))
    with pytest.raises(RobalignError, match="needs weights"):
        make_backbone("resnet18")
    with pytest.raises(RobalignError, match="does not exist"):
        make_backbone("efficientnet-lite0", str(tmp_path / "absent.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(RobalignError, match="not a readable state dict"):
        load_state_dict_file(tmp_path / "junk.pth")


def test_spatial_feature_kinds_keep_their_maps_shape():
    backbone = make_backbone("efficientnet-lite0")
    assert backbone.feature_shape("pooled", 96) == (1280,)
    assert backbone.feature_shape("spatial", 96) == (112, 6, 6)
    assert backbone.feature_shape("spatial8", 96) == (40, 12, 12)
    frames = np.random.default_rng(0).integers(0, 255, (2, 96, 96, 3), dtype=np.uint8)
    assert backbone.features(frames, kind="spatial8").shape == (2, 40 * 12 * 12)
    with pytest.raises(RobalignError, match="unknown feature kind 'spatial4' for encoder efficientnet-lite0; "
                                            "valid choices: pooled, spatial, spatial8"):
        backbone.features(frames, kind="spatial4")


# ---- reward models on synthetic features -----------------------------------------------------
F_DIM = 12


def synthetic_features(n: int, seed: int, distract: float = 1.0):
    """Videos whose preferred-ness is how far feature 0 rises over the episode; other
    features are per-episode constants (a 'table colour') plus noise."""
    rng = np.random.default_rng(seed)
    quality = rng.uniform(0, 1, n)
    feats = {}
    for i in range(n):
        T = int(rng.integers(8, 14))
        f = np.tile(rng.normal(0, distract, F_DIM), (T, 1)) + rng.normal(0, 0.05, (T, F_DIM))
        f[:, 0] += np.linspace(0, 2 * quality[i], T)
        feats[f"t{i:03d}"] = torch.tensor(f, dtype=torch.float32)
    return feats, {f"t{i:03d}": float(q) for i, q in enumerate(quality)}


def triplet_labels(quality: dict, n: int, seed: int):
    rng = np.random.default_rng(seed)
    ids = sorted(quality)
    out = []
    for _ in range(n):
        group = [ids[k] for k in rng.choice(len(ids), 3, replace=False)]
        out.append((tuple(sorted(group, key=lambda t: -quality[t])), None))
    return out


def small_config(method):
    return RewardConfig(method=method, feature_dim=F_DIM, embed_dim=8, hidden_dim=16, frame_stride=1,
                        sinkhorn_iters=30, sinkhorn_eps=0.1)


def fake_trajectory(T: int) -> Trajectory:
    return Trajectory(state=np.zeros((T, 2), np.float32), action=np.zeros((T, 7), np.float32), instruction="",
                      success=True)


def held_out_rho(model, feats, quality):
    from scipy.stats import spearmanr

    ids = sorted(feats)
    totals = [model.reward(fake_trajectory(len(feats[t])), feats[t]).sum() for t in ids]
    return spearmanr(totals, [quality[t] for t in ids]).statistic


@pytest.mark.parametrize("method, anchor", [("rapl", "best"), ("rapl", "demos"), ("rlhf", "best")])
def test_training_learns_what_the_person_prefers(method, anchor):
    feats, quality = synthetic_features(60, seed=0)
    held_feats, held_quality = synthetic_features(30, seed=1)
    labels = triplet_labels(quality, 120, seed=0)
    torch.manual_seed(0)  # the head's initial weights: the "before" figure must not depend on test order
    model = make_reward(dataclasses.replace(small_config(method), anchor=anchor))
    model.demos = [feats[t] for t in preferred_ids(labels, 3)]
    before = held_out_rho(model, held_feats, held_quality)
    history = train_reward(model, feats, labels, TrainConfig(lr=3e-3, max_epochs=40, patience=10), progress=False)
    after = held_out_rho(model, held_feats, held_quality)
    assert history["val_answers"] == 24 and len(history["val_loss"]) >= 1
    assert min(history["val_loss"]) < history["val_loss"][0]
    assert after > 0.7 and after > before + 0.3, (before, after)



def shortcut_features(n: int, seed: int, shortcut: bool):
    """Videos whose preferred-ness rises in feature 0 (with a little noise) and, in a
    training set with `shortcut`, exactly in feature 1 as well: a lure a reward should not
    learn, since on held-out videos feature 1 rises at random. Returns features, quality
    and each video's lure."""
    rng = np.random.default_rng(seed)
    quality = rng.uniform(0, 1, n)
    feats, lures = {}, {}
    for i in range(n):
        T = int(rng.integers(8, 14))
        f = np.tile(rng.normal(0, 1, F_DIM), (T, 1)) + rng.normal(0, 0.05, (T, F_DIM))
        f[:, 0] += np.linspace(0, 2 * (quality[i] + rng.normal(0, 0.1)), T)
        lures[f"t{i:03d}"] = float(quality[i] if shortcut else rng.uniform(0, 1))
        f[:, 1] += np.linspace(0, 2 * lures[f"t{i:03d}"], T)
        feats[f"t{i:03d}"] = torch.tensor(f, dtype=torch.float32)
    return feats, {f"t{i:03d}": float(q) for i, q in enumerate(quality)}, lures


@pytest.mark.parametrize("method", ["rapl", "rlhf"])
def test_augmented_views_teach_a_reward_to_ignore_a_lure(method):
    """Augmented copies in which the lure rises at random (as recolouring varies a table's
    colour) keep a reward off the lure that fits the training answers as well as the signal."""
    feats, quality, lures = shortcut_features(60, seed=0, shortcut=True)
    held_feats, held_quality, _ = shortcut_features(30, seed=1, shortcut=False)
    labels = triplet_labels(quality, 120, seed=0)
    rng = np.random.default_rng(0)
    views = {}
    for t, f in feats.items():
        views[t] = [f.clone() for _ in range(8)]
        for v in views[t]:
            v[:, 1] += torch.linspace(0, 2 * (float(rng.uniform(0, 1)) - lures[t]), len(f))
    rho = {}
    for name, given in (("plain", None), ("views", views)):
        torch.manual_seed(0)
        model = make_reward(small_config(method))
        model.demos = [feats[t] for t in preferred_ids(labels, 3)]
        train_reward(model, feats, labels, TrainConfig(lr=3e-3, max_epochs=40, patience=10), progress=False,
                     views=given)
        rho[name] = held_out_rho(model, held_feats, held_quality)
    assert rho["views"] > 0.55 and rho["views"] > rho["plain"] + 0.25, rho


def test_augmented_video_keeps_one_look_per_episode_and_leaves_grey_grey():
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    frames[:, :, :8] = [200, 40, 40]  # a red table
    frames[:, :, 8:] = [128, 128, 128]  # a grey vase
    frames[2, 0, 0] = [40, 200, 40]  # something moved in the last frame
    looks = [augment_video(frames, np.random.default_rng(seed), shift=0) for seed in range(4)]
    for out in looks:
        assert out.shape == frames.shape and out.dtype == np.uint8
        assert np.array_equal(out[0], out[1])  # the same frame gets the same look all episode
        grey = out[0, :, 8:].astype(int)
        assert np.abs(grey - grey[..., :1]).max() <= 2  # no colour appears on grey
    tables = {tuple(out[0, 4, 2]) for out in looks}
    assert len(tables) == 4  # every copy recolours the table its own way
    shifted = augment_video(frames, np.random.default_rng(0), shift=4)
    assert shifted.shape == frames.shape


def test_views_are_seeded_copies_of_each_video(make_trajectory):
    torch.manual_seed(0)
    model = make_reward(RewardConfig(method="rlhf", image_size=32, frame_stride=2))
    trajs = {"a": make_trajectory(1, steps=5), "b": make_trajectory(2, steps=4)}
    views = compute_views(model, trajs, 2, seed=3, progress=False)
    again = compute_views(model, trajs, 2, seed=3, progress=False)
    plain = {t: model.frame_features(trajs[t]) for t in trajs}
    for t in trajs:
        assert len(views[t]) == 2 and views[t][0].shape == plain[t].shape
        assert torch.equal(views[t][0], again[t][0])
        assert not torch.allclose(views[t][0], views[t][1]) and not torch.allclose(views[t][0], plain[t])

def test_cached_features_follow_the_frames_not_only_the_id(make_trajectory, tmp_path):
    # A trajectory's id hashes its arrays, not its video: the same seeded episode seen through
    # another camera has the same id, and must not be handed the first camera's features.
    torch.manual_seed(0)
    model = make_reward(RewardConfig(method="rlhf", image_size=32, frame_stride=2))
    first = make_trajectory(1, steps=5)
    other_camera = dataclasses.replace(first, frames=255 - first.frames)
    a = compute_features(model, {"t": first}, cache_dir=tmp_path, progress=False)["t"]
    b = compute_features(model, {"t": other_camera}, cache_dir=tmp_path, progress=False)["t"]
    assert torch.allclose(b, model.frame_features(other_camera)) and not torch.allclose(a, b)
    again = compute_features(model, {"t": first}, cache_dir=tmp_path, progress=False)["t"]
    assert torch.equal(again, a) and len(list(tmp_path.rglob("*.safetensors"))) == 2  # both read from the cache


MAP = (3, 4, 5)  # C, h, w of the synthetic feature maps


def keypoint_config(method, keypoints=4):
    return RewardConfig(method=method, feature_dim=int(np.prod(MAP)), feature_shape=list(MAP), features="spatial",
                        keypoints=keypoints, embed_dim=8, frame_stride=1, sinkhorn_iters=30, relative=False)


def test_keypoint_head_reads_where_a_channel_fires():
    model = make_reward(keypoint_config("rlhf", keypoints=2))
    with torch.no_grad():
        model.head.attend.weight.zero_()
        model.head.attend.bias.zero_()
        model.head.attend.weight[0, 0] = 50.0  # keypoint 0 attends to channel 0
    fmap = torch.zeros(MAP)
    fmap[0, 2, 3] = 1.0  # channel 0 fires at row 2, column 3
    fmap[1] = torch.rand(MAP[1:])  # other channels do not move keypoint 0
    points = model.head.points(fmap.flatten()[None])
    assert points.shape == (1, 2, 2)
    assert torch.allclose(points[0, 0], torch.tensor([0.5, 1 / 3]), atol=1e-3)  # x of column 3 of 5, y of row 2 of 4
    assert torch.allclose(points[0, 1], torch.zeros(2), atol=1e-6)  # keypoint 1 attends evenly: the map's centre


def blob_videos(n: int, seed: int):
    """Feature maps where a blob in channel 0 travels right, further in better videos; the
    other channels are a per-video random 'distractor' pattern that does not move."""
    rng = np.random.default_rng(seed)
    C, h, w = MAP
    quality = rng.uniform(0, 1, n)
    feats = {}
    for i in range(n):
        T = int(rng.integers(6, 10))
        video = np.tile(rng.normal(0, 1, MAP), (T, 1, 1, 1))
        video[:, 0] = 0.0
        for t, x in enumerate(np.linspace(0, (w - 1) * quality[i], T)):
            column = int(round(x))
            video[t, 0, 1 + t % 2, column] = 3.0
        feats[f"b{i:03d}"] = torch.tensor(video.reshape(T, -1), dtype=torch.float32)
    return feats, {f"b{i:03d}": float(q) for i, q in enumerate(quality)}


@pytest.mark.parametrize("method", ["rapl", "rlhf"])
def test_keypoint_rewards_learn_where_the_blob_went(method):
    feats, quality = blob_videos(60, seed=0)
    held_feats, held_quality = blob_videos(30, seed=1)
    labels = triplet_labels(quality, 120, seed=0)
    torch.manual_seed(0)
    model = make_reward(keypoint_config(method))
    model.demos = [feats[t] for t in preferred_ids(labels, 3)]
    train_reward(model, feats, labels, TrainConfig(lr=1e-2, max_epochs=40, patience=10), progress=False)
    assert held_out_rho(model, held_feats, held_quality) > 0.7


def test_keypoints_need_a_feature_map(tmp_path):
    with pytest.raises(RobalignError, match="keypoints=4 reads places off a feature map: it needs features=spatial"):
        make_reward(RewardConfig(method="rapl", keypoints=4))
    with pytest.raises(RobalignError, match="keypoints=-1 is not allowed"):
        make_reward(RewardConfig(method="rapl", keypoints=-1))
    model = make_reward(keypoint_config("rapl"))
    feats, _ = blob_videos(3, seed=2)
    model.demos = [feats["b000"]]
    model.save_pretrained(tmp_path / "kp")
    loaded = load_reward(tmp_path / "kp")
    assert loaded.cfg.feature_shape == list(MAP) and loaded.cfg.keypoints == 4
    traj = fake_trajectory(len(feats["b001"]))
    assert np.allclose(loaded.reward(traj, feats["b001"]), model.reward(traj, feats["b001"]))


def test_ties_pull_rewards_together():
    feats, quality = synthetic_features(20, seed=3)
    ids = sorted(feats)
    labels = [((ids[i], ids[i + 1]), 0.5) for i in range(0, 18, 2)] * 4
    model = make_reward(small_config("rlhf"))
    train_reward(model, feats, labels, TrainConfig(lr=3e-3, max_epochs=40, val_fraction=0), progress=False)
    gaps = [abs(model.reward(fake_trajectory(len(feats[a])), feats[a]).sum()
                - model.reward(fake_trajectory(len(feats[b])), feats[b]).sum()) for (a, b), _ in labels[:9]]
    assert np.mean(gaps) < 0.1


def test_per_step_reward_sums_to_trajectory_reward_with_stride():
    cfg = RewardConfig(method="rlhf", feature_dim=F_DIM, hidden_dim=0, frame_stride=3)
    model = make_reward(cfg)
    feats = torch.randn(4, F_DIM)  # frames 0, 3, 6, 9 of a 10-step trajectory
    per_step = model.reward(fake_trajectory(10), feats)
    with torch.no_grad():
        per_frame = model.step_rewards(feats[None], torch.ones(1, 4, dtype=torch.bool))[0].numpy()
    assert per_step.shape == (10,)
    assert per_step.sum() == pytest.approx(per_frame.sum(), rel=1e-5)
    assert per_step[9] == pytest.approx(per_frame[3], rel=1e-5)  # the last frame stands for one step


def test_ot_reward_scores_a_prefix_against_the_demos_prefixes():
    """prefix=True is the same OT reward against each demo cut to the video's length (a
    shorter demo whole); a demo's own beginning then matches it better than the whole demo
    it has not finished; a per-frame reward (rlhf) scores a prefix the same either way."""
    feats, _ = synthetic_features(6, seed=5)
    torch.manual_seed(0)
    model = make_reward(small_config("rapl"))
    model.demos = [feats["t000"], feats["t001"][:5]]  # 8+ frames and 5 frames
    video = feats["t000"][:6]
    traj = fake_trajectory(6)
    as_prefix = model.reward(traj, video, prefix=True)
    cut = make_reward(small_config("rapl"))
    cut.load_state_dict(model.state_dict())
    cut.demos = [feats["t000"][:6], feats["t001"][:5]]
    assert np.allclose(as_prefix, cut.reward(traj, video), atol=1e-6)
    whole = model.reward(traj, video)
    # its own first 6 frames cost less than the whole demo, whose later frames it has not reached
    assert -as_prefix.sum() < 0.85 * -whole.sum(), (as_prefix.sum(), whole.sum())
    # batched rows get their own cut: the same figures as one by one
    x, mask = pad_sequences([video, feats["t002"][:4]])
    with torch.no_grad():
        batched = model.step_rewards(x, mask, prefix=True)
    assert np.allclose(batched[0].numpy(), as_prefix, atol=1e-6)
    assert np.allclose(batched[1, :4].numpy(), model.reward(fake_trajectory(4), feats["t002"][:4], prefix=True),
                       atol=1e-6)
    rlhf = make_reward(small_config("rlhf"))
    assert np.array_equal(rlhf.reward(traj, video, prefix=True), rlhf.reward(traj, video))


def test_checkpoint_round_trip_and_refusals(tmp_path):
    feats, quality = synthetic_features(10, seed=4)
    model = make_reward(small_config("rapl"))
    model.demos = [feats["t000"], feats["t001"]]
    model.cfg.encoder_sha = "0" * 64
    model.save_pretrained(tmp_path / "r")
    loaded = load_reward(tmp_path / "r")
    traj = fake_trajectory(len(feats["t005"]))
    assert np.allclose(loaded.reward(traj, feats["t005"]), model.reward(traj, feats["t005"]))
    assert not list(tmp_path.glob("r/*.pkl")) and sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "reward.safetensors", "reward_config.json"]
    # a backbone whose weights differ from the ones the head was trained on
    with pytest.raises(RobalignError, match="trained on efficientnet-lite0 weights with sha256 000000000000"):
        loaded.backbone
    # partial, truncated, tampered
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "reward_config.json").write_text((tmp_path / "r" / "reward_config.json").read_text())
    with pytest.raises(RobalignError, match="reward.safetensors is missing"):
        load_reward(tmp_path / "partial")
    data = (tmp_path / "r" / "reward.safetensors").read_bytes()
    (tmp_path / "r" / "reward.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(RobalignError, match="unreadable or truncated"):
        load_reward(tmp_path / "r")
    cfg = json.loads((tmp_path / "r" / "reward_config.json").read_text())
    model.save_pretrained(tmp_path / "t")
    (tmp_path / "t" / "reward_config.json").write_text(json.dumps({**cfg, "embed_dim": 9}))
    with pytest.raises(RobalignError, match="do not fit a rapl reward"):
        load_reward(tmp_path / "t")
    (tmp_path / "t" / "reward_config.json").write_text(json.dumps({**cfg, "colour": "red"}))
    with pytest.raises(RobalignError, match="not a valid reward config"):
        load_reward(tmp_path / "t")


def test_unknown_method_and_bad_settings():
    with pytest.raises(RobalignError, match="unknown reward method 'rapll'; valid choices: imagenet-ot, oracle, rapl, rlhf"):
        make_reward(RewardConfig(method="rapll"))
    with pytest.raises(RobalignError, match="frame_stride=0"):
        make_reward(RewardConfig(method="rapl", frame_stride=0))
    with pytest.raises(RobalignError, match="oracle reward needs objective"):
        make_reward(RewardConfig(method="oracle"))
    with pytest.raises(RobalignError, match="val_fraction"):
        TrainConfig(val_fraction=1.5)


# ---- labels and videos ---------------------------------------------------------------------
def test_bad_preference_input(tmp_path, make_trajectory):
    from robalign.preferences import PreferenceStore

    with pytest.raises(RobalignError, match="no preferences to learn from"):
        check_labels([])
    with pytest.raises(RobalignError, match="references trajectory 'ghost'"):
        check_labels([(("a", "ghost"), 1.0)], known={"a", "b"})
    with PreferenceStore(tmp_path / "s") as store:
        ok = store.add_trajectory(make_trajectory(1))
        with pytest.raises(RobalignError, match="references trajectory 'f00d'"):
            load_videos(store, [ok, "f00d"])
        small = make_trajectory(2)
        small.frames = small.frames[:, :32, :32].copy()
        other = store.add_trajectory(small)
        with pytest.raises(RobalignError, match="all videos must have one size"):
            load_videos(store, [ok, other])
        no_video = store.add_trajectory(make_trajectory(3, frames=False))
        with pytest.raises(RobalignError, match="has no video"):
            load_videos(store, [no_video])


def test_evaluation_metrics_on_a_known_reward():
    feats, quality = synthetic_features(12, seed=5, distract=0.0)
    model = make_reward(RewardConfig(method="rlhf", feature_dim=F_DIM, hidden_dim=0, frame_stride=1))
    with torch.no_grad():  # reward = feature 0 per frame: sums rise with quality
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.weight[0, 0] = 1.0
    trajs = {t: fake_trajectory(len(f)) for t, f in feats.items()}
    for t in trajs:
        trajs[t].info = {"quality": np.full(len(feats[t]), quality[t], np.float32)}
    ids = sorted(feats, key=lambda t: -quality[t])
    right = [((ids[0], ids[5]), 1.0), ((ids[3], ids[1]), 0.0)]
    wrong = [((ids[6], ids[2]), 1.0)]
    m = evaluate(model, trajs, right + wrong + [((ids[0], ids[1]), 0.5)],
                 lambda t: float(t.info["quality"][0]), feats)
    assert m["accuracy"] == pytest.approx(2 / 3) and m["comparisons"] == 3
    # the relative rise grows with quality, the length differs: rho high but not computed from a constant
    assert m["spearman_traj"] > 0.7 and m["spearman_step"] is None


def test_linear_probe_reads_a_linear_objective_and_not_noise():
    rng = np.random.default_rng(0)
    for F in (40, 600):  # fewer and more features than training videos (the two ridge forms)
        x = rng.normal(size=(320, F))
        signal = x[:, :3] @ np.array([1.0, -0.5, 0.25])
        y = signal + 0.1 * rng.normal(size=320)
        probe = LinearProbe(x[:120], y[:120])
        assert probe.rho(x[120:], y[120:]) > (0.9 if F == 40 else 0.35)  # 600 features, 120 videos: ridge shrinks
        # the ridge strength is picked on the training videos' folds alone
        assert probe.alpha in probe.cv_rho and probe.cv_rho[probe.alpha] == max(v for v in probe.cv_rho.values())
        unrelated = rng.normal(size=320)
        assert abs(LinearProbe(x[:120], unrelated[:120]).rho(x[120:], unrelated[120:])) < 0.25
    with pytest.raises(RobalignError, match="E >= 10"):
        LinearProbe(x[:6], y[:6])


def test_trajectory_summary_is_the_mean_of_first_frame_relative_features():
    feats = torch.tensor([[1.0, 2.0], [3.0, 2.0], [5.0, 5.0]])
    np.testing.assert_allclose(trajectory_summary(feats), [2.0, 1.0])
    np.testing.assert_allclose(trajectory_summary(feats, relative=False), [3.0, 3.0])
