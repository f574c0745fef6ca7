"""Deployment to a Franka arm: the safety filter every command passes (on both sides of the
wire), the command watchdog, joint-limit-respecting interpolation, and the arm's limits.

    >>> from robalign.hardware import FrankaLimits, SafetyFilter, SafetyMonitor, TimedTarget
    >>> monitor = SafetyMonitor(SafetyFilter(FrankaLimits.fr3()), start=TimedTarget(0.0, q_measured))
    >>> target = monitor.submit(TimedTarget(0.1, q_policy))   # clamped, or the last safe target held

Backends (sim, franky, libfranka, remote) and the deploy runtime are not built yet (issue 5).
"""

from .interpolation import interpolate, min_duration
from .limits import FrankaLimits
from .safety import (FAULT, OK, BadDtype, BadShape, NonFinite, NonMonotonicTime, OutOfRange, SafetyConfig, SafetyEvent,
                     SafetyFault, SafetyFilter, SafetyMonitor, SafetyResult, SafetyViolation, TimedTarget, validate)
from .watchdog import HOLD, STOP, VirtualClock, Watchdog

__all__ = ["FAULT", "HOLD", "OK", "STOP", "BadDtype", "BadShape", "FrankaLimits", "NonFinite", "NonMonotonicTime", "OutOfRange",
           "SafetyConfig", "SafetyEvent", "SafetyFault", "SafetyFilter", "SafetyMonitor", "SafetyResult",
           "SafetyViolation", "TimedTarget", "VirtualClock", "Watchdog", "interpolate", "min_duration", "validate"]
