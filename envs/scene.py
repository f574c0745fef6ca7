"""The robosuite side of every task: a Panda on a table with the task's objects.

One robosuite environment class serves every task. The task supplies its objects and
places them on reset; this class owns what is common: the arm with the OSC_POSE
controller, the table, the optional distractors (table colour, three random-colour
objects, one of them moving, and camera jitter), and offscreen rendering with shadows
and reflections off (they cost about 10x on software rendering).
"""

from __future__ import annotations

import atexit
import functools
import importlib
import importlib.util
import logging
import os
import weakref

# robosuite logs a page of warnings on import (private macros file, optional robots) and
# on every env (controller parts a Panda lacks); a filter survives its own setLevel calls.
logging.getLogger("robosuite_logs").addFilter(lambda record: record.levelno >= logging.ERROR)

import mujoco
import numpy as np
from robosuite.controllers import load_composite_controller_config
from robosuite.environments.manipulation.manipulation_env import ManipulationEnv
from robosuite.models.arenas import TableArena
from robosuite.models.objects import BallObject, BoxObject, CylinderObject
from robosuite.models.tasks import ManipulationTask

from robalign.errors import UnknownNameError

TABLE_SIZE = (0.8, 0.8, 0.05)
TABLE_TOP_Z = 0.8
CONTROL_HZ = 20
CAMERA = "agentview"
# How cameras draw the robot (arm, gripper and mount), chosen per machine like MUJOCO_GL:
#   collision  its collision hulls, 15k faces: 96 px frames in 6.5 ms on Mesa llvmpipe
#   visual     robosuite's visual meshes, 168k faces: 25 ms there; cheap on a GPU
# Both are physically the same scene; only pixels differ, so a reward or an image policy
# must be used with the look it was trained on (trajectories record it in provenance).
ROBOT_MESHES_VAR = "ROBALIGN_ROBOT_MESHES"
ROBOT_MESHES = ("collision", "visual")
HULL_RGBA = np.array([0.88, 0.88, 0.88, 1.0])  # the Panda's white
MOUNT_RGBA = np.array([0.2, 0.2, 0.2, 1.0])
HIDDEN_GROUP = 3  # geom group no camera draws (cameras draw groups 1 and 2; 0 holds collision geoms)
# Distractors stand at the table's far corners, out of every expert's path, and are
# visual only, so they change what a camera sees and nothing the arm feels.
DISTRACTOR_SPOTS = np.array([[0.27, 0.17], [0.27, -0.17], [-0.15, -0.21]])


class TaskScene(ManipulationEnv):
    """robosuite environment that delegates objects, placement and success to a task.

    `task` is the gymnasium env (robalign.envs.base.FrankaTaskEnv) that owns this scene;
    it provides `build_objects()`, `place_objects(rng)` and `is_success()`.
    """

    def __init__(self, task, distractors: bool):
        self._task = task
        task.scene = self  # robosuite resets inside its __init__, and the task's hooks read the scene
        self._with_distractors = distractors
        super().__init__(
            robots="Panda",
            controller_configs=load_composite_controller_config(controller="BASIC", robot="Panda"),
            gripper_types="default",
            initialization_noise={"magnitude": 0.02, "type": "gaussian"},
            use_camera_obs=False,
            has_renderer=False,
            has_offscreen_renderer=False,
            control_freq=CONTROL_HZ,
            horizon=100_000,
            ignore_done=True,
            hard_reset=False,  # rebuilding the model every reset costs ~1 s; we edit it in place
        )

    # ---- model ---------------------------------------------------------------------------
    def _load_model(self):
        super()._load_model()
        robot = self.robots[0].robot_model
        robot.set_base_xpos(robot.base_xpos_offset["table"](TABLE_SIZE[0]))
        arena = TableArena(table_full_size=TABLE_SIZE, table_offset=(0, 0, TABLE_TOP_Z))
        arena.set_origin([0, 0, 0])
        objects = list(self._task.build_objects())
        if self._with_distractors:
            objects += _distractor_objects()
        self.model = ManipulationTask(mujoco_arena=arena, mujoco_robots=[robot], mujoco_objects=objects)

    def _setup_references(self):
        super()._setup_references()
        m = self.sim.model._model
        if getattr(self, "_looked", None) is not m:  # robosuite re-runs this every reset; the model stays
            _set_robot_look(m, self.robots[0].robot_model.root_body, self._task.robot_meshes)
            self._looked = m
        self.table_geom_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "table_visual")
        self.camera_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA)
        if not hasattr(self, "camera_home"):  # robosuite re-runs this every reset; keep the first
            self.camera_home = (m.cam_pos[self.camera_id].copy(), m.cam_quat[self.camera_id].copy())
        self.distractor_body_ids = [
            mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"distractor{i}_main") for i in range(3)
        ] if self._with_distractors else []
        self._task.on_model_loaded()

    def _reset_internal(self):
        super()._reset_internal()
        self._task.place_objects(self.rng)

    # ---- distractors ---------------------------------------------------------------------
    def randomize_appearance(self, rng: np.random.Generator) -> dict:
        """Per-episode table colour, distractor colours and poses, camera jitter."""
        m = self.sim.model._model
        cam_pos, cam_quat = self.camera_home
        if not self._with_distractors:
            m.cam_pos[self.camera_id], m.cam_quat[self.camera_id] = cam_pos, cam_quat
            return {}
        table_rgb = rng.uniform(0.1, 0.9, 3)
        m.geom_matid[self.table_geom_id] = -1  # a material would override the colour
        m.geom_rgba[self.table_geom_id] = [*table_rgb, 1.0]
        for body_id in self.distractor_body_ids:
            for g in range(m.body_geomadr[body_id], m.body_geomadr[body_id] + m.body_geomnum[body_id]):
                m.geom_rgba[g] = [*rng.uniform(0, 1, 3), 1.0]
        self._distractor_base = DISTRACTOR_SPOTS + rng.uniform(-0.03, 0.03, DISTRACTOR_SPOTS.shape)
        self._distractor_phase = rng.uniform(0, 2 * np.pi)
        self.move_distractors(0)
        m.cam_pos[self.camera_id] = cam_pos + rng.uniform(-0.015, 0.015, 3)
        tilt = rng.uniform(-0.02, 0.02, 3)  # small-angle rotation, radians
        q = np.empty(4)
        mujoco.mju_mulQuat(q, cam_quat, np.array([1.0, *(tilt / 2)]))
        m.cam_quat[self.camera_id] = q / np.linalg.norm(q)
        return {"table_rgb": table_rgb}

    def move_distractors(self, step: int) -> None:
        """The first distractor circles its spot (radius 4 cm, period 3 s); the others stand."""
        if not self._with_distractors:
            return
        m = self.sim.model._model
        angle = self._distractor_phase + 2 * np.pi * step / (3 * CONTROL_HZ)
        for i, body_id in enumerate(self.distractor_body_ids):
            xy = self._distractor_base[i] + (0.04 * np.array([np.cos(angle), np.sin(angle)]) if i == 0 else 0)
            m.body_pos[body_id, :2] = xy
            m.body_pos[body_id, 2] = TABLE_TOP_Z + 0.03

    # ---- task hooks robosuite calls ------------------------------------------------------
    def reward(self, action=None):
        return 0.0  # rewards are learned from people, not hand-shaped here

    def _check_success(self):
        return self._task.is_success()


