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
    scaip_stc: str | None = None  # SCAIP status code (SS 91100), e.g. 0010 manual alarm, 0009 automatic alarm
    heartbeat: str | None = None  # for a non-wire event: "stop" (the device falls silent) or "resume" (it beats again)

    @property
    def expected_alarm(self) -> str:
        return self.raises or self.event


@dataclass(frozen=True, slots=True)
class DeviceModel:
    name: str
    description: str
    events: dict[str, EventSpec] = field(default_factory=dict)
    heartbeat: bool = True
    scaip_dty: str = "0003"  # SCAIP device type: 0003 personal trigger, 0005 fall detector, 0011 pill dispenser ...

    def event_for_code(self, code: str, qualifier: str = "1") -> EventSpec | None:
        """The event this model reports with Contact ID `code` and qualifier (1 new, 3 restore): what a
        receiving centre sees."""
        return next((e for e in self.events.values() if e.wire and e.code == code and e.qualifier == qualifier),
                    None)

    def stc_for_code(self, code: str, qualifier: str = "1") -> str | None:
        spec = self.event_for_code(code, qualifier)
        return spec.scaip_stc if spec else None

    def event_name(self, code: str, qualifier: str = "1") -> str | None:
        """vtlab's name for what a centre received with Contact ID `code`: the device's own event, or the
        alarm the platform raises for it (356 loss of supervision -> supervision_failure, restore ->
        supervision_restored)."""
        spec = self.event_for_code(code, qualifier)
        if spec is not None:
            return spec.event
        raising = [e for e in self.events.values() if not e.wire and e.code == code and e.raises]
        exact = next((e.raises for e in raising if e.qualifier == qualifier), None)
        if exact is not None:
            return exact
        raised = next((e.raises for e in raising), None)
        if raised is not None and qualifier == "3":
            return raised.replace("_failure", "_restored")
        return raised

    def code_for_stc(self, stc: str) -> str | None:
        return next((e.code for e in self.events.values() if e.wire and e.scaip_stc == stc), None)
