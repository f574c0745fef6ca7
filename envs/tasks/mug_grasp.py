"""mug-grasp: pick up a mug (base, wall of boxes, a loop handle on one side) and lift it.

The mug stands at a random spot with its handle pointing within +-60 degrees of the
robot's left (world +y), so both the handle and the far side of the wall stay reachable
with a top-down grasp. Modes: `handle` (fingers straddle the flat handle loop and pinch it)
and `rim` (one finger inside the cup, one outside, pinching the wall from above on the side
away from the handle). Objectives: `handle-grasp` (share of lifted steps held by the
handle) and `upright` (minus the largest tilt while lifted).
"""

from __future__ import annotations

import mujoco
import numpy as np
from robosuite.models.objects import CompositeObject

from ..base import FrankaTaskEnv
from ..experts import Waypoint
from ..objectives import objective
from ..registry import register_env

# Mug frame: origin at the bounding box centre, handle along +x. Metres.
R_OUT, R_IN, N_WALL = 0.04, 0.034, 16
HALF_H = 0.05  # the mug stands 10 cm tall; its bottom is HALF_H below the body origin
BASE_HALF = 0.005
HANDLE_HALF_WIDTH = 0.006  # tangential half-thickness of the flat handle loop
HANDLE_GRIP_R = 0.064  # radial spot the finger pads centre on: covers the arm and the bar
BASE_DENSITY = 6000  # a heavy bottom: held by the rim, the mug hangs off-centre and tilts
LIFTED = 0.02  # base height above the table that counts as lifted, for the objectives
SUCCESS_LIFT = 0.10
FINGERTIP_BELOW_SITE = 0.015  # fingertips reach this far below the gripper site
HANDLE_DIRECTION, HANDLE_SPREAD = np.pi / 2, np.deg2rad(60)


def _mug(name: str) -> CompositeObject:
    """A CompositeObject mug like robosuite's HollowCylinderObject, plus a base and a handle."""
    color = [0.85, 0.25, 0.2, 1]
    geoms = dict(geom_types=[], geom_sizes=[], geom_locations=[], geom_quats=[], geom_names=[])

    def add(kind, gname, size, loc, yaw=0.0):
        for key, value in zip(geoms, (kind, size, loc, [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)], gname)):
            geoms[key].append(value)

    add("cylinder", "base", [R_OUT, BASE_HALF], [0, 0, -HALF_H + BASE_HALF])
    wall_half_h = HALF_H - BASE_HALF  # wall from the base's top to the rim
    box_half_t = (R_OUT - R_IN) * np.cos(np.pi / N_WALL) / 2
    box_half_w = R_OUT * np.sin(np.pi / N_WALL)
    mid_r = R_IN * np.cos(np.pi / N_WALL) + box_half_t
    for i in range(N_WALL):
        a = 2 * np.pi * i / N_WALL
        add("box", f"wall{i}", [box_half_t, box_half_w, wall_half_h],
            [mid_r * np.cos(a), mid_r * np.sin(a), BASE_HALF], yaw=a)
    # Handle: a flat loop in the mug's x-z plane, two arms out of the wall and an outer bar.
    for gname, z in (("handle_top", 0.03), ("handle_bottom", -0.02)):
        add("box", gname, [0.018, HANDLE_HALF_WIDTH, 0.005], [R_OUT + 0.015, 0, z])
    add("box", "handle_bar", [0.005, HANDLE_HALF_WIDTH, 0.03], [R_OUT + 0.035, 0, 0.005])
    n = len(geoms["geom_types"])
    return CompositeObject(
        name=name, total_size=[R_OUT + 0.04, R_OUT + 0.04, HALF_H], locations_relative_to_center=True,
        rgba=color, geom_rgbas=[color] * n, density=[BASE_DENSITY] + [400] * (n - 1),
        geom_frictions=[[2.0, 0.02, 0.001]] * n, geom_condims=[4] * n, **geoms,
    )