def robot_meshes() -> str:
    """How cameras draw the robot on this machine: $ROBALIGN_ROBOT_MESHES, `collision` by default."""
    look = os.environ.get(ROBOT_MESHES_VAR, "collision").strip() or "collision"
    if look not in ROBOT_MESHES:
        raise UnknownNameError(f"{ROBOT_MESHES_VAR} (how cameras draw the robot)", look, list(ROBOT_MESHES))
    return look


def geoms_under(model: mujoco.MjModel, root_body: str) -> list[int]:
    """Every geom in the subtree under `root_body`."""
    root = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, root_body)
    if root < 0:
        raise KeyError(f"no body named {root_body!r}")
    bodies = {root}
    for b in range(root + 1, model.nbody):  # MuJoCo numbers a body after its parent
        if model.body_parentid[b] in bodies:
            bodies.add(b)
    return [g for g in range(model.ngeom) if model.geom_bodyid[g] in bodies]


def _set_robot_look(m: mujoco.MjModel, robot_root: str, look: str) -> None:
    """With `collision`, hide the robot's visual meshes and draw its collision geoms instead
    (in the Panda's colours). Only geom_group and geom_rgba change: nothing physics reads."""
    if look == "visual":
        return
    for g in geoms_under(m, robot_root):
        if m.geom_group[g] == 1 and m.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:
            m.geom_group[g] = HIDDEN_GROUP
        elif m.geom_group[g] == 0:
            body = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, m.geom_bodyid[g]) or ""
            m.geom_group[g], m.geom_matid[g] = 1, -1
            m.geom_rgba[g] = MOUNT_RGBA if "mount" in body else HULL_RGBA


def _distractor_objects():
    kw = dict(obj_type="visual", joints=None, rgba=[0.5, 0.5, 0.5, 1])
    return [
        BallObject(name="distractor0", size=[0.03], **kw),
        BoxObject(name="distractor1", size=[0.025, 0.025, 0.03], **kw),
        CylinderObject(name="distractor2", size=[0.025, 0.03], **kw),
    ]


_OPEN_CAMERAS: "weakref.WeakSet[Camera]" = weakref.WeakSet()


def _close_open_cameras() -> None:
    # An EGL context freed after mujoco.egl's own exit hook terminated the display prints
    # tracebacks. atexit runs hooks last-in first-out, so this one is registered after the
    # first renderer exists (which is when mujoco.egl registers its hook).
    for camera in list(_OPEN_CAMERAS):
        camera.close()


@functools.lru_cache(maxsize=1)
def _load_triton_before_egl() -> None:
    """Import triton (when installed) before the first EGL context.

    Mesa's software EGL and triton both carry LLVM; loading triton's library after an EGL
    context exists segfaults the process. torch pulls triton in lazily (lerobot's dataset
    import does, through torchvision), so a process that renders and then trains would
    crash at that import; loading it first avoids the clash.
    """
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


class Camera:
    """Offscreen renderer for one camera of a scene, shadows and reflections off."""

    def __init__(self, scene: TaskScene, size: int, camera: str = CAMERA):
        self._scene, self._camera = scene, camera
        _load_triton_before_egl()
        self._renderer = mujoco.Renderer(scene.sim.model._model, size, size)
        if not _OPEN_CAMERAS:
            atexit.unregister(_close_open_cameras)
            atexit.register(_close_open_cameras)
        _OPEN_CAMERAS.add(self)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        # groups 1 and 2 only: group 0 holds the collision geoms, which MuJoCo's default
        # option also draws, over the visual meshes (the robot looked green and blue)
        self._option = mujoco.MjvOption()
        self._option.geomgroup[:] = [0, 1, 1, 0, 0, 0]

    def render(self) -> np.ndarray:
        """(H, W, 3) uint8, row 0 at the top."""
        self._renderer.update_scene(self._scene.sim.data._data, camera=self._camera, scene_option=self._option)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
