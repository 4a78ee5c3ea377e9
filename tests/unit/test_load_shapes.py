"""Load shapes are open-model schedules fixed before the run: exact counts, even spacing, every storm
device exactly once inside its window, and the fleet's alarms split over devices without gaps."""

from __future__ import annotations

import heapq
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.load.shapes import NS, RateCurve, Schedule, Storm, heartbeat_times, morning_peak, ramp, steady


def fleet_times(schedule: Schedule) -> list[int]:
    return list(heapq.merge(*(schedule.device_times(s) for s in range(schedule.devices))))


def test_steady_is_exactly_rate_times_duration_evenly_spaced() -> None:
    sched = Schedule(steady(100.0, 10 * NS), devices=7)
    times = fleet_times(sched)
    assert len(times) == 1000 == sched.planned()
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert max(gaps) - min(gaps) <= 2  # 10 ms apart, to the nanosecond's rounding
    assert times[0] == 5_000_000  # the first alarm half a gap in: (j + 1/2) / rate


def test_each_device_sends_every_nth_fleet_alarm() -> None:
    sched = Schedule(steady(50.0, 2 * NS), devices=4)
    per_device = [list(sched.device_times(s)) for s in range(4)]
    assert [len(t) for t in per_device] == [25, 25, 25, 25]
    fleet = fleet_times(sched)
    assert per_device[1] == fleet[1::4]


def test_ramp_sends_the_area_under_the_rate() -> None:
    sched = Schedule(ramp(0.0, 40.0, 10 * NS), devices=10)
    times = fleet_times(sched)
    assert len(times) == 200  # (0 + 40) / 2 * 10 s
    first_half = sum(1 for t in times if t < 5 * NS)
    assert first_half == 50  # a quarter of the area lies in the first half of a ramp from 0


def test_morning_peak_holds_the_peak_and_returns_to_base() -> None:
    curve = morning_peak(5.0, 30.0, 12 * NS, 3 * NS, 4 * NS, 2 * NS)
    assert curve.rate(1 * NS) == 5.0
    assert curve.rate(6 * NS) == 30.0
    assert curve.rate(11 * NS) == 5.0
    # 5/s base over 12 s = 60, plus the peak's extra: rise and fall triangles (2 x 25 x 2 / 2) + hold 25 x 4
    assert curve.total == pytest.approx(60 + 50 + 100)
    assert Schedule(curve, 40).background_count() == 210


def test_storm_every_chosen_device_reports_once_inside_the_window() -> None:
    storm = Storm(at_ns=2 * NS, devices=37, within_ns=5 * NS, event="low_battery")
    sched = Schedule(steady(5.0, 10 * NS), devices=60, storm=storm)
    chosen = [sched.storm_slot(s) for s in range(60)]
    hits = [c for c in chosen if c is not None]
    assert len(hits) == 37
    assert sorted(i for i, _ in hits) == list(range(37))
    assert all(2 * NS <= t < 7 * NS for _, t in hits)
    assert sched.planned() == 50 + 37


def test_asked_per_second_adds_up_to_the_plan() -> None:
    storm = Storm(at_ns=2 * NS, devices=60, within_ns=5 * NS, event="low_battery")
    sched = Schedule(steady(5.0, 10 * NS), devices=60, storm=storm)
    assert sum(sched.asked_per_second()) == pytest.approx(sched.planned())


def test_heartbeats_are_spread_over_the_interval() -> None:
    firsts = sorted(next(heartbeat_times(s, 10, 10 * NS, 100 * NS)) for s in range(10))
    assert firsts == [(2 * s + 1) * NS // 2 for s in range(10)]


def test_a_rate_curve_refuses_going_back_in_time() -> None:
    with pytest.raises(ValueError):
        RateCurve(((0, 1.0), (5, 1.0), (3, 1.0)))


@settings(max_examples=60, deadline=None)
@given(devices=st.integers(1, 300), rate=st.floats(0.5, 400.0), seconds=st.integers(1, 30), start=st.floats(0.0, 200.0))
def test_the_fleet_sends_exactly_the_planned_alarms_for_any_fleet(
    devices: int, rate: float, seconds: int, start: float
) -> None:
    sched = Schedule(ramp(start, rate, seconds * NS), devices)
    times = fleet_times(sched)
    assert len(times) == sched.background_count()
    assert all(0 <= t <= seconds * NS for t in times)
    assert times == sorted(times)