@register_env("mug-grasp")
class MugGrasp(FrankaTaskEnv):
    name = "mug-grasp"
    modes = ("handle", "rim")
    objectives = ("handle-grasp", "upright")
    env_state_size = 7  # mug position 3, mug quaternion wxyz 4
    env_state_objects = (("mug", 7, True),)
    default_max_steps = 180

    def build_objects(self):
        self.mug = _mug("mug")
        return [self.mug]

    def on_model_loaded(self):
        m = self.model
        self._mug_body = self.body_id(self.mug.root_body)
        solid = self.geoms_of(self.mug.root_body, collision_only=True)
        names = {g: mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g) or "" for g in solid}
        self._handle_geoms = [g for g in solid if "handle" in names[g]]
        self._wall_geoms = [g for g in solid if "wall" in names[g]]

    def place_objects(self, rng):
        yaw = HANDLE_DIRECTION + rng.uniform(-HANDLE_SPREAD, HANDLE_SPREAD)
        pos = [rng.uniform(-0.08, 0.1), rng.uniform(-0.08, 0.03), self.table_top_z + HALF_H + 0.001]
        q = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        self.set_free_body(self.mug.joints[0], pos, q)

    def make_instruction(self, rng):
        return "pick up the mug"

    # ---- readings ------------------------------------------------------------------------
    def mug_pos(self) -> np.ndarray:
        return self.data.xpos[self._mug_body].copy()

    def mug_tilt(self) -> float:
        """Angle between the mug's axis and vertical, radians."""
        return float(np.arccos(np.clip(self.data.xmat[self._mug_body][8], -1.0, 1.0)))

    def mug_yaw(self) -> float:
        """Heading of the handle about world z, radians."""
        mat = self.data.xmat[self._mug_body].reshape(3, 3)
        return float(np.arctan2(mat[1, 0], mat[0, 0]))

    def lifted(self) -> float:
        """Height of the centre of the mug's bottom above the table, metres."""
        axis = self.data.xmat[self._mug_body].reshape(3, 3)[:, 2]
        return float(self.mug_pos()[2] - HALF_H * axis[2] - self.table_top_z)

    def task_state(self):
        return np.concatenate([self.mug_pos(), self.data.xquat[self._mug_body]])

    def privileged(self):
        return {
            "eef_pos": self.eef_pos(),
            "mug_pos": self.mug_pos(),
            "mug_tilt": self.mug_tilt(),
            "handle_contact": float(self.touching(self.gripper_geoms, self._handle_geoms)),
            "rim_contact": float(self.touching(self.gripper_geoms, self._wall_geoms)),
            "lifted": self.lifted(),
        }

    def is_success(self):
        return self.lifted() >= SUCCESS_LIFT

    # ---- scripted expert -----------------------------------------------------------------
    @staticmethod
    def behaviour_mode(trajectory):
        """The part the fingers touched most: `handle` or `rim` (None: touched neither)."""
        handle, rim = trajectory.info["handle_contact"].sum(), trajectory.info["rim_contact"].sum()
        if handle == rim == 0:
            return None
        return "handle" if handle >= rim else "rim"

    def plan(self, mode, rng):
        centre, heading = self.mug_pos(), self.mug_yaw()
        rim_z = centre[2] + HALF_H
        if mode == "handle":
            # The handle is a thin loop in a vertical plane: fingers close across it, so
            # the finger axis is perpendicular to the handle's heading (yaw = heading).
            at, radius, yaw = heading, HANDLE_GRIP_R + rng.uniform(-0.004, 0.004), heading
            grip_z = rim_z - rng.uniform(0.025, 0.035)  # pads cover the top arm and the bar
        else:
            # One finger inside the cup, one outside: finger axis radial (yaw = angle - 90°),
            # anywhere on the half of the wall away from the handle.
            at = heading + np.pi + rng.uniform(-0.6, 0.6)
            radius, yaw = (R_OUT + R_IN) / 2, at - np.pi / 2
            grip_z = rim_z - rng.uniform(0.01, 0.02)
        yaw = (yaw + np.pi / 2) % np.pi - np.pi / 2  # the hand is symmetric: turn the short way
        spot = centre[:2] + radius * np.array([np.cos(at), np.sin(at)])
        above = rim_z + FINGERTIP_BELOW_SITE + rng.uniform(0.03, 0.07)
        lift = grip_z + SUCCESS_LIFT + rng.uniform(0.04, 0.08)
        # Waypoints finish on position alone: settle above the mug so a large wrist turn
        # is done before the fingers go down beside the wall.
        return [
            Waypoint([*spot, above], yaw=yaw, tol=0.015, settle=8),
            Waypoint([*spot, grip_z], yaw=yaw, tol=0.006, speed=0.5, settle=2),
            Waypoint([*spot, grip_z], gripper=1.0, yaw=yaw, tol=0.02, settle=8),
            Waypoint([*spot, lift], gripper=1.0, yaw=yaw, tol=0.01, speed=0.5, settle=10),
        ]


# ---- objectives --------------------------------------------------------------------------
# rationality 10 per share: a handle grasp (about 1) against a rim grasp (0) is answered right
# with probability sigmoid(10), a difference of 0.2 in the share 88% of the time
@objective("handle-grasp", env="mug-grasp", threshold=0.5,
           per_step=lambda traj: traj.info["handle_contact"] * (traj.info["lifted"] > LIFTED), rationality=10.0)
def handle_grasp(traj):
    """Share of the steps with the mug lifted (> 2 cm) in which the gripper touches the
    handle; 0 if the mug was never lifted."""
    up = traj.info["lifted"] > LIFTED
    return float(traj.info["handle_contact"][up].mean()) if up.any() else 0.0


@objective("upright", env="mug-grasp", threshold=-0.35)
def upright(traj):
    """Minus the largest tilt of the mug from vertical while it is lifted, radians."""
    up = traj.info["lifted"] > LIFTED
    return -float(traj.info["mug_tilt"][up].max()) if up.any() else 0.0
