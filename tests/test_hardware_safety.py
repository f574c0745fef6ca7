"""The hardware safety layer: limits, safety filter and monitor, watchdog, interpolation.

Property-based (hypothesis): garbage commands must be rejected with the right typed violation,
and whatever finite command arrives, the applied target must stay inside joint limits minus the
margin, the per-command step and the velocity bound.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robalign.errors import RobalignError
from robalign.hardware.interpolation import interpolate, min_duration
from robalign.hardware.limits import FrankaLimits
from robalign.hardware.safety import (
    FAULT, JOINT_LIMIT, OK, STEP, VELOCITY, WORKSPACE, BadDtype, BadShape, NonFinite, NonMonotonicTime,
    OutOfRange, SafetyConfig, SafetyFault, SafetyFilter, SafetyMonitor, SafetyViolation, TimedTarget,
)
from robalign.hardware.watchdog import HOLD, STOP, VirtualClock, Watchdog
from robalign.hardware.watchdog import OK as WD_OK

PANDA, FR3 = FrankaLimits.panda(), FrankaLimits.fr3()
HOME = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
EXAMPLES = settings(max_examples=200, deadline=None)
TOL = 1e-9  # rad: float rounding in the clamps


def panda_fk(q) -> np.ndarray:
    """Panda flange position (m) from Franka's published modified-DH parameters."""
    dh = [(0, 0.333, 0), (0, 0, -math.pi / 2), (0, 0.316, math.pi / 2), (0.0825, 0, math.pi / 2),
          (-0.0825, 0.384, -math.pi / 2), (0, 0, math.pi / 2), (0.088, 0, math.pi / 2), (0, 0.107, 0)]
    T = np.eye(4)
    for (a, d, alpha), theta in zip(dh, list(q) + [0.0]):
        ca, sa, ct, st_ = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
        T = T @ np.array([[ct, -st_, 0, a], [st_ * ca, ct * ca, -sa, -d * sa],
                          [st_ * sa, ct * sa, ca, d * ca], [0, 0, 0, 1]])
    return T[:3, 3]


def in_band(limits: FrankaLimits, margin: float):
    """Strategy: (7,) float64 joint positions within limits minus margin."""
    lo, hi = limits.q_min + margin, limits.q_max - margin
    return st.tuples(*[st.floats(float(a), float(b)) for a, b in zip(lo, hi)]).map(np.array)


finite_q = st.one_of(
    hnp.arrays(np.float64, 7, elements=st.floats(allow_nan=False, allow_infinity=False)),
    hnp.arrays(np.float32, 7, elements=st.floats(allow_nan=False, allow_infinity=False, width=32)),
    hnp.arrays(np.float64, 7, elements=st.floats(-4, 4)),  # mostly near the joint range
)
limits_st = st.sampled_from([PANDA, FR3])
configs = st.builds(SafetyConfig, joint_margin=st.floats(0, 0.2), max_step_change=st.floats(1e-4, 1.0),
                    velocity_scale=st.floats(0.01, 1.0), reject_beyond=st.one_of(st.just(math.inf), st.floats(0, 2)))


# ---------------------------------------------------------------- limits


def test_limits_are_franka_published_values_and_frozen():
    assert PANDA.q_max[5] == 3.7525 and PANDA.q_min[3] == -3.0718 and PANDA.dddq_max[1] == 3750
    assert FR3.q_min[5] == 0.5445 and FR3.dq_max[4] == 5.26 and FR3.ddq_max.tolist() == [10.0] * 7
    for lim in (PANDA, FR3):
        for arr in (lim.q_min, lim.q_max, lim.dq_max, lim.ddq_max, lim.dddq_max):
            assert arr.shape == (7,) and arr.dtype == np.float64
            with pytest.raises(ValueError):
                arr[0] = 0.0  # read-only
        assert np.all(lim.q_min < lim.q_max)
        with pytest.raises(dataclasses.FrozenInstanceError):
            lim.q_min = np.zeros(7)
    with pytest.raises(RobalignError, match="7 finite"):
        FrankaLimits("bad", [0] * 6, [1] * 6, [1] * 6, [1] * 6, [1] * 6)
    with pytest.raises(RobalignError, match="below q_max"):
        FrankaLimits("bad", [1] * 7, [0] * 7, [1] * 7, [1] * 7, [1] * 7)


