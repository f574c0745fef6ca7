"""The gymnasium side of every task: observations, actions, seeding, privileged info.

Glossary: H x W image (96 x 96 default), S = 16 proprioception values (eef position 3,
eef quaternion xyzw 4, gripper fingers 2, arm joints 7), E task-object state (task-specific),
A = 7 actions (OSC_POSE delta position 3 and rotation 3 in the robot base frame, each in
[-1, 1] scaled by robosuite to 5 cm and 0.5 rad, then the gripper: -1 open, +1 close).

A task subclasses FrankaTaskEnv and fills in the hooks under "task hooks": which objects
stand on the table, where they go on reset, what counts as success, what a simulated person
may look at (privileged info), and the plans its scripted expert follows in each mode.
"""

from __future__ import annotations

import string
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from robalign.errors import RobalignError, UnknownNameError

from .scene import CONTROL_HZ, TABLE_TOP_Z, Camera, TaskScene, geoms_under, robot_meshes

STATE_SIZE = 16
ACTION_SIZE = 7
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-"


class SimState(NamedTuple):
    """A saved moment of one episode (FrankaTaskEnv.save_state): restore it into the same env only."""

    data: mujoco.MjData
    body_pos: np.ndarray
    steps: int
    clock: tuple
    parts: list


def _numeric_fields(obj) -> dict:
    """Copies of an object's array and number attributes (a controller's goals, a gripper's action)."""
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(obj).items()
            if isinstance(v, (np.ndarray, np.generic, float, int, bool))}


# train: the wordings demos use; held-out: the task's HELD_OUT_PARAPHRASES only
INSTRUCTION_SETS = ("train", "held-out")

