"""reach-around: bring the gripper to a goal marker past a fragile vase standing between.

Modes: `left`, `right` (around the vase at a random lateral clearance) and `over` (above
it at a random height). Objectives: `clearance` (closest approach of the gripper to the
vase), `left-side` (which side it passed on), `path-length` (shorter is better).
"""

from __future__ import annotations

import numpy as np
from robosuite.models.objects import BallObject, CylinderObject

from ..base import FrankaTaskEnv
from ..experts import Waypoint
from ..objectives import objective, path_length
from ..registry import register_env

VASE_RADIUS, VASE_HALF_HEIGHT = 0.03, 0.09
GOAL_TOLERANCE = 0.03  # metres from the goal marker's centre to the gripper site
TOPPLED = np.deg2rad(20)  # vase tilt beyond this counts as knocked over
# The vase's centre sits this far in x (world, away from the robot) from the table's centre,
# +-2 cm. At -0.02 (until 2026-12-04) the arm started within the `clearance` threshold (5 cm)
# of the vase in 27-40% of seeds, so those episodes failed the objective before the policy
# acted (benchmarks/start_clearance.py); at +0.02 the closest start is 6.1 cm away.
VASE_X = 0.02
HAND_HALF_WIDTH = 0.11  # Panda hand, along the finger axis, metres
FINGERTIP_BELOW_SITE = 0.015  # fingertips reach this far below the gripper site


@register_env("reach-around")
class ReachAround(FrankaTaskEnv):
    name = "reach-around"
    modes = ("left", "right", "over")
    objectives = ("clearance", "left-side", "path-length")
    env_state_size = 10  # vase position 3, vase quaternion wxyz 4, goal position 3
    env_state_objects = (("vase", 7, True), ("goal", 3, True))
    default_max_steps = 160
    revision = 2  # 2026-12-04: the vase 4 cm further from the arm (VASE_X)

    def build_objects(self):
        self.vase = CylinderObject(
            name="vase", size=[VASE_RADIUS, VASE_HALF_HEIGHT], rgba=[0.85, 0.85, 0.95, 1], density=200,
            friction=[1.0, 0.005, 0.0001],
        )
        self.goal = BallObject(name="goal", size=[0.02], rgba=[0.1, 0.8, 0.2, 1], obj_type="visual", joints=None)
        return [self.vase, self.goal]

    def on_model_loaded(self):
        self._vase_body = self.body_id(self.vase.root_body)
        self._goal_body = self.body_id(self.goal.root_body)
        self._vase_geoms = self.geoms_of(self.vase.root_body, collision_only=True)

    def place_objects(self, rng):
        goal = np.array([0.17 + rng.uniform(-0.03, 0.03), rng.uniform(-0.05, 0.05), self.table_top_z + 0.07])
        vase = np.array([VASE_X + rng.uniform(-0.02, 0.02), 0.5 * goal[1] + rng.uniform(-0.02, 0.02),
                         self.table_top_z + VASE_HALF_HEIGHT])
        self.model.body_pos[self._goal_body] = goal
        self.set_free_body(self.vase.joints[0], vase)

    def make_instruction(self, rng):
        return "reach the green marker without touching the vase"

    # ---- readings ------------------------------------------------------------------------
    def goal_pos(self) -> np.ndarray:
        return self.model.body_pos[self._goal_body].copy()

    def vase_pos(self) -> np.ndarray:
        return self.data.xpos[self._vase_body].copy()

    def vase_tilt(self) -> float:
        """Angle between the vase's axis and vertical, radians."""
        return float(np.arccos(np.clip(self.data.xmat[self._vase_body][8], -1.0, 1.0)))

    def task_state(self):
        return np.concatenate([self.vase_pos(), self.data.xquat[self._vase_body], self.goal_pos()])

    def privileged(self):
        return {
            "eef_pos": self.eef_pos(),
            "vase_pos": self.vase_pos(),
            "goal_pos": self.goal_pos(),
            "vase_tilt": self.vase_tilt(),
            "vase_clearance": self.gripper_distance(self._vase_geoms),
        }

    def is_success(self):
        near = np.linalg.norm(self.eef_pos() - self.goal_pos()) < GOAL_TOLERANCE
        return bool(near and self.vase_tilt() < TOPPLED)

    @staticmethod
    def behaviour_mode(trajectory):
        """`over` if the gripper is above the vase's top where it passes the vase, else the
        side it passes on."""
        eef, vase = trajectory.info["eef_pos"], trajectory.info["vase_pos"]
        t = int(np.argmin(np.abs(eef[:, 0] - vase[:, 0])))
        if eef[t, 2] > vase[t, 2] + VASE_HALF_HEIGHT:
            return "over"
        return "left" if eef[t, 1] > vase[t, 1] else "right"

    # ---- scripted expert -----------------------------------------------------------------
    def plan(self, mode, rng):
        vase, goal, start = self.vase_pos(), self.goal_pos(), self.eef_pos()
        low = goal[2]
        # The Panda hand is about 20 cm wide along its finger axis (world y at yaw 0) and
        # 6 cm deep: side passes keep HAND_HALF_WIDTH plus a random margin from the vase.
        pass_x = vase[0] + VASE_RADIUS + 0.05  # the hand's front-to-back half depth is ~3 cm
        if mode in ("left", "right"):
            side = 1.0 if mode == "left" else -1.0
            y = vase[1] + side * (VASE_RADIUS + HAND_HALF_WIDTH + rng.uniform(0.01, 0.07))
            return [
                Waypoint([start[0], y, low + 0.02], tol=0.03),
                Waypoint([max(pass_x, goal[0]), y, low], tol=0.02),
                Waypoint(goal, tol=0.01, settle=3),
            ]
        top = vase[2] + VASE_HALF_HEIGHT + FINGERTIP_BELOW_SITE + rng.uniform(0.02, 0.08)
        return [
            Waypoint([vase[0] - 0.06, vase[1], top], tol=0.03),
            Waypoint([goal[0], goal[1], top], tol=0.02),
            Waypoint(goal, tol=0.01, settle=3),
        ]


# ---- objectives --------------------------------------------------------------------------
# rationality 200 per metre: a 1 cm difference is answered right 88% of the time, 2 cm 98%
@objective("clearance", env="reach-around", threshold=0.05, per_step=lambda traj: traj.info["vase_clearance"],
           rationality=200.0)
def clearance(traj):
    """Closest approach of any gripper geom to the vase over the episode, metres."""
    return float(np.min(traj.info["vase_clearance"]))


@objective("left-side", env="reach-around", threshold=0.0)
def left_side(traj):
    """Lateral offset (world +y, the robot's left) of the gripper from the vase where it
    passes the vase, metres: positive when it went around on the left."""
    eef, vase = traj.info["eef_pos"], traj.info["vase_pos"]
    t = int(np.argmin(np.abs(eef[:, 0] - vase[:, 0])))
    return float(eef[t, 1] - vase[t, 1])


@objective("path-length", env="reach-around")
def path_length_objective(traj):
    """Minus the distance the gripper travelled, metres: shorter is better."""
    return -path_length(traj.info["eef_pos"])