def test_config_and_filter_refuse_nonsense():
    for bad in (dict(joint_margin=-0.1), dict(max_step_change=0), dict(velocity_scale=1.5),
                dict(workspace_min=(0.9, 0, 0)), dict(max_violations=0), dict(dt=float("nan"))):
        with pytest.raises(RobalignError):
            SafetyConfig(**bad)
    with pytest.raises(RobalignError, match="no room"):
        SafetyFilter(PANDA, SafetyConfig(joint_margin=1.6))  # joint 4 spans only 3.0 rad


# ---------------------------------------------------------------- rejections


def _last(q=HOME, t=1.0) -> TimedTarget:
    return TimedTarget(t, np.array(q, np.float64))


@EXAMPLES
@given(q=in_band(PANDA, 0.05), j=st.integers(0, 6), bad=st.sampled_from([np.nan, np.inf, -np.inf]),
       dtype=st.sampled_from([np.float32, np.float64]), has_last=st.booleans())
def test_nan_and_inf_are_rejected_and_last_target_held(q, j, bad, dtype, has_last):
    q = q.astype(dtype)
    q[j] = bad
    last = _last() if has_last else None
    result = SafetyFilter(PANDA).check(TimedTarget(2.0, q), last)
    assert isinstance(result.rejected, NonFinite)
    assert "finite" in str(result.rejected) and f"[{j}]" in str(result.rejected)
    assert result.target is last and result.events == () and not result.ok


@pytest.mark.parametrize("t", [float("nan"), float("inf"), -float("inf"), 10**400])
def test_nan_inf_time_rejected(t):
    result = SafetyFilter(PANDA).check(TimedTarget(t, HOME.copy()), _last())
    assert isinstance(result.rejected, NonFinite) and "finite" in str(result.rejected)


@EXAMPLES
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=8).filter(lambda s: s != (7,)))
def test_wrong_shapes_rejected(shape):
    last = _last()
    result = SafetyFilter(PANDA).check(TimedTarget(2.0, np.zeros(shape)), last)
    assert isinstance(result.rejected, BadShape)
    assert "(7,)" in str(result.rejected) and str(shape) in str(result.rejected)
    assert result.target is last


@pytest.mark.parametrize("q", [[0.0] * 6, [[0.0] * 7], [0.1, [0.2, 0.3], 0, 0, 0, 0, 0], "1234567", None, 3.0])
def test_wrong_shape_odd_inputs(q):
    assert isinstance(SafetyFilter(PANDA).check(TimedTarget(2.0, q), _last()).rejected, BadShape)


def test_wrong_ee_shape_rejected():
    result = SafetyFilter(PANDA).check(TimedTarget(2.0, HOME.copy(), np.zeros(4)), _last())
    assert isinstance(result.rejected, BadShape) and "ee_xyz" in str(result.rejected)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.bool_, np.float16,
                                   np.complex64, np.complex128, object, "U8"])
def test_wrong_dtypes_rejected(dtype):
    q = np.zeros(7).astype(dtype)
    result = SafetyFilter(PANDA).check(TimedTarget(2.0, q), _last())
    assert isinstance(result.rejected, BadDtype)
    assert "float32 or float64" in str(result.rejected) and str(q.dtype) in str(result.rejected)


def test_int_list_and_non_command_and_bad_time_type_rejected():
    f, last = SafetyFilter(PANDA), _last()
    assert isinstance(f.check(TimedTarget(2.0, [0, 0, 0, -1, 0, 1, 0]), last).rejected, BadDtype)
    assert isinstance(f.check((2.0, HOME), last).rejected, BadDtype)
    for t in ("2.0", True, None, np.array([2.0])):
        assert isinstance(f.check(TimedTarget(t, HOME.copy()), last).rejected, BadDtype)
    # float32 and plain lists of floats are fine
    assert f.check(TimedTarget(2.0, HOME.astype(np.float32)), last).rejected is None
    assert f.check(TimedTarget(2, HOME.tolist()), last).rejected is None


@EXAMPLES
@given(t_last=st.floats(-1e6, 1e6), back=st.floats(0, 1e6))
def test_non_monotonic_time_rejected(t_last, back):
    last = _last(t=t_last)
    result = SafetyFilter(PANDA).check(TimedTarget(t_last - back, HOME.copy()), last)
    assert isinstance(result.rejected, NonMonotonicTime)
    assert "strictly greater" in str(result.rejected) and result.target is last


