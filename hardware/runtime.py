"""The policy runtime: observations from the arm and cameras in, timed joint targets out.

    robalign deploy policy=runs/x/policy robot=sim duration=10 output_dir=runs/deploy-1

Each control step (dt = 1 / 20 Hz, the rate the policies were trained at):

1. observe: the arm's state (joint positions -> the policy's proprioception through the Panda's
   forward kinematics, in the tasks' world frame) and each camera's latest frame, each with its
   capture time; a frame older than max_frame_age is an error (StaleFrame), not an input;
2. every `replan_every` steps, run the policy on the last To observations: a chunk of K actions,
   stamped with the time of the observation it saw, so action k belongs to the slot
   [t_obs + k dt, t_obs + (k + 1) dt);
3. ``ActionSchedule`` picks this slot's action: the newest chunk's (``latest-only``) or a
   weighted mean over every chunk that covers it (``temporal-ensemble``, as ACT); slots that
   passed while the policy thought are dropped, never replayed;
4. ``DeltaToJoint`` turns the action into a joint target. The tasks' actions are OSC_POSE goal
   offsets from the measured pose (5 cm / 0.5 rad per unit); robosuite's controller moves the
   hand only part of the way in one 50 ms step (median 22%, measured on a reach-around expert
   episode), so the target is the measured pose plus action_gain x the offset, solved for the
   joints by damped least squares on the Panda's Jacobian;
5. the target goes to the backend, through its SafetyFilter, for time now + dt (``dry_run``:
   the runtime does all of the above and records it, but sends nothing).

Every deployment is recorded as a LeRobotDataset episode (``dataset/``: observations, the
images, the policy's actions, the joint targets sent) with ``deploy.json`` (timings, the
backend's events, whether it faulted). A backend FAULT ends the run with the episode saved and
flagged; a bad setting fails before the arm moves, leaving nothing behind.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from robalign.errors import RobalignError

# the tasks' robot base in their world frame (robosuite's Panda mount, envs/scene.py)
BASE_IN_WORLD = np.array([-0.56, 0.0, 0.912])
TCP_OFFSET = 0.097  # m from the hand body to the grip site along the hand's z
HAND_TO_SITE = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # grip site axes in the hand frame
POS_SCALE, ROT_SCALE = 0.05, 0.5  # m and rad per unit action (robalign.envs.experts)
OPEN_GRIPPER = np.array([0.0208, -0.0208])  # finger joint positions reported when no gripper is driven
MERGES = ("latest-only", "temporal-ensemble")
# share of an OSC_POSE offset the hand covers in one 50 ms step (median 0.22, 10-90%: 0.12-0.26,
# over the reach-around expert's steps; see docs/hardware.md)
ACTION_GAIN = 0.22


class ActionSchedule:
    """Chunks of actions on a timeline; `action_at(now)` is the action for now's slot.

    A chunk is (t0, actions (K, A)): action k covers [t0 + k dt, t0 + (k + 1) dt).
    """

    def __init__(self, dt: float, merge: str = "latest-only", ensemble_decay: float = 0.01):
        if merge not in MERGES:
            raise RobalignError(f"merge={merge!r}; allowed: {', '.join(MERGES)}")
        if not (math.isfinite(dt) and dt > 0):
            raise RobalignError(f"dt must be a finite number of seconds > 0; got {dt!r}")
        self.dt, self.merge, self.decay = float(dt), merge, float(ensemble_decay)
        self.chunks: collections.deque = collections.deque()

    def add(self, t0: float, actions: np.ndarray) -> None:
        actions = np.asarray(actions, np.float64)
        if actions.ndim != 2 or not np.all(np.isfinite(actions)):
            raise RobalignError(f"a chunk must be finite actions of shape (K, A); got {actions.shape}")
        if self.merge == "latest-only":
            self.chunks.clear()
        self.chunks.append((float(t0), actions))

    def action_at(self, now: float) -> np.ndarray | None:
        """(A,) this slot's action, or None when no chunk covers it (the policy fell behind)."""
        while self.chunks and now >= self.chunks[0][0] + len(self.chunks[0][1]) * self.dt:
            self.chunks.popleft()  # every slot of the oldest chunk has passed
        covering = []
        for t0, actions in self.chunks:
            k = math.floor((now - t0) / self.dt + 1e-9)
            if 0 <= k < len(actions):
                covering.append(actions[k])
        if not covering:
            return None
        if self.merge == "latest-only":
            return covering[-1]
        weights = np.exp(-self.decay * np.arange(len(covering)))  # ACT: the oldest prediction weighs most
        return (weights[:, None] * np.array(covering)).sum(0) / weights.sum()


