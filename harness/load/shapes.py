"""Open-model load shapes as pure schedules: when each simulated device sends, fixed before the run.

The arrival rate never depends on the platform's answers (an open model), so a slow platform cannot slow
the test down and hide its latency: every alarm has an *intended* send time, and latency is counted
from it (no coordinated omission). Schedules are deterministic and evenly spread: with a fleet rate
r(t) and cumulative count L(t) = integral of r, the fleet's j-th alarm is due where L(t) = j + 1/2,
and device `slot` of N sends alarms j = slot, slot + N, slot + 2N ... So a steady 100/s over 10 s is
exactly 1000 alarms, 10 ms apart, whatever the fleet size, and no two devices send in lockstep.

Pure: no clocks, no I/O. Times are nanoseconds from the schedule's start (t = 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class RateCurve:
    """A piecewise-linear fleet rate: `points` are (t_ns, alarms/s), t ascending from 0; the rate is 0
    after the last point."""

    points: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        if not self.points or self.points[0][0] != 0:
            raise ValueError("a rate curve starts at t = 0")
        for (t0, r0), (t1, r1) in zip(self.points, self.points[1:], strict=False):
            if t1 < t0 or r0 < 0 or r1 < 0:
                raise ValueError("rate curve points must ascend in time with rates >= 0")

    @property
    def end_ns(self) -> int:
        return self.points[-1][0]

    def rate(self, t_ns: int) -> float:
        """Alarms per second at `t_ns`."""
        for (t0, r0), (t1, r1) in zip(self.points, self.points[1:], strict=False):
            if t0 <= t_ns < t1:
                return r0 + (r1 - r0) * (t_ns - t0) / (t1 - t0)
        return 0.0

    def cumulative(self, t_ns: int) -> float:
        """Alarms due in [0, t_ns)."""
        total = 0.0
        for (t0, r0), (t1, r1) in zip(self.points, self.points[1:], strict=False):
            if t_ns <= t0:
                break
            end = min(t_ns, t1)
            r_end = r0 + (r1 - r0) * (end - t0) / (t1 - t0) if t1 > t0 else r0
            total += (r0 + r_end) / 2 * (end - t0) / NS
        return total

    @property
    def total(self) -> float:
        return self.cumulative(self.end_ns)

    def time_of(self, count: float) -> int | None:
        """The t_ns at which cumulative() reaches `count`; None beyond the curve."""
        done = 0.0
        for (t0, r0), (t1, r1) in zip(self.points, self.points[1:], strict=False):
            span_s = (t1 - t0) / NS
            area = (r0 + r1) / 2 * span_s
            if done + area >= count and area > 0:
                need = count - done
                slope = (r1 - r0) / span_s if span_s else 0.0  # alarms/s per second
                # need = r0 x + slope x^2 / 2 (x seconds into the piece)
                flat = abs(slope) < 1e-12
                x = need / r0 if flat else (-r0 + math.sqrt(max(0.0, r0 * r0 + 2 * slope * need))) / slope
                return t0 + round(min(max(x, 0.0), span_s) * NS)
            done += area
        return None


@dataclass(frozen=True, slots=True)
class Storm:
    """`devices` devices each send one alarm within `within_ns`, starting at `at_ns` (a power cut after
    which every unit reports), then the background rate goes on (the restore)."""

    at_ns: int
    devices: int
    within_ns: int
    event: str


@dataclass(frozen=True, slots=True)
class Schedule:
    """The whole load: a background rate curve, an optional storm, over `devices` devices."""

    curve: RateCurve
    devices: int
    storm: Storm | None = None

    @property
    def duration_ns(self) -> int:
        end = self.curve.end_ns
        if self.storm is not None:
            end = max(end, self.storm.at_ns + self.storm.within_ns)
        return end

    def background_count(self) -> int:
        """How many background alarms the fleet sends in all (exactly)."""
        return math.floor(self.curve.total + 0.5)

    def storm_slot(self, slot: int) -> tuple[int, int] | None:
        """(index among storm devices, due t_ns) when `slot` reports in the storm, else None. Exactly
        `storm.devices` slots report, spread evenly over the fleet and over the storm window."""
        s = self.storm
        if s is None or s.devices <= 0:
            return None
        k, n = s.devices, self.devices
        lo, hi = (slot * k) // n, ((slot + 1) * k) // n
        if hi == lo:
            return None
        index = hi - 1
        return index, s.at_ns + (2 * index + 1) * s.within_ns // (2 * k)

    def device_times(self, slot: int) -> Iterator[int]:
        """Due times (ns) of `slot`'s background alarms, ascending: fleet alarm j = slot + k*N."""
        total = self.curve.total
        j = slot
        while j + 0.5 <= total:
            t = self.curve.time_of(j + 0.5)
            if t is None:
                return
            yield t
            j += self.devices

    def planned(self) -> int:
        """Alarms the schedule asks for (background + storm)."""
        return self.background_count() + (self.storm.devices if self.storm else 0)

    def asked_per_second(self) -> list[float]:
        """The asked fleet rate in each whole second (for the shape-asked-versus-delivered plot)."""
        seconds = math.ceil(self.duration_ns / NS)
        out = []
        for s in range(seconds):
            rate = self.curve.cumulative((s + 1) * NS) - self.curve.cumulative(s * NS)
            if self.storm is not None and self.storm.devices:
                a, w, k = self.storm.at_ns, self.storm.within_ns, self.storm.devices
                overlap = max(0, min((s + 1) * NS, a + w) - max(s * NS, a))
                rate += k * overlap / w if w else 0.0
            out.append(rate)
        return out


def steady(rate: float, duration_ns: int) -> RateCurve:
    return RateCurve(((0, rate), (duration_ns, rate)))


def ramp(rate_from: float, rate_to: float, duration_ns: int) -> RateCurve:
    return RateCurve(((0, rate_from), (duration_ns, rate_to)))


def morning_peak(
    base: float, peak: float, duration_ns: int, peak_at_ns: int, peak_len_ns: int, rise_ns: int
) -> RateCurve:
    """The morning medication round: `base`, rising over `rise` to `peak` at `peak_at`, held for
    `peak_len`, falling back over `rise`, then `base` to the end."""
    a = min(peak_at_ns, duration_ns)
    b = min(a + rise_ns, duration_ns)
    c = min(b + peak_len_ns, duration_ns)
    d = min(c + rise_ns, duration_ns)
    points = [(0, base), (a, base), (b, peak), (c, peak), (d, base), (duration_ns, base)]
    clean: list[tuple[int, float]] = []
    for t, r in points:
        if clean and clean[-1][0] == t:
            continue  # zero-length piece
        clean.append((t, r))
    return RateCurve(tuple(clean))


def heartbeat_times(slot: int, devices: int, interval_ns: int, end_ns: int) -> Iterator[int]:
    """Heartbeats of `slot`, phase-spread over the fleet so the fleet's heartbeats are even, not bursts."""
    t = (2 * slot + 1) * interval_ns // (2 * max(devices, 1))
    while t < end_ns:
        yield t
        t += interval_ns


__all__ = ["RateCurve", "Schedule", "Storm", "heartbeat_times", "morning_peak", "ramp", "steady"]
