"""vtlab's JSON dialect (docs/wire.md) over a publish/subscribe transport: MQTT, or the in-memory bus."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from harness.clock import now_ns, utc_text
from harness.links import Incoming, IncomingHandler, Outgoing, Refused, RefusedHandler, Sent
from harness.protocols import ProtocolError
from harness.protocols.wire_json import (
    CentreAck,
    DeviceAck,
    DeviceEvent,
    Heartbeat,
    RoutedAlarm,
    WireMessage,
    decode_keeping,
    readings_from,
)
from harness.protocols.wire_json import encode as encode_wire
from harness.transports.base import Message, PubSubTransport

Topic = Callable[..., str]


def incoming(message: Message, kind: type[WireMessage]) -> Incoming | Refused:
    """Decode what arrived. A JSON object that the codec refuses but that names a cid is still an arrival
    of that alarm (judged `altered` with the defect), never silently dropped; so is an alarm whose only
    fault is its reading. Readings are handed over as `{name: (Decimal, unit)}` (what `expect_reading`
    compares), and kept in the evidence as the decimal text that arrived."""
    try:
        decoded, reading_defect = decode_keeping(message.payload, kind)
        evidence = decoded.to_json()
        fields = dict(evidence)
        readings = decoded.field("readings")
        if readings is not None:
            fields["readings"] = {r.name: (r.value, r.unit) for r in readings}
        key = None
        if fields.get("zone") and fields.get("device") and fields.get("code"):  # re-encoded from DC-09/SCAIP
            key = f"{fields['device']}:{fields['code']}:{fields['zone']}"
        if key:
            evidence["_key"] = key
        if reading_defect:
            evidence["_defect"] = reading_defect
        return Incoming(message.arrived_ns, fields, cid=str(fields["cid"]), key=key, defect=reading_defect,
                        evidence=evidence, where=message.topic)
    except ProtocolError as exc:
        defect = exc.reason
    try:
        raw: Any = json.loads(message.payload) if len(message.payload) <= 65536 else None
    except (ValueError, RecursionError):
        raw = None
    if isinstance(raw, dict) and isinstance(raw.get("cid"), str) and 0 < len(raw["cid"]) <= 256:
        fields = {k: v for k, v in raw.items() if isinstance(k, str) and len(k) <= 64}
        evidence = {**fields, "_defect": defect}
        fields.pop("readings", None)  # unchecked values are never compared as if they were readings
        return Incoming(message.arrived_ns, fields, cid=raw["cid"], defect=defect,
                        evidence=evidence, where=message.topic)
    return Refused(message.arrived_ns, message.payload[:500].decode("utf-8", "replace"), defect, message.topic)


def _dispatch(kind: type[WireMessage], handler: IncomingHandler, refused: RefusedHandler) -> Callable[[Message], None]:
    def on_message(message: Message) -> None:
        got = incoming(message, kind)
        if isinstance(got, Refused):
            refused(got)
        else:
            handler(got)

    return on_message


class WireJsonDeviceLink:
    def __init__(self, transport: PubSubTransport, topic: Topic, device_id: str) -> None:
        self.transport = transport
        self._topic = topic
        self.device_id = device_id

    def send(self, out: Outgoing) -> Sent:
        readings = getattr(out, "readings", None)
        event = DeviceEvent(cid=out.cid, device=out.device, user=out.user, event=out.event, code=out.code,
                            qualifier=out.qualifier, priority=out.priority, seq=out.seq, battery=out.battery,
                            sent=utc_text(), readings=readings_from(readings) if readings is not None else None,
                            measured=getattr(out, "measured", None))
        body = encode_wire(event)
        t = now_ns()
        self.transport.publish(self._topic("device_event", device=self.device_id), body)
        return Sent(t, event.to_json())

    def heartbeat(self, seq: int, interval_s: float, sent_text: str) -> None:
        body = encode_wire(Heartbeat(device=self.device_id, interval_s=interval_s, seq=seq, sent=sent_text))
        self.transport.publish(self._topic("device_heartbeat", device=self.device_id), body)

    def on_ack(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        self.transport.subscribe(self._topic("device_ack", device=self.device_id),
                                 _dispatch(DeviceAck, handler, refused))

    def close(self) -> None:
        self.transport.close()


class WireJsonCentreLink:
    def __init__(self, transport: PubSubTransport, topic: Topic, centre: str) -> None:
        self.transport = transport
        self._topic = topic
        self.centre = centre

    def start(self, handler: IncomingHandler, refused: RefusedHandler) -> None:
        self.transport.subscribe(self._topic("centre_alarm", centre=self.centre),
                                 _dispatch(RoutedAlarm, handler, refused))

    def acknowledge(self, alarm: Incoming, operator: str) -> int:
        device = alarm.fields.get("device")
        ack = CentreAck(cid=str(alarm.cid), centre=self.centre, device=device if isinstance(device, str) else None,
                        operator=operator, sent=utc_text())
        data = encode_wire(ack)
        t = now_ns()
        self.transport.publish(self._topic("centre_ack", centre=self.centre), data)
        return t

    def close(self) -> None:
        self.transport.close()
