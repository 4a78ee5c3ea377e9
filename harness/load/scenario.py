"""Load scenario files: `title`, `covers` and `criteria` as in a functional scenario, plus `load:` (the
shape of the fleet's traffic). A file with a top-level `load:` key is a load scenario; the functional
collector leaves it alone and `vtlab load` runs it.

    title: Hele flåten hjerteslag og 20 alarmer/s
    covers: [TA-4.1]
    load: {shape: steady, devices: 200, rate: 20/s, duration: 30s, heartbeat: 60s}
    criteria:
      - {metric: lost, count: "== 0"}
      - {metric: alarm_latency, p99: "<= 30s"}
      - {metric: throughput, rate: ">= 18/s"}

Criteria are resolved by the functional loader's own rule (harness.scenario.loader), so a limit means
the same in both; the time metrics a load run measures are `alarm_latency` (intended send -> arrival at
the response centre), `connect_time` (each device: start of the connect phase -> connected; a device that
never connects is censored above any limit) and, with a storm, `storm_recovery` (end of the storm window
-> the last storm alarm delivered).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.contract import Contract
from harness.errors import InputError
from harness.load.shapes import RateCurve, Schedule, Storm, morning_peak, ramp, steady
from harness.scenario.plan import Criterion
from harness.scenario.registry import device_models, suggest
from harness.units import parse_bounded_duration, parse_duration, parse_rate
from harness.yamlfile import SourceFile, load_yaml

LOAD_TIME_METRICS = ("alarm_latency", "connect_time")
STORM_METRIC = "storm_recovery"
ACK_METRIC = "ack_latency"
MAX_DEVICES = 200_000
H = 3600 * 1_000_000_000

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _rate_or_zero(v: str) -> str:
    if str(v).strip() not in ("0", "0/s"):
        parse_rate(v)
    return v


def _dur(v: str | None) -> str | None:
    if v is not None:
        parse_duration(v)
    return v


def _text(v: Any) -> Any:
    """A bare number (`duration: 5`) reaches the duration/rate parser, whose message says what to write."""
    return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StormSpec(_Model):
    """A power cut and its restore: many devices report within a short window."""

    at: str = Field("0s", description="When the storm starts, counted from the start of the schedule")
    devices: int | str = Field("100%", description="How many devices report: a number, or a share like 100%")
    within: str = Field(description="The window in which they all report, e.g. 60s")
    event: str | None = Field(None, description="Event they send; default: the load's `event`")

    _t = field_validator("at", "within", mode="before")(_text)
    _d = field_validator("at", "within")(_dur)

    @field_validator("devices", mode="before")
    @classmethod
    def _no_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):  # YAML `true` would otherwise be read as 1 device
            raise ValueError("write a number of devices (e.g. 500) or a share (e.g. 100%), not true/false")
        return v


class PeakSpec(_Model):
    """The morning peak: the rate rises from the base `rate` to `rate` here and falls back."""

    rate: str = Field(description="Peak fleet rate, e.g. 200/s")
    at: str = Field(description="When the rise starts")
    length: str = Field(description="How long the peak holds")
    rise: str = Field("0s", description="How long the rise (and the fall) takes")

    _t = field_validator("rate", "at", "length", "rise", mode="before")(_text)
    _r = field_validator("rate")(_rate_or_zero)
    _d = field_validator("at", "length", "rise")(_dur)


class LoadSpec(_Model):
    """The traffic of a load scenario (an open model: the schedule never waits for the platform)."""

    shape: Literal["steady", "ramp", "storm", "morning_peak"] = Field(description="The load shape")
    devices: int = Field(ge=1, le=MAX_DEVICES, description="Simulated devices, connected for the whole run")
    model: str = Field("safety_alarm", description="Device model of the fleet (its events and codes)")
    via: Literal["mqtt", "dc09", "scaip"] = Field(
        "mqtt",
        description="What the fleet's devices speak to the platform: mqtt (JSON events, cid-correlated), dc09 "
        "(ADM-CID over SIA DC-09) or scaip (<mrq> over SIP MESSAGE); DC-09 and SCAIP alarms are correlated by "
        "device, Contact ID code and a zone number per alarm. Transport, key and timeouts come from the lab "
        "file's own device of that protocol",
    )
    centres: Literal["mqtt", "dc09", "scaip"] = Field(
        "mqtt",
        description="How the observed response centres receive: mqtt (the lab's JSON on the centre's topic), dc09 "
        "(an alarm receiving centre on SIA DC-09, ADM-CID or SIA-DCS) or scaip; the fleet's users are those whose "
        "centre has a response-centre probe of that kind in the lab file. dc09 and scaip need a dc09 or scaip fleet "
        "(the alarm's zone number is what names it at such a centre)",
    )
    event: str = Field("button_press", description="Device-model event the alarms are")
    rate: str = Field("0/s", description="Fleet alarm rate (steady; the end of a ramp; the base of the others)")
    rate_from: str = Field("0/s", alias="from", description="Ramp only: the rate at the start")
    duration: str = Field(description="How long alarms are sent")
    heartbeat: str = Field("60s", description="Each device's heartbeat interval")
    within: str = Field("30s", description="An alarm arriving later than this after its intended send is late")
    drain: str | None = Field(
        None,
        description="The longest the run waits after the schedule's end for alarms still out (default: `within`, so "
        "every alarm is judged against its limit). The run ends as soon as nothing is out. With a drain shorter than "
        "`within`, an alarm still inside its limit when the drain ends is neither lost nor delivered: the run is "
        "incomplete",
    )
    connect: str | None = Field(
        None, description="Time the fleet has to connect before the schedule starts (default: 2s + 10ms per device)"
    )
    max_lag: str = Field("100ms", description="The generator fell behind when its p99 send lag exceeds this")
    max_cpu: str = Field("90%", description="... or when a generator process used more of a core than this")
    acknowledge: bool = Field(
        True,
        description="The response-centre probe acknowledges each alarm as an operator "
        "would; the acknowledgement reaching the device is measured as `ack_latency`",
    )
    storm: StormSpec | None = None
    peak: PeakSpec | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    _t = field_validator(
        "rate", "rate_from", "duration", "heartbeat", "within", "drain", "connect", "max_lag", "max_cpu", mode="before"
    )(_text)
    _r = field_validator("rate", "rate_from")(_rate_or_zero)
    _d = field_validator("duration", "heartbeat", "within", "drain", "max_lag")(_dur)


class LoadScenarioFile(_Model):
    """One capacity scenario (`vtlab load`)."""

    title: str
    description: str = ""
    covers: list[str] = Field(min_length=1, description="Requirement ids from the contract")
    load: LoadSpec
    criteria: list[dict[str, Any]] = Field(min_length=1, description="Acceptance criteria on the metrics")


def is_load_scenario(data: Any) -> bool:
    """The rule the functional collector uses to leave a file to `vtlab load`: a top-level `load:` key."""
    return isinstance(data, dict) and "load" in data


def is_load_scenario_file(path: Path) -> bool:
    """For the functional collector: does this YAML file hold a load scenario (top-level `load:`)? A file
    that cannot be read or parsed is not one (the functional loader then reports what is wrong with it)."""
    try:
        return is_load_scenario(load_yaml(path, "scenario").data)
    except Exception:
        return False


@dataclass(slots=True)
class LoadPlan:
    """A load scenario resolved against the contract: its schedule and criteria."""

    id: str
    path: Path
    spec: LoadScenarioFile
    source: SourceFile
    schedule: Schedule
    event: str
    storm_event: str | None
    heartbeat_ns: int
    within_ns: int
    drain_ns: int
    connect_ns: int
    max_lag_ns: int
    max_cpu: float  # fraction of one core
    criteria: list[Criterion] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def covers(self) -> list[str]:
        return list(self.spec.covers)

    @property
    def devices(self) -> int:
        return self.schedule.devices

    def definition(self) -> dict[str, Any]:
        """The scenario as loaded, for the evidence store (the report reads `load` from it)."""
        data = self.spec.model_dump(mode="json", by_alias=True)
        data["kind"] = "load"
        data["resolved_load"] = {
            "devices": self.devices,
            "planned_alarms": self.schedule.planned(),
            "duration_s": self.schedule.duration_ns / 1e9,
            "asked_per_second": self.schedule.asked_per_second(),
            "heartbeat_s": self.heartbeat_ns / 1e9,
            "within_s": self.within_ns / 1e9,
        }
        return data


_OPTION_OF = {"devices": "--users", "rate": "--rate", "duration": "--duration"}


def _check_overrides(overrides: dict[str, Any]) -> None:
    """A bad command-line value is named by its option, not by the file line it would replace."""
    for key, value in overrides.items():
        option = _OPTION_OF.get(key, f"--{key}")
        if key == "devices":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DEVICES:
                raise InputError(
                    f"{value!r} is not a fleet size",
                    place=option,
                    fix=f"give a whole number of devices from 1 to {MAX_DEVICES}",
                )
        elif key == "rate":
            _rate(str(value), option)
        elif key == "duration":
            parse_bounded_duration(str(value), option, low_ns=1_000_000, high_ns=24 * H, what="a load duration")


def _rate(text: str, place: Any) -> float:
    return 0.0 if str(text).strip() in ("0", "0/s") else parse_rate(text, place)


def build_schedule(spec: LoadSpec, src: SourceFile | None = None) -> Schedule:
    """The schedule of `spec` (InputError naming the key when the shape lacks what it needs)."""

    def place(*loc: str) -> Any:
        return src.place("load", *loc) if src is not None else "load." + ".".join(loc)

    duration = parse_bounded_duration(
        spec.duration, place("duration"), low_ns=1_000_000, high_ns=24 * H, what="a load duration"
    )
    rate = _rate(spec.rate, place("rate"))
    curve: RateCurve
    storm: Storm | None = None
    if spec.shape != "storm" and spec.storm is not None:
        raise InputError(
            "`storm:` only belongs to `shape: storm`",
            place=place("storm"),
            fix="remove `storm:`, or write `shape: storm`",
        )
    if spec.shape != "morning_peak" and spec.peak is not None:
        raise InputError(
            "`peak:` only belongs to `shape: morning_peak`",
            place=place("peak"),
            fix="remove `peak:`, or write `shape: morning_peak`",
        )
    if spec.shape == "steady":
        if rate <= 0:
            raise InputError("a steady load needs a rate above 0", place=place("rate"), fix="write e.g. `rate: 20/s`")
        curve = steady(rate, duration)
    elif spec.shape == "ramp":
        start = _rate(spec.rate_from, place("from"))
        if rate <= 0 and start <= 0:
            raise InputError(
                "a ramp from 0/s to 0/s sends nothing",
                place=place("rate"),
                fix="write e.g. `from: 0/s` and `rate: 100/s`",
            )
        curve = ramp(start, rate, duration)
    elif spec.shape == "morning_peak":
        if spec.peak is None:
            raise InputError(
                "a morning peak needs `peak:`",
                place=place("shape"),
                fix="add `peak: {rate: 200/s, at: 10s, length: 20s, rise: 5s}`",
            )
        p = spec.peak
        curve = morning_peak(
            rate,
            _rate(p.rate, place("peak", "rate")),
            duration,
            *(_offset(getattr(p, key), place("peak", key), f"`peak.{key}`") for key in ("at", "length", "rise")),
        )
    else:
        if spec.storm is None:
            raise InputError(
                "a storm needs `storm:`", place=place("shape"), fix="add `storm: {devices: 100%, within: 60s, at: 5s}`"
            )
        s = spec.storm
        count = _storm_devices(s.devices, spec.devices, place("storm", "devices"))
        within = parse_bounded_duration(
            s.within, place("storm", "within"), low_ns=1_000_000, high_ns=24 * H, what="a storm window"
        )
        curve = steady(rate, duration)
        storm = Storm(_offset(s.at, place("storm", "at"), "`storm.at`"), count, within, s.event or spec.event)
    return Schedule(curve, spec.devices, storm)


def _offset(text: str, place: Any, what: str) -> int:
    """A time within the schedule (when a storm or a peak starts, how long a peak lasts): at most a day, so the
    schedule, and its per-second plot, stay as long as a load duration may be."""
    return parse_bounded_duration(text, place, low_ns=0, high_ns=24 * H, what=what)


def _storm_devices(value: int | str, devices: int, place: Any) -> int:
    if isinstance(value, bool):  # YAML `true` is not a number of devices (Python would read it as 1)
        raise InputError(
            f"`{value}` is neither a number of devices nor a share", place=place, fix="write e.g. 500 or 100%"
        )
    if isinstance(value, int):
        count = value
    else:
        m = _PERCENT.match(value)
        if not m:
            raise InputError(
                f"`{value}` is neither a number of devices nor a share", place=place, fix="write e.g. 500 or 100%"
            )
        share = float(m.group(1))
        if not 0 < share <= 100:
            raise InputError(
                f"a storm of `{value}` of the fleet", place=place, fix="write a share above 0% and at most 100%"
            )
        count = round(devices * share / 100.0)
    if not 1 <= count <= devices:
        raise InputError(
            f"a storm of {count} devices in a fleet of {devices}",
            place=place,
            fix=f"write between 1 and {devices} devices (or a share up to 100%)",
        )
    return count


def _fraction(text: str, place: Any) -> float:
    m = _PERCENT.match(str(text))
    if not m or not 0 < float(m.group(1)) <= 100:
        raise InputError(f"`{text}` is not a share of a core", place=place, fix="write e.g. 90%")
    return float(m.group(1)) / 100.0


def load_load_scenario(
    path: Path, contract: Contract, scenario_id: str | None = None, overrides: dict[str, Any] | None = None
) -> LoadPlan:
    """Load and resolve a load scenario; every mistake is an InputError at its line. `overrides` replaces
    keys of `load:` (the CLI's --users, --rate, --duration)."""
    src = load_yaml(path, "load scenario")
    if not is_load_scenario(src.data):
        raise InputError(
            "this is not a load scenario: it has no top-level `load:`",
            place=src.place(),
            fix="run functional scenarios with `vtlab run`; a load scenario has `load: {shape: ...}`",
        )
    if overrides:
        _check_overrides(overrides)
        data = dict(src.data)
        if not isinstance(data.get("load") or {}, dict):
            src.validate(LoadScenarioFile)  # names what is wrong with `load:` at its line
        data["load"] = {**(data.get("load") or {}), **overrides}
        spec = src.validate(LoadScenarioFile, data=data)
    else:
        spec = src.validate(LoadScenarioFile)
    for i, req in enumerate(spec.covers):
        if contract.get(req) is None:
            raise InputError(
                f"unknown requirement id `{req}`",
                place=src.place("covers", i),
                fix=f"{suggest(req, contract.ids)}use ids from the contract {contract.contract.id}",
            )
    load = spec.load
    models = device_models()
    if load.model not in models:
        raise InputError(
            f"unknown device model `{load.model}`",
            place=src.place("load", "model"),
            fix=f"{suggest(load.model, models)}use one of {sorted(models)}",
        )
    events = models[load.model].events
    for key, name in (("event", load.event), ("storm", load.storm.event if load.storm else None)):
        if name is None:
            continue
        if name not in events or not events[name].wire:
            wire = sorted(e for e, s in events.items() if s.wire)
            raise InputError(
                f"device model `{load.model}` sends no event `{name}`",
                place=src.place("load", key),
                fix=f"use one of {wire}",
            )
    if load.centres != "mqtt" and load.via == "mqtt":
        raise InputError(
            f"an MQTT fleet cannot be observed at {load.centres} centres: its alarms carry no zone number, the only "
            "thing that tells two alarms of a device apart there",
            place=src.place("load", "centres"),
            fix="write `via: dc09` or `via: scaip` for the fleet, or `centres: mqtt`",
        )
    schedule = build_schedule(load, src)
    connect = (
        parse_bounded_duration(
            load.connect, src.place("load", "connect"), low_ns=1_000_000, high_ns=H, what="`connect`"
        )
        if load.connect
        else 2_000_000_000 + 10_000_000 * load.devices
    )
    within_ns = parse_bounded_duration(load.within, src.place("load", "within"), what="`within`")
    drain_ns = (  # by default every alarm's limit has passed when the drain ends (it ends early when nothing is out)
        within_ns
        if load.drain is None
        else parse_bounded_duration(load.drain, src.place("load", "drain"), low_ns=0, high_ns=H, what="a drain")
    )
    plan = LoadPlan(
        id=scenario_id or str(path),
        path=path,
        spec=spec,
        source=src,
        schedule=schedule,
        event=load.event,
        storm_event=schedule.storm.event if schedule.storm else None,
        heartbeat_ns=parse_bounded_duration(
            load.heartbeat, src.place("load", "heartbeat"), low_ns=100_000_000, what="a heartbeat interval"
        ),
        within_ns=within_ns,
        drain_ns=drain_ns,
        connect_ns=connect,
        max_lag_ns=parse_bounded_duration(load.max_lag, src.place("load", "max_lag"), what="`max_lag`"),
        max_cpu=_fraction(load.max_cpu, src.place("load", "max_cpu")),
    )
    _resolve_criteria(plan)
    return plan


def time_metrics(plan: LoadPlan) -> list[str]:
    load = plan.spec.load
    return [
        *LOAD_TIME_METRICS,
        *([STORM_METRIC] if plan.schedule.storm else []),
        # the device-side acknowledgement is measured on MQTT only (DC-09's ACK and SCAIP's <mrs> answer receipt)
        *([ACK_METRIC] if load.acknowledge and load.via == load.centres == "mqtt" else []),
    ]


def _resolve_criteria(plan: LoadPlan) -> None:
    """The functional loader's criteria rule, fed with the load run's time metrics."""
    from harness.scenario.loader import resolve_criteria

    plan.criteria.extend(resolve_criteria(plan.source, plan.spec.criteria, plan.spec.covers, time_metrics(plan)))


__all__ = [
    "LOAD_TIME_METRICS",
    "STORM_METRIC",
    "LoadPlan",
    "LoadScenarioFile",
    "LoadSpec",
    "build_schedule",
    "is_load_scenario",
    "load_load_scenario",
    "time_metrics",
]