def test_violation_hierarchy():
    for cls in (BadShape, BadDtype, NonFinite, NonMonotonicTime):
        assert issubclass(cls, SafetyViolation) and issubclass(cls, RobalignError) and issubclass(cls, ValueError)
    assert issubclass(SafetyFault, RobalignError) and not issubclass(SafetyFault, SafetyViolation)


# ---------------------------------------------------------------- clamps


@EXAMPLES
@given(data=st.data(), limits=limits_st, config=configs, q=finite_q, has_last=st.booleans(),
       gap=st.one_of(st.floats(1e-9, 10.0), st.floats(1e-300, 1e-6)))
def test_applied_target_always_within_bounds(data, limits, config, q, has_last, gap):
    f = SafetyFilter(limits, config)
    last = TimedTarget(3.0, data.draw(in_band(limits, config.joint_margin))) if has_last else None
    t = 3.0 + gap
    assume(not has_last or t > 3.0)
    result = f.check(TimedTarget(t, q), last)
    q64 = q.astype(np.float64)
    if np.any(q64 < limits.q_min - config.reject_beyond) or np.any(q64 > limits.q_max + config.reject_beyond):
        assert isinstance(result.rejected, OutOfRange) and result.target is last and not result.events
        return
    assert result.rejected is None
    applied = result.target.q
    assert result.target.t == t and applied.dtype == np.float64 and not applied.flags.writeable
    lo, hi = limits.q_min + config.joint_margin, limits.q_max - config.joint_margin
    assert np.all(applied >= lo - TOL) and np.all(applied <= hi + TOL)
    if has_last:
        delta = np.abs(applied - last.q)
        assert np.all(delta <= config.max_step_change + TOL)
        assert np.all(delta <= config.velocity_scale * limits.dq_max * (t - last.t) + TOL)
        # and it is the allowed target nearest the request, joint by joint
        reach = np.minimum(config.max_step_change, config.velocity_scale * limits.dq_max * (t - last.t))
        nearest = np.clip(q.astype(np.float64), np.maximum(lo, last.q - reach), np.minimum(hi, last.q + reach))
        np.testing.assert_allclose(applied, nearest, rtol=0, atol=TOL)
    else:
        np.testing.assert_array_equal(applied, np.clip(q.astype(np.float64), lo, hi))
    # every changed joint is explained by an event; no changes means no events
    changed = set(np.flatnonzero(applied != q.astype(np.float64)).tolist())
    assert changed == {e.index for e in result.events}
    assert result.ok == (not changed)
    for e in result.events:
        assert e.kind in (JOINT_LIMIT, STEP, VELOCITY) and e.t == t and e.requested != e.applied


@pytest.mark.parametrize("value", [1e9, -1e9, 1e300, np.finfo(np.float64).max])
def test_huge_values_are_rejected_or_with_reject_beyond_inf_clamped(value):
    last = _last(t=0.0)
    result = SafetyFilter(PANDA).check(TimedTarget(0.1, np.full(7, value)), last)
    assert isinstance(result.rejected, OutOfRange) and result.target is last and "outside panda's range" in str(
        result.rejected)
    result = SafetyFilter(PANDA, SafetyConfig(reject_beyond=math.inf)).check(TimedTarget(0.0, np.full(7, value)), None)
    band_edge = PANDA.q_max - 0.05 if value > 0 else PANDA.q_min + 0.05
    np.testing.assert_array_equal(result.target.q, band_edge)
    assert [(e.kind, e.index, e.requested) for e in result.events] == [(JOINT_LIMIT, j, value) for j in range(7)]


def test_step_and_velocity_events_record_what_happened():
    f, last = SafetyFilter(PANDA), _last(t=1.0)
    q = HOME.copy()
    q[0] += 0.2
    result = f.check(TimedTarget(1.1, q), last)  # step (0.05) is tighter than velocity (0.109)
    assert [(e.kind, e.index) for e in result.events] == [(STEP, 0)]
    assert result.events[0].requested == pytest.approx(0.2) and result.events[0].applied == pytest.approx(0.05)
    result = f.check(TimedTarget(1.01, q), last)  # now velocity: 0.5 * 2.175 * 0.01 = 0.010875 rad
    assert [(e.kind, e.index) for e in result.events] == [(STEP, 0), (VELOCITY, 0)]
    assert result.target.q[0] == pytest.approx(0.010875)
    np.testing.assert_array_equal(result.target.q[1:], HOME[1:])


