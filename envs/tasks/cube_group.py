"""cube-group: push two cubes across a goal line drawn on the table.

Two cubes (red A, blue B) stand side by side in y with a random gap, nearer the robot
than a thin stripe (the line) at a random x. Success: both cube centres past the line
(x > line x) and both still on the table.

Modes: `together` (gripper open, one finger behind each cube, both pushed at once so they
stay side by side) and `one-by-one` (gripper closed, push one cube across, retreat, go
behind the other and push it across; which cube goes first is random).
Objectives: `together` (minus the largest distance between the cube centres over the
episode; pushing one at a time leaves one far behind the other), plus the generic `time`.
"""

from __future__ import annotations

import numpy as np
from robosuite.models.objects import BoxObject

from ..base import FrankaTaskEnv
from ..experts import Waypoint
from ..objectives import objective
from ..registry import register_env

CUBE_HALF = 0.022  # cube half side, metres (4.4 cm cubes)
FINGER_HALF_DEPTH = 0.012  # a finger's half extent along world x at yaw 0, metres
FINGERTIP_BELOW_SITE = 0.015  # fingertips reach this far below the gripper site
PUSH_Z = 0.016 + FINGERTIP_BELOW_SITE  # site height over the table while pushing: tips ~1.6 cm up
TABLE_HALF = 0.4  # the table's half size in x and y; a cube centre beyond it has fallen off


@register_env("cube-group")
class CubeGroup(FrankaTaskEnv):
    name = "cube-group"
    modes = ("together", "one-by-one")
    objectives = ("together", "time")
    env_state_size = 7  # cube A position 3, cube B position 3, line x 1
    env_state_objects = (("cube_a", 3, True), ("cube_b", 3, True), ("line_x", 1, False))
    default_max_steps = 200

    def build_objects(self):
        kw = dict(size=[CUBE_HALF] * 3, density=500, friction=[1.0, 0.005, 0.0001])
        self.cube_a = BoxObject(name="cube_a", rgba=[0.85, 0.15, 0.15, 1], **kw)
        self.cube_b = BoxObject(name="cube_b", rgba=[0.15, 0.3, 0.85, 1], **kw)
        # visual only and fixed: the arm and the cubes pass through it
        self.line = BoxObject(name="line", size=[0.006, 0.2, 0.0008], rgba=[0.95, 0.85, 0.1, 1],
                              obj_type="visual", joints=None)
        return [self.cube_a, self.cube_b, self.line]

    def on_model_loaded(self):
        self._a_body, self._b_body, self._line_body = (
            self.body_id(obj.root_body) for obj in (self.cube_a, self.cube_b, self.line))

    def place_objects(self, rng):
        centre_y, gap = rng.uniform(-0.05, 0.05), rng.uniform(0.01, 0.035)
        x = rng.uniform(-0.06, 0.02)
        offset = gap / 2 + CUBE_HALF  # cube centre from the pair's middle, in y
        z = self.table_top_z + CUBE_HALF
        a = np.array([x + rng.uniform(-0.01, 0.01), centre_y + offset, z])
        b = np.array([x + rng.uniform(-0.01, 0.01), centre_y - offset, z])
        line_x = max(a[0], b[0]) + rng.uniform(0.08, 0.13)
        self.set_free_body(self.cube_a.joints[0], a)
        self.set_free_body(self.cube_b.joints[0], b)
        self.model.body_pos[self._line_body] = [line_x, 0.0, self.table_top_z + 0.0008]

    def make_instruction(self, rng):
        return "push both cubes past the line"

    # ---- readings ------------------------------------------------------------------------
    def cube_a_pos(self) -> np.ndarray:
        return self.data.xpos[self._a_body].copy()

    def cube_b_pos(self) -> np.ndarray:
        return self.data.xpos[self._b_body].copy()

    def line_x(self) -> float:
        return float(self.model.body_pos[self._line_body][0])

    def task_state(self):
        return np.concatenate([self.cube_a_pos(), self.cube_b_pos(), [self.line_x()]])

    def privileged(self):
        a, b = self.cube_a_pos(), self.cube_b_pos()
        return {
            "eef_pos": self.eef_pos(),
            "cube_a_pos": a,
            "cube_b_pos": b,
            "line_x": self.line_x(),
            "cube_separation": float(np.linalg.norm(a - b)),
        }

    def _on_table(self, p: np.ndarray) -> bool:
        return bool(p[2] > self.table_top_z and abs(p[0]) < TABLE_HALF and abs(p[1]) < TABLE_HALF)

    def is_success(self):
        line = self.line_x()
        return all(p[0] > line and self._on_table(p) for p in (self.cube_a_pos(), self.cube_b_pos()))

    # ---- scripted expert -----------------------------------------------------------------
    def plan(self, mode, rng):
        low, high = self.table_top_z + PUSH_Z, self.table_top_z + rng.uniform(0.07, 0.11)
        speed = rng.uniform(0.45, 0.7)
        # push until the cube centres are this far past the line (success ends it sooner)
        overshoot = rng.uniform(0.03, 0.06)
        back = CUBE_HALF + FINGER_HALF_DEPTH + rng.uniform(0.02, 0.035)  # site behind a cube centre
        push_x = lambda: self.line_x() + overshoot - CUBE_HALF - FINGER_HALF_DEPTH

        if mode == "together":
            # the open fingers (8 cm apart) land one behind each cube; the middle is
            # re-read when each segment starts so the plan follows the cubes
            mid_y = lambda: 0.5 * (self.cube_a_pos()[1] + self.cube_b_pos()[1])
            rear_x = lambda: min(self.cube_a_pos()[0], self.cube_b_pos()[0]) - back
            return [
                Waypoint(lambda: [rear_x(), mid_y(), high], tol=0.02),
                Waypoint(lambda: [rear_x(), mid_y(), low], tol=0.01),
                Waypoint(lambda: [push_x(), mid_y(), low], speed=speed, tol=0.01),
            ]

        # one-by-one: the closed fingers make a 2 cm pusher aimed at one cube's centre
        cubes = [self.cube_a_pos, self.cube_b_pos]
        if rng.random() < 0.5:
            cubes.reverse()
        plan = []
        for cube in cubes:
            plan += [
                Waypoint(lambda c=cube: [c()[0] - back, c()[1], high], gripper=1.0, tol=0.02),
                Waypoint(lambda c=cube: [c()[0] - back, c()[1], low], gripper=1.0, tol=0.01),
                Waypoint(lambda c=cube: [push_x(), c()[1], low], gripper=1.0, speed=speed, tol=0.01),
                # back off and up before moving sideways, so the pushed cube is left alone
                Waypoint(lambda: self.eef_pos() + [-0.04, 0.0, high - low], gripper=1.0, tol=0.02),
            ]
        return plan


# ---- objectives --------------------------------------------------------------------------
@objective("together", env="cube-group", threshold=-0.10)
def together(traj):
    """Minus the largest distance between the two cube centres over the episode, metres:
    pushed side by side they stay 5-8 cm apart; pushing one across first leaves them >12 cm
    apart (the threshold sits between the two on 50 seeds of each mode)."""
    return -float(np.max(traj.info["cube_separation"]))
