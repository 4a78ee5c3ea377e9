"""What a home gateway forwards from BLE and serial devices, and how vtlab recognises it where it arrives.

A dispenser on a serial line or a meter over BLE cannot carry vtlab's correlation id: the gateway (a home
hub, a tablet, the reference lab in its gateway role) reads the device and forwards the event or the
reading into the platform under an id of its own. What survives is the device, the event code and a
per-event number the device itself sends (the dispenser's sequence number, the alarm button's advertised
counter), so both ends build the key `<device>:<code>:<zone>` (the spelling of harness.links.dc09.key_of),
zone being that number modulo 1000 in three digits. An arrival matched by key carries `cid=None` (the
platform's own id is kept as `platform_id` in its fields), so the tracker never mistakes the gateway's id
for vtlab's.

Readings. A reading travels as vtlab's JSON dialect (docs/wire.md) with two more fields, which a gateway
adds to the device event and a platform keeps on the routed message:

    "readings": {"systolic": {"value": "182", "unit": "mmHg"}, "pulse": {"value": "71", "unit": "bpm"}},
    "measured": "2026-11-23T10:00:00Z"

Values are exact decimal strings (a JSON number is accepted and read exactly as written); `measured` is
the meter's own time stamp. `decode_readings` refuses anything else with a ProtocolError, so a bad reading
is `altered` with the reason, never lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from harness.clock import now_ns, utc_text
from harness.links import Incoming, IncomingHandler, Outgoing, Refused, RefusedHandler
from harness.links.dc09 import key_of
from harness.protocols import ProtocolError
from harness.protocols.wire_json import CentreAck, RoutedAlarm, decode_keeping, readings_from
from harness.protocols.wire_json import decode_readings as wire_decode_readings
from harness.protocols.wire_json import encode as encode_wire
from harness.transports.base import Message, PubSubTransport

PROTOCOL = "vtlab-readings"

Readings = Mapping[str, tuple[Decimal, str]]


def zone_of(number: int | str) -> str:
    """The per-event number a gateway forwards as the Contact ID zone (3 digits)."""
    return f"{int(number) % 1000:03d}"


@dataclass(frozen=True, slots=True)
class MeasuredOutgoing(Outgoing):
    """`Outgoing` with a reading: what a `measure` step hands a meter's link (until Outgoing has the fields)."""

    readings: Readings | None = None
    measured: str | None = None  # the meter's time stamp, UTC ISO 8601 to the second


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """An event or a reading a gateway read from a device, in the device model's words, stamped on arrival."""

    t_ns: int
    device: str
    event: str
    code: str
    zone: str
    qualifier: str = "1"
    priority: int = 5
    battery: int | None = None
    readings: Readings | None = None
    measured: str | None = None
    raw: str = ""  # the frame or value as received (hex for binary), for evidence

    @property
    def key(self) -> str:
        return key_of(self.device, self.code, self.zone)

    def incoming(self, where: str = "") -> Incoming:
        """The event as an arrival of kind `device_event` (observe mode): matched by key."""
        fields: dict[str, Any] = {
            "device": self.device,
            "event": self.event,
            "code": self.code,
            "qualifier": self.qualifier,
            "priority": self.priority,
            "zone": self.zone,
        }
        if self.battery is not None:
            fields["battery"] = self.battery
        evidence = dict(fields, raw=self.raw, _key=self.key)
        if self.readings is not None:
            fields["readings"] = dict(self.readings)
            evidence["readings"] = readings_json(self.readings)
        if self.measured is not None:
            fields["measured"] = evidence["measured"] = self.measured
        return Incoming(self.t_ns, fields, key=self.key, evidence=evidence, where=where)


def readings_of(out: Outgoing) -> tuple[Readings | None, str | None]:
    return cast(Readings | None, getattr(out, "readings", None)), cast(str | None, getattr(out, "measured", None))


def readings_json(readings: Readings) -> dict[str, dict[str, str]]:
    return {name: {"value": _plain(value), "unit": unit} for name, (value, unit) in readings.items()}


def _plain(value: Decimal) -> str:
    return format(value, "f")


def decode_readings(raw: Any) -> dict[str, tuple[Decimal, str]]:
    """The `readings` object of a message -> {name: (value, unit)}; ProtocolError for anything else
    (the dialect's own rules: harness.protocols.wire_json.decode_readings)."""
    return {r.name: (r.value, r.unit) for r in wire_decode_readings(raw)}


