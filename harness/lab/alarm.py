"""The reference lab's internal alarm: what every ingress (MQTT, DC-09, SCAIP) turns an alarm into and every
egress re-encodes, so faults and the ledger treat all routes alike.

A real platform does not carry vtlab's correlation id through a re-encoding. What survives is the device
(account, controller id), the Contact ID code and the zone/user number: `key` is `<device>:<code>:<zone>`,
the string the harness counts loss and duplicates by on routes without a `cid`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.protocols.wire_json import RoutedAlarm, decode_readings, encode

Ingress = Literal["mqtt", "dc09", "scaip", "lab", "gateway"]


def alarm_key(device: str, code: str, zone: str) -> str:
    """The content key of an alarm (same spelling as harness.links.dc09.key_of)."""
    return f"{device}:{code}:{zone}"


@dataclass(frozen=True, slots=True)
class LabAlarm:
    """One alarm inside the lab.

    `id` is what the lab remembers the route by and what an MQTT centre sees as `cid`: the device's cid
    for MQTT ingress, `<ingress>-<n>` (made by the lab) otherwise. `cid` is only the device's own.
    `received_epoch_s` is the wall time the lab took the alarm in (for FHIR times, never for latency).
    """

    id: str
    ingress: Ingress
    device: str
    centre: str
    code: str
    qualifier: str
    event: str
    priority: int
    received_epoch_s: float
    zone: str | None = None
    partition: str = "01"
    cid: str | None = None
    user: str | None = None
    seq: int | None = None
    battery: int | None = None
    sent: str | None = None
    ref: str | None = None
    """The SCAIP device's `ref` (SCAIP ingress only)."""
    readings: dict[str, dict[str, str]] | None = None
    """A meter's readings as the device or its gateway sent them: {name: {value, unit}} (exact decimal text,
    already checked by harness.protocols.wire_json.decode_readings)."""
    measured: str | None = None
    """The meter's own time stamp of the readings."""

    @property
    def key(self) -> str | None:
        return alarm_key(self.device, self.code, self.zone) if self.zone is not None else None

    def ledger_fields(self) -> dict[str, Any]:
        """The fields every ledger line about this alarm carries: how the harness finds it again."""
        out: dict[str, Any] = {}
        if self.cid is not None:
            out["cid"] = self.cid
        else:
            out["lab_cid"] = self.id
        key = self.key
        if key is not None:
            out["key"] = key
        out["device"] = self.device
        out["centre"] = self.centre
        if self.ingress != "mqtt":
            out["ingress"] = self.ingress
        if self.ref is not None:
            out["ref"] = self.ref
        return out

    def routed_bytes(self, routed_text: str) -> bytes:
        """The routed alarm as JSON bytes, with `readings` and `measured` when a meter sent them."""
        return encode(self.routed(routed_text))

    def routed(self, routed_text: str) -> RoutedAlarm:
        """The alarm as an MQTT centre receives it (wire_json)."""
        return RoutedAlarm(
            cid=self.id,
            device=self.device,
            user=self.user,
            event=self.event,
            code=self.code,
            qualifier=self.qualifier,
            priority=self.priority,
            seq=self.seq,
            battery=self.battery,
            centre=self.centre,
            sent=self.sent,
            routed=routed_text,
            zone=self.zone,
            readings=decode_readings(self.readings) if self.readings is not None else None,
            measured=self.measured,
        )
