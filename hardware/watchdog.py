"""A command watchdog: hold the arm when commands stop coming, stop it if they stay away.

    OK    the newest command is at most hold_after_periods * period old
    HOLD  it is older than that: keep the last safe target (clears when a command arrives)
    STOP  it has been in HOLD longer than stop_after seconds: stop the arm; latched until reset()

Time comes from an injectable clock (a callable returning monotonic seconds), so tests drive it
with a ``VirtualClock`` instead of sleeping. States depend only on clock readings, not on how
often ``poll`` is called: a STOP that fell between two polls is still latched.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from robalign.errors import RobalignError

OK, HOLD, STOP = "OK", "HOLD", "STOP"


class VirtualClock:
    """A clock that only moves when told to; pass it (or its `now`) as a Watchdog's clock."""

    def __init__(self, start: float = 0.0):
        self._t = float(start)

    def now(self) -> float:
        return self._t

    __call__ = now

    def advance(self, dt: float) -> float:
        """Move forward dt >= 0 seconds; returns the new time."""
        if not (math.isfinite(dt) and dt >= 0):
            raise RobalignError(f"a clock only moves forward: dt must be finite and >= 0, got {dt!r}")
        self._t += dt
        return self._t


class Watchdog:
    """Watches the age of the newest command. Armed on creation (and on reset) as if fed then."""

    def __init__(self, period: float, hold_after_periods: float = 3.0, stop_after: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        for name, value, low in (("period", period, "> 0"), ("hold_after_periods", hold_after_periods, "> 0"),
                                 ("stop_after", stop_after, ">= 0")):
            if not (isinstance(value, (int, float)) and math.isfinite(value)
                    and (value >= 0 if low == ">= 0" else value > 0)):
                raise RobalignError(f"Watchdog {name} must be a finite number {low}; got {value!r}")
        self.period = float(period)  # s, the expected time between commands
        self.hold_after = hold_after_periods * self.period  # s of silence before HOLD
        self.stop_after = float(stop_after)  # s in HOLD before STOP
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Clear a latched STOP and re-arm as if a command arrived now (a person's decision)."""
        self._newest = self.clock()
        self._stopped = False

    def feed(self, t: float | None = None) -> None:
        """Record a fresh command received at clock time t (default: now). Ignored while stopped."""
        self._update(self.clock())  # a STOP earned before this command arrived stays latched
        t = self.clock() if t is None else float(t)
        if not math.isfinite(t):
            raise RobalignError(f"feed time must be a finite clock reading in seconds; got {t!r}")
        self._newest = max(self._newest, t)

    def poll(self) -> str:
        """"OK", "HOLD" or "STOP" now."""
        return self._update(self.clock())

    def _update(self, now: float) -> str:
        age = now - self._newest
        if self._stopped or age > self.hold_after + self.stop_after:
            self._stopped = True
            return STOP
        return HOLD if age > self.hold_after else OK
