"""A device model: identity, event vocabulary and timing behaviour, independent of transport."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What the device sends when an event happens on it.

    `code`/`qualifier` are Ademco Contact ID (101 personal emergency, 302 low system battery ...);
    `priority` 1 is the highest. `wire` is False for events that send nothing (a heartbeat stopping),
    whose alarm is raised by the platform instead.
    """

    event: str
    code: str
    qualifier: str = "1"
    priority: int = 1
    wire: bool = True
    description: str = ""
    raises: str | None = None  # for a non-wire event: the alarm the platform must raise

    @property
    def expected_alarm(self) -> str:
        return self.raises or self.event


@dataclass(frozen=True, slots=True)
class DeviceModel:
    name: str
    description: str
    events: dict[str, EventSpec] = field(default_factory=dict)
    heartbeat: bool = True