@EXAMPLES
@given(q=finite_q, last_q=in_band(FR3, 0.05), gap=st.floats(1e-3, 1.0))
def test_check_is_pure(q, last_q, gap):
    f = SafetyFilter(FR3, fk=panda_fk)
    command, last = TimedTarget(1.0 + gap, q.copy()), TimedTarget(1.0, last_q.copy())
    first, second = f.check(command, last), f.check(command, last)
    np.testing.assert_array_equal(command.q, q)  # inputs untouched
    np.testing.assert_array_equal(last.q, last_q)
    assert first.events == second.events and type(first.rejected) is type(second.rejected)
    np.testing.assert_array_equal(first.target.q, second.target.q)
    assert first.target.q is not command.q  # no aliasing: later edits to the command change nothing
    kept = first.target.q.copy()
    command.q[:] = 0.0
    np.testing.assert_array_equal(first.target.q, kept)


# ---------------------------------------------------------------- workspace


def test_workspace_from_commanded_ee_without_fk():
    f, last = SafetyFilter(PANDA), TimedTarget(1.0, HOME.copy(), np.array([0.3, 0.0, 0.5]))
    inside = f.check(TimedTarget(1.1, HOME + 0.01, np.array([0.31, 0.0, 0.5])), last)
    assert inside.ok and inside.target.t == 1.1
    below = f.check(TimedTarget(1.1, HOME + 0.01, np.array([0.9, 0.0, 0.0])), last)  # x > 0.8 and z < 0.02
    assert below.target is last and below.rejected is None and not below.ok
    assert [(e.kind, e.index, e.requested, e.applied) for e in below.events] == [
        (WORKSPACE, 0, 0.9, 0.3), (WORKSPACE, 2, 0.0, 0.5)]
    assert f.check(TimedTarget(1.1, HOME + 0.01), last).ok  # no ee_xyz, no fk: nothing to check


@EXAMPLES
@given(dq=hnp.arrays(np.float64, 7, elements=st.floats(-0.05, 0.05)))
def test_workspace_with_fk_holds_when_the_arm_would_leave_the_box(dq):
    home_ee = panda_fk(HOME)
    half = np.array([0.01, 0.5, 0.01])  # a box 2 cm wide in x and z around the home pose
    box = SafetyConfig(workspace_min=tuple(home_ee - half), workspace_max=tuple(home_ee + half))
    f, last = SafetyFilter(PANDA, box, fk=panda_fk), _last()
    result = f.check(TimedTarget(1.1, HOME + dq), last)
    ee = panda_fk(HOME + dq)
    inside = np.all((ee >= box.workspace_min) & (ee <= box.workspace_max))
    if inside:
        assert result.ok and np.allclose(result.target.ee_xyz, ee)
    else:
        assert result.target is last and {e.kind for e in result.events} == {WORKSPACE}
        for e in result.events:
            assert not box.workspace_min[e.index] <= e.requested <= box.workspace_max[e.index]
            assert e.applied == pytest.approx(home_ee[e.index])


def test_workspace_fk_nan_holds_and_nothing_to_hold_gives_none():
    f = SafetyFilter(PANDA, fk=lambda q: np.full(3, np.nan))
    last = _last()
    assert f.check(TimedTarget(2.0, HOME.copy()), last).target is last
    assert f.check(TimedTarget(2.0, HOME.copy()), None).target is None


# ---------------------------------------------------------------- monitor


def _good(t, q=HOME):
    return TimedTarget(t, np.array(q, np.float64))


def test_monitor_holds_last_safe_target_on_rejection():
    m = SafetyMonitor(SafetyFilter(PANDA), start=_good(0.0))
    applied = m.submit(_good(0.1, HOME + 0.01))
    np.testing.assert_array_equal(applied.q, HOME + 0.01)
    for bad in (TimedTarget(0.2, np.full(7, np.nan)), TimedTarget(0.05, HOME + 0.02), TimedTarget(0.3, np.zeros(3))):
        assert m.submit(bad) is applied  # held, unchanged (same t, same q)
        assert isinstance(m.last_result.rejected, SafetyViolation)
    assert m.violations == 3 and m.state == OK
    np.testing.assert_array_equal(m.submit(_good(0.4, HOME + 0.02)).q, HOME + 0.02)
    assert m.violations == 0  # a clean command resets the count