class PandaKinematics:
    """Forward kinematics and the grip site's Jacobian of robosuite's Panda (base frame)."""

    def __init__(self):
        import mujoco

        from robalign.hardware.sim import panda_xml
        self.mj = mujoco
        self.model = mujoco.MjModel.from_xml_path(panda_xml())
        self.data = mujoco.MjData(self.model)
        self.hand = self.model.body("right_hand").id
        self.base = self.model.body("link0").id

    def tcp(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(3,) grip-site position and (3, 3) its axes, in the base frame, at joint positions q."""
        return self._solve(q, jacobian=False)[:2]

    def tcp_and_jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """tcp(q), and the (6, 7) grip-site linear and angular velocity per joint velocity, from one
        kinematics pass."""
        return self._solve(q, jacobian=True)

    def _solve(self, q: np.ndarray, jacobian: bool):
        d = self.data
        d.qpos[:7] = q
        self.mj.mj_kinematics(self.model, d)
        base_R = d.xmat[self.base].reshape(3, 3)
        hand_R = d.xmat[self.hand].reshape(3, 3)
        point = d.xpos[self.hand] + hand_R[:, 2] * TCP_OFFSET
        pos, rot = base_R.T @ (point - d.xpos[self.base]), base_R.T @ hand_R @ HAND_TO_SITE
        if not jacobian:
            return pos, rot, None
        self.mj.mj_comPos(self.model, d)
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        self.mj.mj_jac(self.model, d, jacp, jacr, point, self.hand)
        return pos, rot, np.vstack([base_R.T @ jacp[:, :7], base_R.T @ jacr[:, :7]])


class DeltaToJoint:
    """An end-effector delta action (dx, dy, dz, rx, ry, rz, gripper) -> a joint target."""

    def __init__(self, kinematics: PandaKinematics, gain: float = ACTION_GAIN, damping: float = 0.05,
                 iterations: int = 3):
        self.kin, self.gain, self.damping, self.iterations = kinematics, gain, damping, iterations

    def __call__(self, q: np.ndarray, action: np.ndarray) -> np.ndarray:
        """(7,) joint target that moves the grip site by gain x the action's offset from where q puts it."""
        action = np.asarray(action, np.float64)
        if action.shape[0] < 6:
            raise RobalignError(f"an end-effector delta action has at least 6 values (dx dy dz rx ry rz); "
                                f"got shape {action.shape}")
        pos0, rot0 = self.kin.tcp(q)
        goal_pos = pos0 + self.gain * np.clip(action[:3], -1, 1) * POS_SCALE
        goal_rot = _axis_angle_matrix(self.gain * np.clip(action[3:6], -1, 1) * ROT_SCALE) @ rot0
        target = np.array(q, np.float64)
        for _ in range(self.iterations):  # a few Gauss-Newton steps: exact for small deltas
            pos, rot, J = self.kin.tcp_and_jacobian(target)
            err = np.concatenate([goal_pos - pos, _rotation_error(goal_rot, rot)])
            target = target + J.T @ np.linalg.solve(J @ J.T + self.damping**2 * np.eye(6), err)
        return target


def _axis_angle_matrix(v: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _rotation_error(goal: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(3,) axis-angle vector rotating `current` onto `goal` (small-angle accurate)."""
    R = goal @ current.T
    return 0.5 * np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])


class ObservationAssembler:
    """One policy observation from the arm's joint positions and the cameras' latest frames."""

    def __init__(self, policy, kinematics: PandaKinematics, cameras: dict | None = None,
                 env_state=None, instruction: str | None = None, max_frame_age: float = 0.1):
        self.policy, self.kin, self.cameras = policy, kinematics, dict(cameras or {})
        self.env_state, self.instruction, self.max_frame_age = env_state, instruction, max_frame_age
        reads = set(policy.input_shapes()) | set(policy.text_inputs())
        missing = []
        if "image" in reads and "image" not in self.cameras:
            missing.append("image (give camera=SOURCE: a camera index, device, stream URL, video file or realsense)")
        if "environment_state" in reads and env_state is None:
            missing.append("environment_state (task-object poses: give env_state=module:function, e.g. your "
                           "pose tracker, or deploy a policy pretrained with use_env_state=false)")
        if "instruction" in reads and not instruction:
            missing.append("instruction (give instruction='...')")
        if missing:
            raise RobalignError(f"the {policy.name} policy reads inputs this runtime cannot make without help: "
                                + "; ".join(missing))
        if "state" in reads and policy.input_shapes()["state"] != (16,):
            raise RobalignError(f"the policy's state has shape {policy.input_shapes()['state']}; the runtime "
                                "builds the tasks' 16-value proprioception (grip site xyz, quaternion, fingers, joints)")

    def state(self, q: np.ndarray) -> np.ndarray:
        """(16,) the tasks' proprioception: grip site xyz (world), quaternion xyzw, fingers, joints."""
        import mujoco
        pos, rot = self.kin.tcp(q)
        quat_wxyz = np.empty(4)
        mujoco.mju_mat2Quat(quat_wxyz, np.ascontiguousarray(rot).reshape(-1))
        return np.concatenate([pos + BASE_IN_WORLD, quat_wxyz[[1, 2, 3, 0]], OPEN_GRIPPER, q]).astype(np.float32)

    def observe(self, q: np.ndarray, now: float) -> tuple[dict, dict]:
        """(observation for the policy, capture times) at time `now` on the monotonic clock."""
        obs, times = {}, {"state": now}
        reads = set(self.policy.input_shapes())
        if "state" in reads:
            obs["state"] = self.state(q)
        if "image" in reads:
            frame = self.cameras["image"].latest(self.max_frame_age, now)
            obs["image"] = _resize(frame.image, self.policy.input_shapes()["image"][:2])
            times["image"] = frame.t
        if "environment_state" in reads:
            obs["environment_state"] = np.asarray(self.env_state(), np.float32)
        if self.policy.text_inputs():
            obs["instruction"] = self.instruction
        return obs, times


def _resize(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2
    if image.shape[:2] == tuple(hw):
        return image
    return cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


@dataclasses.dataclass
class DeployConfig:
    """`robalign deploy` settings (configs/deploy.yaml comments each)."""

    policy: str
    robot: str = "sim"
    duration: float = 10.0
    output_dir: str | None = None
    dry_run: bool = False
    merge: str = "latest-only"
    replan_every: int | None = None  # steps between policy calls (None: the policy's n_action_steps)
    camera: str | None = None
    env_state: str | None = None
    instruction: str | None = None
    max_frame_age: float = 0.1
    action_gain: float = ACTION_GAIN
    fps: int = 20
    seed: int = 0
    robot_settings: dict = dataclasses.field(default_factory=dict)


def deploy(cfg: DeployConfig, progress: bool = True) -> dict:
    """Run the policy on the robot for cfg.duration seconds; returns deploy.json's content."""
    import torch

    from robalign.data.outputs import atomic_output_dir, default_output_dir
    from robalign.hardware.backend import FAULT, BackendFault, make_backend
    from robalign.hardware.cameras import CameraError, make_camera
    from robalign.hardware.safety import SafetyFault, SafetyViolation, TimedTarget
    from robalign.policies import load_policy

    if not (math.isfinite(cfg.duration) and cfg.duration > 0):
        raise RobalignError(f"duration must be a number of seconds > 0; got {cfg.duration!r}")
    if not 0 < cfg.action_gain <= 1:
        raise RobalignError(f"action_gain must be in (0, 1] (the share of an action's offset covered per step); "
                            f"got {cfg.action_gain!r}")
    if cfg.merge not in MERGES:
        raise RobalignError(f"merge={cfg.merge!r}; allowed: {', '.join(MERGES)}")
    policy = load_policy(cfg.policy).eval()
    env_state = _callable(cfg.env_state) if cfg.env_state else None
    dt = 1.0 / cfg.fps
    replan = cfg.replan_every or policy.n_action_steps
    kin = PandaKinematics()
    to_joint = DeltaToJoint(kin, cfg.action_gain)
    cameras = {}
    with atomic_output_dir(cfg.output_dir or default_output_dir("deploy")) as out:
        if cfg.camera:
            cameras["image"] = make_camera(cfg.camera)
        assembler = ObservationAssembler(policy, kin, cameras, env_state, cfg.instruction, cfg.max_frame_age)
        robot = make_backend(cfg.robot, **{"episode_dir": str(out / "controller"), **cfg.robot_settings})
        recorder = EpisodeRecorder(out / "dataset", cfg.fps, cfg.instruction or "deploy")
        for cam in cameras.values():
            cam.start()
        timings = {"inference_s": [], "obs_to_command_s": [], "dropped_slots": 0, "idle_slots": 0}
        fault, rejected = None, 0
        try:
            robot.connect()
            # one throw-away chunk before the clock starts: the first call pays one-off costs
            # (the diffusion U-Net's trace, 0.5 s here) that would otherwise leave slots idle
            t_warm = time.monotonic()
            warm = policy.actor(cfg.seed)
            with torch.no_grad():
                warm_obs = assembler.observe(robot.read_state().q, time.monotonic())[0]
                warm.observe(warm_obs)
                warm.plan(warm.window(warm_obs))
            timings["warmup_s"] = time.monotonic() - t_warm
            actor = policy.actor(cfg.seed)  # the observation history and the seeded sampling noise
            schedule = ActionSchedule(dt, cfg.merge)
            t_start = robot.clock()
            steps = int(round(cfg.duration / dt))
            for step in _progress(range(steps), progress, f"deploy {cfg.robot}"):
                now = robot.clock()
                s = robot.read_state()
                obs, times = assembler.observe(s.q, time.monotonic())
                actor.observe(obs)
                if step % replan == 0:
                    t_infer = time.monotonic()
                    with torch.no_grad():
                        chunk = actor.plan(actor.window(obs))[0].cpu().numpy()
                    timings["inference_s"].append(time.monotonic() - t_infer)
                    schedule.add(now, chunk)
                now = robot.clock()
                action = schedule.action_at(now)
                if action is None:
                    timings["idle_slots"] += 1
                    action = np.zeros(policy.config.action_dim)
                target = to_joint(s.q, action)  # from the measured pose, as OSC_POSE does
                sent = None
                if not cfg.dry_run:
                    try:
                        accepted = robot.submit(TimedTarget(now + dt, target))
                        sent = accepted[-1].q if accepted else None
                    except SafetyViolation:
                        rejected += 1  # the arm keeps its last safe target; the episode records it
                    timings["obs_to_command_s"].append(time.monotonic() - times.get("image", times["state"]))
                recorder.add(obs, action, target, sent, now - t_start)
                _wait_until(robot, t_start + (step + 1) * dt)
        except (BackendFault, SafetyFault, CameraError) as err:  # stop, keep the episode, flag it
            fault = f"{type(err).__name__}: {err}"
        finally:
            final_state = robot.state
            if final_state == FAULT and fault is None:
                fault = robot.read_state().fault
            robot.close()
            for cam in cameras.values():
                cam.close()
            recorder.finish()
        summary = {
            "policy": str(cfg.policy), "robot": cfg.robot, "dry_run": cfg.dry_run, "merge": cfg.merge,
            "steps": recorder.frames, "fault": fault, "flagged": fault is not None, "rejected_commands": rejected,
            "inference_ms_p50": _pct(timings["inference_s"], 50), "inference_ms_p99": _pct(timings["inference_s"], 99),
            "obs_to_command_ms_p50": _pct(timings["obs_to_command_s"], 50),
            "obs_to_command_ms_p99": _pct(timings["obs_to_command_s"], 99),
            "idle_slots": timings["idle_slots"], "warmup_ms": 1000 * timings.get("warmup_s", float("nan")),
            "events": getattr(robot, "events", []),
        }
        (out / "deploy.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


class EpisodeRecorder:
    """The deployment as one LeRobotDataset episode: what the policy saw, chose and what was sent."""

    def __init__(self, root: Path, fps: int, task: str):
        self.root, self.fps, self.task = root, fps, task
        self.dataset = None
        self.frames = 0

    def add(self, obs: dict, action: np.ndarray, target: np.ndarray, sent: np.ndarray | None, t: float) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
        frame = {"action": np.asarray(action, np.float32),
                 "joint_target": np.asarray(target, np.float32),
                 "joint_sent": np.asarray(sent if sent is not None else np.full(7, np.nan), np.float32),
                 "observation.state": obs["state"]}
        if "image" in obs:
            frame["observation.image"] = obs["image"]
        if "environment_state" in obs:
            frame["observation.environment_state"] = obs["environment_state"]
        if self.dataset is None:
            features = {k: {"dtype": "float32", "shape": v.shape, "names": None} for k, v in frame.items()
                        if k != "observation.image"}
            if "observation.image" in frame:
                features["observation.image"] = {"dtype": "video", "shape": frame["observation.image"].shape,
                                                 "names": ["height", "width", "channels"]}
            self.dataset = LeRobotDataset.create(repo_id="robalign/deploy", fps=self.fps, features=features,
                                                 root=self.root, robot_type="panda", use_videos=True)
        self.dataset.add_frame({**frame, "task": self.task})
        self.frames += 1

    def finish(self) -> None:
        if self.dataset is not None and self.frames:
            self.dataset.save_episode()
            self.dataset.finalize()


def _callable(spec: str):
    import importlib
    module, _, name = spec.partition(":")
    if not name:
        raise RobalignError(f"env_state={spec!r} must be module:function (a callable returning the task-object state)")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise RobalignError(f"env_state={spec!r}: cannot import it ({err})") from None


def _wait_until(robot, t: float) -> None:
    delay = t - robot.clock()
    if delay > 0:
        robot.wait(delay)


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else None


def _progress(iterable, enabled: bool, desc: str):
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, unit="step", disable=not enabled)