def parse_time(text: Any) -> datetime:
    """An ISO 8601 time; one without a zone is UTC (a meter's clock as vtlab sets it). ProtocolError otherwise."""
    if not isinstance(text, str) or len(text) > 40:
        raise ProtocolError(PROTOCOL, f"time {str(text)[:40]!r} is not ISO 8601 text")
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(PROTOCOL, f"time {text!r} is not ISO 8601") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def measured_now() -> str:
    """Now, to the second (what a meter's clock can say), UTC."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def compare_readings(sent: Readings, measured: str | None, got: Mapping[str, Any]) -> list[str]:
    """What differs between a reading sent and one that arrived, field by field (empty: unchanged).

    Values compare as exact decimals (`82.5` equals `82.500`), units as text, times as instants."""
    wrong: list[str] = []
    arrived = got.get("readings")
    if not isinstance(arrived, Mapping):
        return ["readings absent"]
    for name, (value, unit) in sent.items():
        item = arrived.get(name)
        if item is None:
            wrong.append(f"{name} absent, expected {_plain(value)} {unit}")
            continue
        got_value, got_unit = item
        if Decimal(str(got_value)) != value:
            wrong.append(f"{name} value {got_value} {got_unit}, expected {_plain(value)} {unit}")
        elif got_unit != unit:
            wrong.append(f"{name} unit {got_unit!r}, expected {unit!r}")
    extra = sorted(set(arrived) - set(sent))
    if extra:
        wrong.append(f"readings not measured: {', '.join(extra)}")
    if measured is not None:
        got_time = got.get("measured")
        if got_time is None:
            wrong.append(f"measured absent, expected {measured}")
        else:
            try:
                if parse_time(got_time) != parse_time(measured):
                    wrong.append(f"measured {got_time}, expected {measured}")
            except ProtocolError as exc:
                wrong.append(f"measured {str(got_time)[:40]!r}: {exc.reason}")
    return wrong


# --- the centre side -------------------------------------------------------------------------------------------


def keyed_incoming(message: Message) -> Incoming | Refused:
    """A routed alarm or reading that a gateway forwarded: matched by key where it has device, code and zone.
    A bad reading makes the arrival `altered` (its defect), never lost."""
    try:
        alarm, defect = decode_keeping(message.payload, RoutedAlarm)
    except ProtocolError as exc:
        return Refused(message.arrived_ns, message.payload[:500].decode("utf-8", "replace"), exc.reason, message.topic)
    fields: dict[str, Any] = alarm.to_json()
    platform_id = fields.pop("cid")
    fields["platform_id"] = platform_id
    if alarm.readings is not None:
        fields["readings"] = {r.name: (r.value, r.unit) for r in alarm.readings}
    key = key_of(alarm.device, alarm.code, alarm.zone) if alarm.device and alarm.code and alarm.zone else None
    evidence = {
        **{k: v for k, v in fields.items() if k != "readings"},
        **({"readings": readings_json(fields["readings"])} if "readings" in fields else {}),
        **({"_key": key} if key else {}),
        **({"_defect": defect} if defect else {}),
    }
    return Incoming(
        message.arrived_ns,
        fields,
        cid=None if key else platform_id,
        key=key,
        defect=defect,
        evidence=evidence,
        where=message.topic,
    )


class GatewayCentreLink:
    """A response centre (or follow-up service) receiving vtlab's JSON dialect for devices behind a gateway."""

    def __init__(self, transport: PubSubTransport, topic: Any, centre: str) -> None:
        self.transport = transport
        self._topic = topic
        self.centre = centre

    def start(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        def on_message(message: Message) -> None:
            got = keyed_incoming(message)
            (refused if isinstance(got, Refused) else handler)(got)  # type: ignore[arg-type]

        self.transport.subscribe(self._topic("centre_alarm", centre=self.centre), on_message)

    def acknowledge(self, alarm: Incoming, operator: str) -> int:
        device = alarm.fields.get("device")
        platform_id = alarm.fields.get("platform_id") or alarm.cid
        ack = CentreAck(
            cid=str(platform_id),
            centre=self.centre,
            device=device if isinstance(device, str) else None,
            operator=operator,
            sent=utc_text(),
        )
        data = encode_wire(ack)
        t = now_ns()
        self.transport.publish(self._topic("centre_ack", centre=self.centre), data)
        return t

    def close(self) -> None:
        self.transport.close()


def forwarded_alarm(
    *,
    platform_id: str,
    device: str,
    user: str | None,
    centre: str,
    event: str,
    code: str,
    zone: str,
    qualifier: str = "1",
    priority: int = 1,
    readings: Readings | None = None,
    measured: str | None = None,
    battery: int | None = None,
) -> bytes:
    """The routed message a platform sends for a gateway-forwarded event (what the reference lab's gateway
    path, and tests' mock platforms, publish to a centre)."""
    alarm = RoutedAlarm(
        cid=platform_id,
        device=device,
        user=user,
        event=event,
        code=code,
        qualifier=qualifier,
        priority=priority,
        centre=centre,
        zone=zone,
        battery=battery,
        routed=utc_text(),
        readings=readings_from(readings) if readings is not None else None,
        measured=measured,
    )
    return encode_wire(alarm)


def gateway_memory_centre(ctx: Any, probe: str) -> GatewayCentreLink:
    from harness.transports.memory import MemoryTransport

    centre = str(ctx.lab.spec.probes[probe].centre)
    transport = MemoryTransport(ctx.memory_bus(), f"centre-{centre}")
    transport.connect()
    return GatewayCentreLink(transport, ctx.lab.topic, centre)


def gateway_mqtt_centre(ctx: Any, probe: str) -> GatewayCentreLink:
    from harness.transports.mqtt import MqttTransport

    centre = str(ctx.lab.spec.probes[probe].centre)
    transport = MqttTransport(
        ctx.mqtt_settings(f"centre-{centre}"), f"centre-{centre}", on_state=ctx.on_transport_state
    )
    transport.connect()
    return GatewayCentreLink(transport, ctx.lab.topic, centre)


__all__ = [
    "GatewayCentreLink",
    "GatewayEvent",
    "MeasuredOutgoing",
    "compare_readings",
    "decode_readings",
    "forwarded_alarm",
    "keyed_incoming",
    "measured_now",
    "parse_time",
    "readings_json",
    "readings_of",
    "zone_of",
]