def test_monitor_without_start_returns_none_until_something_is_safe():
    m = SafetyMonitor(SafetyFilter(PANDA))
    assert m.submit(TimedTarget(0.0, np.full(7, np.inf))) is None
    assert m.submit(_good(0.1)) is not None


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 15), kinds=st.lists(st.sampled_from(["nan", "jump", "old", "shape"]), min_size=15, max_size=15))
def test_monitor_faults_after_n_consecutive_violations_until_recover(n, kinds):
    m = SafetyMonitor(SafetyFilter(PANDA, SafetyConfig(max_violations=n)), start=_good(0.0))
    t = 0.0
    for i in range(n - 1):  # n - 1 violations, a clean command, n - 1 more: never FAULT
        t += 0.1
        m.submit(_bad(kinds[i], t, m.last_safe))
    t += 0.1
    m.submit(_good(t, m.last_safe.q))
    assert m.state == OK and m.violations == 0
    for i in range(n):
        assert m.state == OK
        t += 0.1
        m.submit(_bad(kinds[i], t, m.last_safe))
    assert m.state == FAULT
    for _ in range(5):  # stays FAULT, good commands included
        t += 0.1
        with pytest.raises(SafetyFault, match="recover"):
            m.submit(_good(t, m.last_safe.q))
        assert m.state == FAULT
    m.recover()
    assert m.state == OK and m.violations == 0
    t += 0.1
    assert m.submit(_good(t, m.last_safe.q)).t == t and m.last_result.ok


def _bad(kind: str, t: float, last: TimedTarget) -> TimedTarget:
    """A command that is rejected (nan, old, shape) or clamped (jump)."""
    return {"nan": TimedTarget(t, np.full(7, np.nan)), "jump": TimedTarget(t, last.q + 0.3),
            "old": TimedTarget(last.t - 1.0, last.q.copy()), "shape": TimedTarget(t, np.zeros(6))}[kind]


def test_monitor_recover_can_reseed_from_measured_position():
    m = SafetyMonitor(SafetyFilter(PANDA, SafetyConfig(max_violations=1)), start=_good(0.0))
    m.submit(TimedTarget(0.1, np.full(7, np.nan)))
    assert m.state == FAULT
    measured = _good(5.0, HOME + 0.03)
    m.recover(measured)
    np.testing.assert_array_equal(m.submit(_good(5.1, HOME + 0.04)).q, HOME + 0.04)


# ---------------------------------------------------------------- watchdog

TICK = 0.001


@settings(max_examples=40, deadline=None)
@given(period=st.floats(0.005, 0.2), periods=st.floats(1.0, 5.0), stop_after=st.floats(0.005, 0.5),
       start=st.floats(0, 1e4))
def test_watchdog_holds_at_deadline_then_stops_and_latches(period, periods, stop_after, start):
    clock = VirtualClock(start)
    wd = Watchdog(period, periods, stop_after, clock=clock)
    wd.feed()
    hold_at, stop_at = periods * period, periods * period + stop_after
    first_hold = first_stop = None
    tick = 0
    while first_stop is None:
        clock.advance(TICK)
        tick += 1
        state = wd.poll()
        if state == HOLD and first_hold is None:
            first_hold = tick
        if state == STOP:
            first_stop = tick
        if first_hold is None:
            assert state == WD_OK
    # the tick where HOLD (then STOP) first shows is the deadline's tick or the next
    assert hold_at - 1e-9 <= first_hold * TICK <= hold_at + TICK + 1e-6
    assert stop_at - 1e-9 <= first_stop * TICK <= stop_at + TICK + 1e-6
    wd.feed()  # latched: fresh commands do not clear STOP
    assert wd.poll() == STOP
    clock.advance(100.0)
    assert wd.poll() == STOP
    wd.reset()
    assert wd.poll() == WD_OK


