"""A scenario as written (pydantic file model) and as resolved against contract and lab (the plan)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.errors import InputError, Place
from harness.units import DISPLAY_UNITS, Dimension, Limit

if TYPE_CHECKING:
    from devices.model import DeviceModel
    from harness.contract import Contract
    from harness.labfile import Lab
    from harness.scenario.registry import StepKind
    from harness.yamlfile import SourceFile


class DeviceUse(BaseModel):
    """Which device(s) of the lab's inventory a scenario uses under a short name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(None, description="An inventory device id from the lab file")
    model: str | None = Field(None, description="Device model; picks the inventory device of `user` with it")
    user: str | None = Field(None, description="Persona id; defaults to the scenario's `user`")
    rotate: bool = Field(False, description="Use every inventory device of `model` in turn, one per repetition")

    @model_validator(mode="before")
    @classmethod
    def _no_transport_here(cls, data: Any) -> Any:
        if isinstance(data, dict) and "via" in data:
            raise InputError("`via:` belongs in the lab file, not the scenario: the scenario says what happens, "
                             "the lab file says how it travels",
                             fix="remove `via:` here and set it on the device in the lab file")
        return data


class ScenarioFile(BaseModel):
    """One acceptance scenario (brukerscenario)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(description="What the scenario shows, in the contract's language")
    description: str = ""
    covers: list[str] = Field(min_length=1, description="Requirement ids from the contract")
    user: str | None = Field(None, description="Default synthetic test user (persona id) for the devices")
    devices: dict[str, DeviceUse] = Field(min_length=1)
    repeat: int = Field(1, ge=1, le=1_000_000, description="How many times the steps run")
    pace: str | None = Field(
        None, description="Start repetitions at this rate, e.g. 10/s; without it, one after another"
    )
    drain: str | None = Field(
        None, description="How long to wait at the end for alarms still out (default 2s; at most 10m)"
    )
    time_scaled: bool = Field(
        False, description="The durations of this scenario (heartbeat intervals, waits, deadlines, criteria) are "
        "operational time. On a reference lab with platform.time_scale N they run N times faster and the "
        "durations measured are reported multiplied by N; against a real platform they run in real time"
    )
    markers: list[str] = Field(default_factory=list, description="Extra pytest markers, e.g. hardware")
    steps: list[dict[str, Any]] = Field(min_length=1)
    criteria: list[dict[str, Any]] = Field(min_length=1, description="Acceptance criteria on the metrics")


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    alias: str
    ids: tuple[str, ...]
    model: DeviceModel
    rotate: bool

    def id_for(self, iteration: int) -> str:
        return self.ids[iteration % len(self.ids)] if self.rotate else self.ids[0]


@dataclass(frozen=True, slots=True)
class StepPlan:
    index: int
    kind: StepKind
    args: Any  # the kind's pydantic model instance
    place: Place


UNITS = DISPLAY_UNITS


@dataclass(frozen=True, slots=True)
class Criterion:
    """One acceptance criterion: metric, statistic, limit and optional marginal band (OpenHTF style)."""

    metric: str
    statistic: str
    limit: Limit
    marginal: Limit | None
    dimension: Dimension
    requirements: tuple[str, ...]
    place: Place

    @property
    def unit(self) -> str:
        return UNITS[self.dimension]


@dataclass(slots=True)
class ScenarioPlan:
    id: str
    path: Path
    spec: ScenarioFile
    source: SourceFile
    contract: Contract
    lab: Lab
    devices: dict[str, DeviceBinding] = field(default_factory=dict)
    steps: list[StepPlan] = field(default_factory=list)
    criteria: list[Criterion] = field(default_factory=list)
    pace_per_s: float | None = None
    drain_ns: int | None = None
    time_scale: float = 1.0  # > 1: operational durations run this many times faster (lab's platform.time_scale)

    def run_ns(self, operational_ns: int) -> int:
        """How long an operational duration of this scenario lasts in this run (time scaling)."""
        return int(operational_ns / self.time_scale)

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def covers(self) -> list[str]:
        return list(self.spec.covers)

    def binding(self, alias: str, place: Place) -> DeviceBinding:
        if alias not in self.devices:
            raise InputError(
                f"unknown device `{alias}` in this step",
                place=place,
                fix=f"use a device named under `devices:`: {sorted(self.devices)}",
            )
        return self.devices[alias]

    def probe(self, name: str, place: Place) -> str:
        if name not in self.lab.spec.probes:
            raise InputError(
                f"unknown probe `{name}`",
                place=place,
                fix=f"use a probe from the lab file {self.lab.path.name}: {sorted(self.lab.spec.probes)}",
            )
        return name

    def probe_for_centre(self, centre: str) -> str | None:
        return next((n for n, p in self.lab.spec.probes.items() if p.centre == centre), None)

    def definition(self) -> dict[str, Any]:
        """The scenario as loaded, for the evidence store."""
        data = self.spec.model_dump(mode="json")
        data["resolved_devices"] = {a: list(b.ids) for a, b in self.devices.items()}
        data["time_scale"] = self.time_scale
        return data
