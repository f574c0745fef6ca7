"""The control core's pieces and the sim and remote backends' own behaviour.

- Smoother: whatever the goal does, the reference stays within velocity, acceleration and jerk
  limits (hypothesis); the references the sim backend really sent obey them too.
- TargetSchedule: interpolation, past targets dropped, the newest plan wins.
- On the virtual clock the watchdog holds, and stops, within one 1 ms tick of its deadlines.
- remote: malformed, old and duplicate packets are dropped; a silent workstation makes the
  server hold the arm; a silent server makes the client raise LinkLost.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from robalign.errors import RobalignError, UnknownNameError
from robalign.hardware.backend import HOLDING, IDLE, STREAMING, BackendConfig, make_backend
from robalign.hardware.limits import FrankaLimits
from robalign.hardware.remote import LinkLost, RobotServer, decode_command, encode_command
from robalign.hardware.safety import TimedTarget
from robalign.hardware.sim import HOME
from robalign.hardware.streaming import Smoother, TargetSchedule

PANDA, FR3 = FrankaLimits.panda(), FrankaLimits.fr3()
RANDOM_PORTS = {k: 0 for k in ("control", "commands", "heartbeat", "state")}


def derivatives(ref: np.ndarray, dt: float):
    v = np.diff(ref, axis=0) / dt
    a = np.diff(v, axis=0) / dt
    j = np.diff(a, axis=0) / dt
    return np.abs(v).max(0), np.abs(a).max(0), np.abs(j).max(0)


def assert_within_limits(ref, dt, limits, v_scale=0.5, a_scale=1.0, j_scale=1.0):
    v, a, j = derivatives(ref, dt)
    # rounding in the running sums: 1e-9 rad/cycle of slack, divided by dt^k
    assert np.all(v <= v_scale * limits.dq_max + 1e-6), (v, v_scale * limits.dq_max)
    assert np.all(a <= a_scale * limits.ddq_max + 1e-3), (a, a_scale * limits.ddq_max)
    assert np.all(j <= j_scale * limits.dddq_max + 1.0), (j, j_scale * limits.dddq_max)


goal_segments = st.lists(st.tuples(st.integers(1, 400), st.lists(st.floats(-3, 3), min_size=7, max_size=7)),
                         min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(segments=goal_segments, limits=st.sampled_from([PANDA, FR3]), dt=st.sampled_from([0.001, 0.002]),
       scales=st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.floats(0.05, 1.0)))
def test_smoother_keeps_velocity_acceleration_jerk_within_limits(segments, limits, dt, scales):
    v_scale, a_scale, j_scale = scales
    q0 = (limits.q_min + limits.q_max) / 2
    sm = Smoother.for_limits(q0, dt, limits, v_scale, a_scale, j_scale)
    refs = [q0]
    for cycles, goal in segments:  # piecewise-constant goals: every switch is a step, the worst case
        refs += [sm.step(q0 + np.array(goal)) for _ in range(cycles)]
    refs += [sm.step(sm.raw) for _ in range(sm.n1 + sm.n2)]  # and a hold at the end
    assert_within_limits(np.array(refs), dt, limits, v_scale, a_scale, j_scale)


def test_smoother_converges_to_a_held_goal_and_reports_its_lag():
    sm = Smoother.for_limits(np.zeros(7), 0.001, PANDA)
    goal = np.full(7, 0.2)
    for _ in range(2000):
        out = sm.step(goal)
    np.testing.assert_allclose(out, goal, atol=1e-12)
    assert sm.lag == pytest.approx((sm.n1 + sm.n2 - 2) / 2 * 0.001) and 0.1 < sm.lag < 0.2
    with pytest.raises(RobalignError, match="acceleration_scale"):
        Smoother.for_limits(np.zeros(7), 0.001, PANDA, acceleration_scale=0)


def test_schedule_interpolates_drops_the_past_and_lets_the_newest_plan_win():
    q0 = np.zeros(7)
    sched = TargetSchedule(q0, 0.0)
    sched.add(TimedTarget(1.0, np.ones(7)))
    sched.add(TimedTarget(2.0, np.full(7, 3.0)))
    np.testing.assert_allclose(sched.goal(0.5), 0.5)
    np.testing.assert_allclose(sched.goal(1.5), 2.0)  # the 1.0 target was reached and dropped
    assert len(sched) == 1
    sched.add(TimedTarget(1.8, np.full(7, 5.0)))  # a new plan from t=1.8 replaces the one at 2.0
    assert len(sched) == 1
    np.testing.assert_allclose(sched.goal(1.8), 5.0)
    np.testing.assert_allclose(sched.goal(9.0), 5.0)  # past the last target: stay there
    sched.clear(np.full(7, -1.0), 9.0)
    np.testing.assert_allclose(sched.goal(10.0), -1.0)


# ---------------------------------------------------------------- sim on the virtual clock


@pytest.fixture
def sim(tmp_path):
    with make_backend("sim", virtual_clock=True, episode_dir=str(tmp_path / "ep"), period=0.05,
                      hold_timeout=0.4) as robot:
        robot.connect()
        yield robot


def test_watchdog_holds_and_stops_within_one_tick_of_its_deadlines(sim):
    dt, hold_after, stop_after = sim.control_dt, 3 * 0.05, 0.4
    for start_delay in (0.0123, 0.2, 0.0371):
        sim.advance(start_delay)
        t_feed = sim.clock()
        sim.submit(TimedTarget(t_feed + 0.05, HOME))
        while sim.state == STREAMING:
            sim.advance(dt)
        hold = [e for e in sim.events if e["event"] == "hold"][-1]["t"]
        assert -1e-9 <= hold - (t_feed + hold_after) <= dt + 1e-9
        while sim.state == HOLDING:
            sim.advance(dt)
        stop = [e for e in sim.events if e["event"] == "stop"][-1]["t"]
        assert sim.state == IDLE and -1e-9 <= stop - (t_feed + hold_after + stop_after) <= dt + 1e-9


def test_sent_references_stay_within_limits_under_an_aggressive_stream(tmp_path):
    # every command is clamped; with the default max_violations=10 that would be a FAULT
    sim = make_backend("sim", episode_dir=str(tmp_path / "ep"), period=0.05, safety={"max_violations": 10**6})
    sim.connect()
    rng = np.random.default_rng(0)
    q = HOME.copy()
    for _ in range(40):  # random jumps far beyond what the filter allows per command
        q = np.clip(HOME + rng.uniform(-0.6, 0.6, 7), PANDA.q_min + 0.1, PANDA.q_max - 0.1)
        sim.submit(TimedTarget(sim.clock() + 0.05, q))
        sim.advance(0.05)
    sim.stop("done")
    sim.close()
    log = load_file(str(tmp_path / "ep" / "000" / "log.safetensors"))
    meta = json.loads((tmp_path / "ep" / "000" / "meta.json").read_text())
    assert meta["cycles"] == len(log["t"]) == 2000
    assert any(e["event"] == "clamp" for e in meta["events"])  # the filter did clamp the jumps
    np.testing.assert_allclose(np.diff(log["t"]), 0.001, atol=1e-9)
    assert_within_limits(np.concatenate([HOME[None], log["q_ref"]]), 0.001, PANDA)
    # and the simulated arm followed, even at full speed the whole time 
    assert meta["tracking_error_mean"] < 0.01 and meta["tracking_error_max"] < 0.05  # measured 0.0055, 0.023


def test_a_target_that_leaves_the_workspace_is_not_applied(tmp_path):
    from robalign.hardware.runtime import PandaKinematics
    kin = PandaKinematics()
    low = HOME + np.array([0, 0.04, 0, 0, 0, 0, 0])  # shoulder forward: the hand goes down
    assert kin.tcp(low)[0][2] < kin.tcp(HOME)[0][2] - 0.01
    floor = (kin.tcp(HOME)[0][2] + kin.tcp(low)[0][2]) / 2
    with make_backend("sim", safety={"workspace_min": (0.2, -0.5, floor)}) as robot:
        robot.connect()
        robot.submit(TimedTarget(robot.clock() + 0.1, HOME + np.array([0, 0, 0, 0, 0, 0, 0.01])))  # inside: applied
        held = robot.monitor.last_safe
        assert robot.submit(TimedTarget(robot.clock() + 0.2, low)) == []  # outside: the last safe target is kept
        assert robot.monitor.last_safe is held
        event = [e for e in robot.events if e["event"] == "clamp"][-1]
        assert event["kind"] == "workspace" and event["index"] == 2 and event["requested"] < floor


def test_sim_settings_are_checked():
    with pytest.raises(RobalignError, match="simulates the Panda"):
        make_backend("sim", arm="fr3")
    with pytest.raises(RobalignError, match="unknown robot setting"):
        make_backend("sim", perod=0.1)
    with pytest.raises(UnknownNameError, match="robot backend"):
        make_backend("ur5")
    with pytest.raises(RobalignError, match="unknown safety setting"):
        BackendConfig.build(safety={"joint_margn": 0.1})


def test_sim_advance_refuses_bad_input_and_real_time_mode(sim):
    with pytest.raises(RobalignError, match="finite number"):
        sim.advance(float("nan"))
    with make_backend("sim", virtual_clock=False) as rt:
        rt.connect()
        with pytest.raises(RobalignError, match="real time"):
            rt.advance(0.1)
        t0 = rt.clock()
        time.sleep(0.3)
        assert 0.2 < rt.clock() - t0 < 0.45  # the physics keeps pace with the wall clock


# ---------------------------------------------------------------- remote


def test_command_packets_round_trip_and_malformed_ones_are_refused():
    targets = [TimedTarget(10.5, np.arange(7.0)), TimedTarget(10.6, np.ones(7))]
    seq, t_send, rows = decode_command(encode_command(7, 10.0, targets))
    assert seq == 7 and t_send == 10.0
    np.testing.assert_allclose(rows[:, 0], [0.5, 0.6])
    np.testing.assert_array_equal(rows[0, 1:], np.arange(7.0))
    for bad in (b"", b"XXXX" + encode_command(1, 0.0, targets)[4:], encode_command(1, 0.0, targets)[:-8]):
        with pytest.raises(RobalignError, match="packet"):
            decode_command(bad)


@pytest.fixture
def served(tmp_path):
    # the arm's own watchdog waits 2 s, so only the link watchdog can hold it within a second
    arm = make_backend("sim", virtual_clock=False, episode_dir=str(tmp_path / "ep"), hold_after_periods=20)
    arm.connect()  # as `robalign robot serve` does: the physics process starts before any client asks
    server = RobotServer(arm, ports=RANDOM_PORTS, link_timeout=0.3).start()
    client = make_backend("remote", ports=server.ports, link_timeout=0.3, request_timeout=1.0,
                          hold_after_periods=20)
    client.connect()
    yield arm, server, client
    client.close()
    server.close()
    arm.close()


def test_server_drops_old_duplicate_and_malformed_packets(served):
    import zmq
    arm, server, client = served
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{server.ports['commands']}")
    q0 = arm.read_state().q
    now = time.monotonic()
    for seq, t_send in ((5, now), (5, now + 0.01), (4, now + 0.02), (6, now - 1.0)):
        push.send(encode_command(seq, t_send, [TimedTarget(t_send + 0.1, q0)]))
        time.sleep(0.05)  # one at a time: the command socket keeps only the newest
    push.send(b"garbage")
    time.sleep(0.1)
    push.close(linger=0)
    assert server.last_seq == 5 and server.dropped == 3  # only the first was new in both seq and time
    assert "malformed" in client.server_stats["last_error"] or "shorter" in client.server_stats["last_error"]


def test_a_silent_workstation_makes_the_server_hold_and_a_silent_server_raises_linklost(served):
    arm, server, client = served
    q0 = client.read_state().q
    for _ in range(4):
        client.submit(TimedTarget(client.clock() + 0.1, q0))
        time.sleep(0.02)
    assert arm.state == STREAMING
    client._running = False  # the workstation's heartbeat stops (its process hangs)
    time.sleep(0.6)
    assert arm.state == HOLDING and server.link_held
    server._running = False  # now the server goes silent too
    time.sleep(0.5)
    with pytest.raises(LinkLost, match="no state from the server"):
        client.read_state()
