"""A user's wandering plan (persona `wandering:`) and the lab's clock for time-of-day rules
(`platform.local_time`): the night window, the clock, what the reference lab is given, the rule it applies,
and the mistakes a tester can make writing them."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from harness.errors import InputError
from harness.lab.alarm import LabAlarm
from harness.lab.config import LabConfig
from harness.lab.router import Router
from harness.lab.wandering import LocalClock, WanderingPlan, in_window
from harness.labfile import Wandering, load_lab
from harness.reference_lab import _device_settings
from tests.helpers import LAB, ROOT, memory_lab

USERS = ROOT / "fixtures" / "users" / "personas.yaml"
H = 3600


@pytest.mark.parametrize(("at", "night"), [
    (21 * H + 59 * 60, False), (22 * H, True), (23 * H + 59 * 60, True), (0, True), (3 * H, True),
    (6 * H + 59 * 60 + 59, True), (7 * H, False), (14 * H, False), (24 * H + 3 * H, True),  # wraps at midnight
])
def test_a_night_window_across_midnight_takes_its_start_and_not_its_end(at: int, night: bool) -> None:
    assert in_window(at, "22:00", "07:00") is night


@pytest.mark.parametrize(("at", "inside"), [(0, False), (H, True), (4 * H + 59 * 60, True), (5 * H, False)])
def test_a_window_within_one_day(at: int, inside: bool) -> None:
    assert in_window(at, "01:00", "05:00") is inside


def test_a_set_clock_starts_at_its_time_and_runs_on_past_midnight() -> None:
    now = [1000.0]
    clock = LocalClock("23:59", monotonic=lambda: now[0])
    assert clock.is_set and clock.seconds_of_day() == 23 * H + 59 * 60
    now[0] += 90  # a minute and a half later: 00:00:30 the next day
    assert clock.seconds_of_day() == 30


def test_an_unset_clock_is_the_machines_time_in_oslo() -> None:
    asked: list[ZoneInfo] = []

    def wall(zone: ZoneInfo) -> datetime.datetime:
        asked.append(zone)
        return datetime.datetime(2026, 11, 24, 3, 15, 30, tzinfo=zone)

    clock = LocalClock(None, wall=wall)
    assert not clock.is_set and clock.seconds_of_day() == 3 * H + 15 * 60 + 30
    assert str(asked[0]) == "Europe/Oslo"
    real = LocalClock(None).seconds_of_day()  # the real machine clock, read in Oslo
    oslo = datetime.datetime.now(ZoneInfo("Europe/Oslo"))
    apart = abs(real - (oslo.hour * H + oslo.minute * 60 + oslo.second)) % (24 * H)
    assert min(apart, 24 * H - apart) < 60  # the same clock read twice (a busy machine may pause between)


def test_the_persona_plan_is_read_and_normalised() -> None:
    plan = Wandering.model_validate({"night": "22:00 - 07:00", "events": ["door_open"]})
    assert plan.night == "22:00-07:00" and plan.window == ("22:00", "07:00")


@pytest.mark.parametrize(("bad", "words"), [
    ({"night": "22-07", "events": ["door_open"]}, "HH:MM"),
    ({"night": "24:00-07:00", "events": ["door_open"]}, "HH:MM"),
    ({"night": "22:00", "events": ["door_open"]}, "HH:MM-HH:MM"),
    ({"night": "22:00-22:00", "events": ["door_open"]}, "same time"),
    ({"night": 1320, "events": ["door_open"]}, "HH:MM-HH:MM"),
    ({"night": "22:00-07:00", "events": []}, "e.g. events: [door_open]"),
    ({"night": "22:00-07:00", "events": ["door_opn"]}, "did you mean `door_open`"),
])
def test_a_wrong_plan_is_refused_with_the_fix(bad: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError) as info:  # pydantic carries the InputError's problem and fix
        Wandering.model_validate(bad)
    assert words in str(info.value)


def test_a_wrong_plan_in_the_users_file_names_the_file_and_line(tmp_path: Path) -> None:
    text = USERS.read_text(encoding="utf-8").replace('night: "22:00-07:00"', 'night: "22:00-31:00"')
    users = tmp_path / "personas.yaml"
    users.write_text(text, encoding="utf-8")
    lab = yaml.safe_load(memory_lab(tmp_path).read_text(encoding="utf-8"))
    lab["users"] = str(users)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(lab, allow_unicode=True), encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_lab(path)
    line = next(i for i, x in enumerate(text.splitlines(), 1) if "31:00" in x)
    assert info.value.place is not None and info.value.place.source.endswith("personas.yaml")
    assert info.value.place.line == line and "22:00" in (info.value.fix or "")


def _lab_with_platform(tmp_path: Path, **platform: Any) -> Path:
    data = yaml.safe_load(memory_lab(tmp_path).read_text(encoding="utf-8"))
    data["platform"] = platform
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_local_time_is_refused_for_an_external_platform(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_lab(_lab_with_platform(tmp_path, kind="external", local_time="03:00"))
    assert "local_time" in info.value.problem and "local_time" in (info.value.fix or "")


@pytest.mark.parametrize(("value", "words"), [(840, 'quote the time, e.g. "14:00"'), ("3:00", "HH:MM"),
                                              ("25:00", "HH:MM"), ("03:00:00", "HH:MM")])
def test_a_local_time_that_is_no_time_of_day_is_refused(tmp_path: Path, value: Any, words: str) -> None:
    with pytest.raises(InputError) as info:
        load_lab(_lab_with_platform(tmp_path, kind="embedded", local_time=value))
    assert words in f"{info.value.problem} {info.value.fix}" and info.value.place is not None


def test_unquoted_yaml_time_is_caught(tmp_path: Path) -> None:
    """YAML 1.1 reads `local_time: 14:00` as 840 (minutes): the tester is told to quote it."""
    path = _lab_with_platform(tmp_path, kind="embedded")
    path.write_text(path.read_text(encoding="utf-8").replace("kind: embedded", "kind: embedded\n  local_time: 14:00"))
    with pytest.raises(InputError, match="840"):
        load_lab(path)


def test_the_reference_lab_gets_the_plan_per_device_and_the_clock() -> None:
    lab = load_lab(LAB)
    assert lab.spec.platform.local_time == "03:00"
    door = _device_settings(lab, "dor-kari")
    assert door.wandering == WanderingPlan(start="22:00", end="07:00", events=("door_open",))
    assert _device_settings(lab, "sa-kari").wandering == door.wandering  # the user's plan, on each of her devices
    assert _device_settings(lab, "sa-ragnhild").wandering is None


def _router(local_time: str, plan: WanderingPlan | None) -> Router:
    config = LabConfig.model_validate({"devices": {"dor": {"user": "u", "centre": "c",
                                                           "wandering": plan.model_dump() if plan else None}},
                                       "local_time": local_time})
    return Router(config, "mqtt://127.0.0.1:1")


def _door(event: str = "door_open") -> LabAlarm:
    return LabAlarm(id="x", ingress="gateway", device="dor", centre="", code="134", qualifier="1", event=event,
                    priority=1, received_epoch_s=0.0)


PLAN = WanderingPlan(start="22:00", end="07:00", events=("door_open",))


def test_the_rule_routes_a_plan_event_at_night_and_only_records_it_in_the_day() -> None:
    assert _router("03:00", PLAN)._outside_night(_door()) is None  # night: routed as an alarm
    day = _router("14:00", PLAN)._outside_night(_door())
    assert day is not None and day["night"] == "22:00-07:00" and day["local_time"] == "14:00"


def test_the_rule_leaves_other_events_and_users_without_a_plan_alone() -> None:
    assert _router("14:00", PLAN)._outside_night(_door("door_closed")) is None
    assert _router("14:00", None)._outside_night(_door()) is None
