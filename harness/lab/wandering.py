"""Time-of-day rules of the reference lab: a user's wandering plan (vandringsplan) and the lab's wall clock.

A door opening is an alarm for a user with a wandering plan only in the plan's night; in the day the lab
records it and raises none. Whether it is night is read from the lab's local clock: the machine's local time
in Europe/Oslo, or, when the lab file sets `platform.local_time`, a clock that starts at that time of day when
the lab starts and runs on (so a test run in the afternoon can be "at 03:00").
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HHMM", "LocalClock", "WanderingPlan", "hhmm", "in_window", "minutes"]

HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
DAY_S = 24 * 3600


def minutes(hhmm: str) -> int:
    """Minutes after midnight of a time of day `HH:MM`."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def hhmm(seconds_of_day: float) -> str:
    """A time of day as HH:MM (seconds dropped)."""
    s = int(seconds_of_day) % DAY_S
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}"


def in_window(seconds_of_day: float, start: str, end: str) -> bool:
    """Whether a time of day lies in [start, end); an end before the start crosses midnight."""
    t, a, b = seconds_of_day % DAY_S, minutes(start) * 60, minutes(end) * 60
    return a <= t < b if a < b else (t >= a or t < b)


class WanderingPlan(BaseModel):
    """A user's wandering plan as the lab applies it: `events` are alarms only from `start` to `end` (local
    time; an end before the start crosses midnight); outside that they are recorded, not routed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field(pattern=HHMM, description="the night begins, HH:MM local time")
    end: str = Field(pattern=HHMM, description="the night ends, HH:MM local time")
    events: tuple[str, ...] = Field(min_length=1, description="device events the plan is about, e.g. door_open")

    @property
    def night(self) -> str:
        return f"{self.start}-{self.end}"

    def at_night(self, seconds_of_day: float) -> bool:
        return in_window(seconds_of_day, self.start, self.end)


class LocalClock:
    """The lab's wall clock for time-of-day rules: seconds after local midnight.

    `start` None: the machine's clock in `timezone`. `start` "HH:MM": that time of day when the clock is made
    (the lab starts), running on at the pace of the monotonic clock (it wraps at midnight)."""

    def __init__(self, start: str | None = None, timezone: str = "Europe/Oslo", *,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[ZoneInfo], datetime.datetime] = datetime.datetime.now) -> None:
        self.start = start
        self.zone = ZoneInfo(timezone)
        self._monotonic = monotonic
        self._wall = wall
        self._origin = monotonic()

    @property
    def is_set(self) -> bool:
        return self.start is not None

    def seconds_of_day(self) -> float:
        if self.start is not None:
            return (minutes(self.start) * 60 + self._monotonic() - self._origin) % DAY_S
        now = self._wall(self.zone)
        return now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