class FrankaTaskEnv(gym.Env):
    """A Franka Panda task in robosuite behind the gymnasium API.

    Args:
        distractors: random table colour, three random-colour distractor objects (one
            moving) and small camera jitter every episode.
        camera: render the agentview image into observations. False skips rendering
            (about 5x faster) for rollouts that only need state.
        image_size: side of the square agentview image, pixels.
        wrist_camera: also render the eye-in-hand camera as "wrist_image".
        max_steps: episode length limit (truncation); default per task.
        render_mode: None or "rgb_array" (render() returns a 256 px agentview frame).
        instructions: "train" (the wordings demos use) or "held-out" (the task's
            HELD_OUT_PARAPHRASES only).
        layout: one of the task's LAYOUTS; "default" is what demos are made on, the others
            vary the scene to test a policy where something happens more often (e.g.
            pick-place-lang's "dense": cubes closer together, so contacts happen).

    Cameras draw the robot as $ROBALIGN_ROBOT_MESHES says (robalign.envs.scene): its
    collision hulls by default (3.8x faster software rendering), `visual` for robosuite's
    full meshes. Every recorded trajectory names the look in its provenance.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    name: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]
    objectives: ClassVar[tuple[str, ...]]
    env_state_size: ClassVar[int]
    # What environment_state holds, object by object in order: (name, values, whether they
    # start with the object's xyz position in the world frame[, n]). The sizes add up to
    # env_state_size. A policy may read one token per object with its position relative to
    # the gripper (vla's object tokens), which generalises across layouts where absolute
    # positions invite replaying a memorised path. An optional fourth entry n > 0 says the
    # values after the xyz are sin and cos of n x the object's yaw (an object that looks the
    # same every 1/n turn), so a policy can read its heading relative to the gripper's too.
    env_state_objects: ClassVar[tuple[tuple, ...]]
    default_max_steps: ClassVar[int] = 200
    # Raised whenever a task's layout or physics changes what its episodes look like, so
    # caches of episodes (benchmarks' reward pools) keyed by it are rebuilt, not reused.
    revision: ClassVar[int] = 1
    # Instruction wordings never used in demos, for `instructions="held-out"` (evaluation of
    # language generalisation); tasks with a fixed instruction keep none.
    HELD_OUT_PARAPHRASES: ClassVar[tuple[str, ...]] = ()
    # Scene layouts place_objects knows; every task has "default" (what demos are made on).
    LAYOUTS: ClassVar[tuple[str, ...]] = ("default",)

    @classmethod
    def check_layout(cls, layout: str) -> None:
        """Refuse a layout this task does not have."""
        if layout not in cls.LAYOUTS:
            raise UnknownNameError(f"{cls.name} layout", layout, list(cls.LAYOUTS))

    def __init__(
        self,
        distractors: bool = False,
        camera: bool = True,
        image_size: int = 96,
        wrist_camera: bool = False,
        max_steps: int | None = None,
        render_mode: str | None = None,
        instructions: str = "train",
        layout: str = "default",
    ):
        if not isinstance(image_size, int) or not 16 <= image_size <= 1024:
            raise RobalignError(f"image_size must be an int in [16, 1024]; got {image_size!r}")
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps <= 0):
            raise RobalignError(f"max_steps must be a positive int or None; got {max_steps!r}")
        if render_mode not in (None, "rgb_array"):
            raise UnknownNameError("render_mode", render_mode, ["rgb_array"])
        if instructions not in INSTRUCTION_SETS:
            raise UnknownNameError("instructions", instructions, list(INSTRUCTION_SETS))
        if instructions == "held-out" and not self.HELD_OUT_PARAPHRASES:
            raise RobalignError(f"{self.name} keeps no held-out instructions; instructions=held-out is for "
                                f"tasks whose wording varies (pick-place-lang)")
        self.check_layout(layout)
        self.instructions, self.layout = instructions, layout
        self.distractors, self.camera, self.image_size = bool(distractors), bool(camera), image_size
        self.wrist_camera, self.render_mode = bool(wrist_camera), render_mode
        self.max_steps = max_steps or self.default_max_steps
        self.robot_meshes = robot_meshes()  # how cameras draw the robot ($ROBALIGN_ROBOT_MESHES)
        TaskScene(self, distractors=self.distractors)  # sets self.scene and calls on_model_loaded
        self._cameras: dict[str, Camera] = {}
        self._robot = self.scene.robots[0]
        m = self.scene.sim.model._model
        self._eef_site = self._robot.eef_site_id["right"]
        self._gripper_qpos = np.array(self._robot._ref_gripper_joint_pos_indexes["right"])
        self._arm_qpos = np.array(self._robot._ref_joint_pos_indexes)
        self._gripper_geoms = geoms_under(m, self._robot.gripper["right"].root_body)

        obs = {
            "state": spaces.Box(-np.inf, np.inf, (STATE_SIZE,), np.float32),
            "environment_state": spaces.Box(-np.inf, np.inf, (self.env_state_size,), np.float32),
            "instruction": spaces.Text(max_length=200, min_length=1, charset=INSTRUCTION_CHARSET),
        }
        if self.camera:
            obs["image"] = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        if self.wrist_camera:
            obs["wrist_image"] = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_SIZE,), np.float32)
        self.instruction = ""
        self.steps = 0

    # ---- task hooks ----------------------------------------------------------------------
    def build_objects(self) -> list:
        """robosuite MujocoObjects standing on the table."""
        raise NotImplementedError

    def on_model_loaded(self) -> None:
        """Look up body / geom ids. Runs when the model exists and again on every reset
        (robosuite re-runs its reference setup), so keep it to cheap lookups."""

    def place_objects(self, rng: np.random.Generator) -> None:
        """Put the task's objects at random initial poses (called inside the scene's reset)."""
        raise NotImplementedError

    def make_instruction(self, rng: np.random.Generator) -> str:
        raise NotImplementedError

    def task_state(self) -> np.ndarray:
        """(E,) what a low-dim state policy sees of the task objects."""
        raise NotImplementedError

    def privileged(self) -> dict[str, Any]:
        """Per-step values for simulated people and metrics: each a float or a small array."""
        raise NotImplementedError

    def is_success(self) -> bool:
        raise NotImplementedError

    @staticmethod
    def behaviour_mode(trajectory) -> str | None:
        """Which of `modes` a recorded trajectory shows, read from its privileged info (for
        evaluation's mode shares); None when the task does not tell its modes apart."""
        return None

    def plan(self, mode: str, rng: np.random.Generator) -> list:
        """The scripted expert's waypoints for one mode (see robalign.envs.experts)."""
        raise NotImplementedError

    # ---- gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # robosuite draws the arm's initial joint noise and calls place_objects with its rng
        self.scene.rng = np.random.default_rng(self.np_random.integers(2**63))
        self.scene.reset()
        self.appearance = self.scene.randomize_appearance(self.np_random)
        self.instruction = self.make_instruction(self.np_random)
        self.steps = 0
        self.scene.sim.forward()
        return self._observation(), self._info()

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_SIZE,):
            raise RobalignError(f"action must have shape ({ACTION_SIZE},); got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise RobalignError(f"action must be finite; got {action}")
        self.steps += 1
        self.scene.move_distractors(self.steps)
        self.scene.step(np.clip(action, -1.0, 1.0))
        info = self._info()
        terminated = bool(info["is_success"])
        truncated = self.steps >= self.max_steps and not terminated
        return self._observation(), 0.0, terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._camera("render", 256, "agentview").render()

    def close(self):
        for cam in self._cameras.values():
            cam.close()
        self._cameras.clear()
        if getattr(self, "scene", None) is not None:
            self.scene.close()
            self.scene = None

    # ---- common readings -----------------------------------------------------------------
    @property
    def model(self) -> mujoco.MjModel:
        return self.scene.sim.model._model

    @property
    def data(self) -> mujoco.MjData:
        return self.scene.sim.data._data

    @property
    def table_top_z(self) -> float:
        return TABLE_TOP_Z

    def eef_pos(self) -> np.ndarray:
        return self.data.site_xpos[self._eef_site].copy()

    def eef_mat(self) -> np.ndarray:
        return self.data.site_xmat[self._eef_site].reshape(3, 3).copy()

    def gripper_opening(self) -> float:
        """Distance between the two fingers' joint positions, metres (about 0.08 open)."""
        q = self.data.qpos[self._gripper_qpos]
        return float(q[0] - q[1])

    def proprioception(self) -> np.ndarray:
        quat_wxyz = np.empty(4)
        mujoco.mju_mat2Quat(quat_wxyz, self.data.site_xmat[self._eef_site])
        return np.concatenate(
            [self.eef_pos(), quat_wxyz[[1, 2, 3, 0]], self.data.qpos[self._gripper_qpos], self.data.qpos[self._arm_qpos]]
        ).astype(np.float32)

    def gripper_distance(self, geoms: list[int], limit: float = 0.5) -> float:
        """Smallest distance between any gripper geom and any of `geoms`, metres (<= 0 in contact)."""
        best = limit
        for g1 in self._gripper_geoms:
            for g2 in geoms:
                best = min(best, mujoco.mj_geomDistance(self.model, self.data, g1, g2, limit, None))
        return float(best)

    def touching(self, geoms_a: list[int], geoms_b: list[int]) -> bool:
        a, b = set(geoms_a), set(geoms_b)
        for c in self.data.contact[: self.data.ncon]:
            if (c.geom1 in a and c.geom2 in b) or (c.geom1 in b and c.geom2 in a):
                return True
        return False

    def set_free_body(self, joint_name: str, pos, quat_wxyz=(1, 0, 0, 0)) -> None:
        self.scene.sim.data.set_joint_qpos(joint_name, np.concatenate([pos, quat_wxyz]))

    def geoms_of(self, body_name: str, collision_only: bool = False) -> list[int]:
        """Geom ids in the subtree under `body_name`; `collision_only` drops visual-only ones."""
        geoms = geoms_under(self.model, body_name)
        if collision_only:
            geoms = [g for g in geoms if self.model.geom_contype[g] or self.model.geom_conaffinity[g]]
        return geoms

    @property
    def gripper_geoms(self) -> list[int]:
        return list(self._gripper_geoms)

    def body_id(self, body_name: str) -> int:
        body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, body_name)
        if body < 0:
            raise KeyError(f"no body named {body_name!r}")
        return body

    # ---- lookahead ------------------------------------------------------------------------
    def save_state(self) -> "SimState":
        """Everything the next steps depend on, to try actions and come back (best-of-n's
        lookahead): MuJoCo's whole mjData (derived quantities too: robosuite observes
        kinematics one substep stale, so re-deriving them would change the next
        observation), the moving distractors' poses, robosuite's clock and the numeric state
        of the arm and gripper controllers (goals, the gripper's current action)."""
        data = mujoco.MjData(self.model)
        mujoco.mj_copyData(data, self.model, self.data)
        return SimState(data, self.model.body_pos.copy(), self.steps,
                        (self.scene.timestep, self.scene.cur_time, self.scene.done),
                        [(obj, _numeric_fields(obj)) for obj in self._stateful_parts()])

    def restore_state(self, state: "SimState") -> None:
        """Return to a `save_state()` of this episode: the next steps equal those taken from it."""
        mujoco.mj_copyData(self.data, self.model, state.data)
        np.copyto(self.model.body_pos, state.body_pos)
        self.steps = state.steps
        self.scene.timestep, self.scene.cur_time, self.scene.done = state.clock
        for obj, fields in state.parts:
            for name, value in fields.items():
                setattr(obj, name, value.copy() if isinstance(value, np.ndarray) else value)

    def current_info(self) -> dict:
        """The info dict step() would return for the current state (a lookahead's first step)."""
        return self._info()

    def _stateful_parts(self) -> list:
        robot = self.scene.robots[0]
        return [robot, robot.composite_controller, *robot.composite_controller.part_controllers.values(),
                *robot.gripper.values()]

    def _camera(self, key: str, size: int, camera: str) -> Camera:
        if key not in self._cameras:
            self._cameras[key] = Camera(self.scene, size, camera)
        return self._cameras[key]

    def _observation(self) -> dict:
        obs = {
            "state": self.proprioception(),
            "environment_state": self.task_state().astype(np.float32),
            "instruction": self.instruction,
        }
        if self.camera:
            obs["image"] = self._camera("agentview", self.image_size, "agentview").render()
        if self.wrist_camera:
            obs["wrist_image"] = self._camera("wrist", self.image_size, "robot0_eye_in_hand").render()
        return obs

    def _info(self) -> dict:
        return {"is_success": bool(self.is_success()), "privileged": self.privileged(), "step": self.steps}