def test_watchdog_fresh_commands_keep_it_ok_and_clear_hold():
    clock = VirtualClock()
    wd = Watchdog(0.1, clock=clock)
    for _ in range(1000):  # 100 s of commands every period
        clock.advance(0.1)
        wd.feed()
        assert wd.poll() == WD_OK
    clock.advance(0.35)
    assert wd.poll() == HOLD
    wd.feed()
    assert wd.poll() == WD_OK  # HOLD is not latched
    clock.advance(0.29)
    assert wd.poll() == WD_OK


def test_watchdog_stop_latches_even_between_polls():
    clock = VirtualClock()
    wd = Watchdog(0.1, 3.0, 1.0, clock=clock.now)
    clock.advance(2.0)  # past hold (0.3 s) + stop (1 s) without any poll
    wd.feed()  # a late command must not hide the STOP
    assert wd.poll() == STOP


def test_watchdog_feed_time_and_validation():
    clock = VirtualClock(10.0)
    wd = Watchdog(0.1, clock=clock)
    clock.advance(0.5)
    wd.feed(10.45)  # received 50 ms ago
    assert wd.poll() == WD_OK
    clock.advance(0.26)  # newest is 0.31 s old
    assert wd.poll() == HOLD
    wd.feed(9.0)  # older than the newest: does not rewind
    assert wd.poll() == HOLD
    assert Watchdog(0.1).poll() == WD_OK  # real monotonic clock
    for args in ((0.0,), (0.1, -1.0), (0.1, 3.0, -0.5), (float("nan"),)):
        with pytest.raises(RobalignError):
            Watchdog(*args)
    with pytest.raises(RobalignError):
        VirtualClock().advance(-1.0)


# ---------------------------------------------------------------- interpolation


def _assert_within_derivative_limits(traj: np.ndarray, limits: FrankaLimits, dt: float):
    padded = np.concatenate([traj[:1].repeat(3, 0), traj, traj[-1:].repeat(3, 0)])  # at rest before and after
    for k, bound in ((1, limits.dq_max), (2, limits.ddq_max), (3, limits.dddq_max)):
        fd = np.abs(np.diff(padded, n=k, axis=0)) / dt**k
        assert np.all(fd <= bound * (1 + 1e-6) + 1e-6), (k, (fd / bound).max())


@EXAMPLES
@given(data=st.data(), limits=limits_st, duration=st.one_of(st.just(0.0), st.floats(0, 3.0)),
       dt=st.sampled_from([0.001, 0.004]))
def test_interpolation_respects_velocity_acceleration_jerk(data, limits, duration, dt):
    q0, q1 = data.draw(in_band(limits, 0.0)), data.draw(in_band(limits, 0.0))
    traj = interpolate(q0, q1, duration, limits, dt=dt)
    assert traj.ndim == 2 and traj.shape[1] == 7 and traj.dtype == np.float64
    np.testing.assert_array_equal(traj[0], q0)
    np.testing.assert_array_equal(traj[-1], q1)
    assert (len(traj) - 1) * dt >= max(duration, min_duration(q0, q1, limits)) - 1e-9  # stretched, never cut
    assert (len(traj) - 1) * dt < max(duration, min_duration(q0, q1, limits)) + dt + 1e-9
    _assert_within_derivative_limits(traj, limits, dt)
    lo, hi = np.minimum(q0, q1), np.maximum(q0, q1)  # stays between its endpoints
    assert np.all(traj >= lo - 1e-12) and np.all(traj <= hi + 1e-12)


def test_interpolation_stretches_short_durations_and_keeps_long_ones():
    q0, q1 = PANDA.q_min + 0.1, PANDA.q_max - 0.1
    fast = interpolate(q0, q1, 0.01, PANDA)
    assert len(fast) - 1 > 10 and (len(fast) - 1) * 0.001 >= min_duration(q0, q1, PANDA)
    _assert_within_derivative_limits(fast, PANDA, 0.001)
    slow = interpolate(HOME, HOME + 0.1, 2.0, PANDA)
    assert slow.shape == (2001, 7)
    assert interpolate(HOME, HOME, 0.0, PANDA).shape == (1, 7)
    with pytest.raises(RobalignError):
        interpolate(HOME, np.zeros(6), 1.0, PANDA)
    with pytest.raises(RobalignError):
        interpolate(HOME, HOME, float("nan"), PANDA)
