"""vtlab's JSON alarm dialect over MQTT (docs/wire.md), as a sans-I/O codec.

One place builds and reads every payload of the dialect, so simulated devices, probes, the tracker,
the reference lab and load users cannot drift apart. Decoding is strict about types and sizes and
lenient about absence where the wire document allows it: a routed alarm that lacks `user` still
decodes (the tracker then judges it misrouted); a payload that is not a JSON object of the dialect is a
`ProtocolError` the caller records as a finding.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, TypeVar

from harness.protocols.base import ProtocolError

PROTOCOL = "vtlab-json"
VERSION = 1
MAX_PAYLOAD_BYTES = 16 * 1024
"""The largest payload of the dialect that is accepted; a real event is a few hundred bytes."""
MAX_TEXT = 256
"""The longest string field (ids, names, times); longer ones are refused, never stored."""

ROUTING_FIELDS = ("centre", "user", "device")
"""Fields that say where an alarm went and whose it is: a wrong value is `misrouted`."""
CONTENT_FIELDS = ("event", "code", "priority")
"""Fields that say what the alarm is: a changed value is `altered`."""


def _text(name: str, value: Any, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise ProtocolError(PROTOCOL, f"field `{name}` is missing")
        return None
    if not isinstance(value, str):
        raise ProtocolError(PROTOCOL, f"field `{name}` must be a string, got {type(value).__name__}")
    if required and not value:
        raise ProtocolError(PROTOCOL, f"field `{name}` is empty")
    if len(value) > MAX_TEXT:
        raise ProtocolError(PROTOCOL, f"field `{name}` is {len(value)} characters long (at most {MAX_TEXT})")
    return value


def _int(name: str, value: Any, lo: int, hi: int, *, required: bool) -> int | None:
    if value is None:
        if required:
            raise ProtocolError(PROTOCOL, f"field `{name}` is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError(PROTOCOL, f"field `{name}` must be a whole number {lo}..{hi}, got {value!r}")
    return value


def _number(name: str, value: Any, *, required: bool) -> float | None:
    if value is None:
        if required:
            raise ProtocolError(PROTOCOL, f"field `{name}` is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(PROTOCOL, f"field `{name}` must be a number, got {value!r}")
    return float(value)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(kind))
    return names


@dataclass(frozen=True, slots=True)
class WireMessage:
    """Base of the dialect's messages: `to_json` drops absent optional fields."""

    KIND: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": VERSION}
        for name in _field_names(type(self)):  # flat fields: no deep copy (dataclasses.asdict is 10x slower)
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def field(self, name: str) -> Any:
        return getattr(self, name, None)


@dataclass(frozen=True, slots=True)
class DeviceEvent(WireMessage):
    """An alarm or event a device sends to the platform."""

    KIND: ClassVar[str] = "event"
    cid: str
    device: str
    event: str
    code: str
    user: str | None = None
    qualifier: str = "1"
    priority: int = 1
    seq: int | None = None
    battery: int | None = None
    sent: str | None = None
    zone: str | None = None
    """Contact ID zone/user number (3 digits) where the alarm has one: what survives a re-encoding platform."""


@dataclass(frozen=True, slots=True)
class RoutedAlarm(WireMessage):
    """An alarm as the platform delivers it to a response centre.

    Only `cid` is required: what else is missing or wrong is for the tracker to judge, not a reason to
    lose the arrival."""

    KIND: ClassVar[str] = "alarm"
    cid: str
    device: str | None = None
    user: str | None = None
    event: str | None = None
    code: str | None = None
    qualifier: str | None = None
    priority: int | None = None
    seq: int | None = None
    battery: int | None = None
    centre: str | None = None
    sent: str | None = None
    routed: str | None = None
    zone: str | None = None

    @property
    def raised_by_platform(self) -> bool:
        """The platform's own alarm (loss of supervision ...), whose cid the platform made."""
        return self.cid.startswith("lab-")


@dataclass(frozen=True, slots=True)
class Heartbeat(WireMessage):
    KIND: ClassVar[str] = "heartbeat"
    device: str
    interval_s: float
    seq: int | None = None
    user: str | None = None
    sent: str | None = None


@dataclass(frozen=True, slots=True)
class CentreAck(WireMessage):
    """A response-centre operator's acknowledgement, sent to the platform."""

    KIND: ClassVar[str] = "centre_ack"
    cid: str
    centre: str
    device: str | None = None
    operator: str | None = None
    action: str = "acknowledged"
    sent: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceAck(WireMessage):
    """The platform's acknowledgement back to the device (the user hears that help is coming)."""

    KIND: ClassVar[str] = "device_ack"
    cid: str
    centre: str | None = None
    action: str = "acknowledged"
    sent: str | None = None


@dataclass(frozen=True, slots=True)
class LabControl(WireMessage):
    """Harness -> reference lab: replace the active fault set."""

    KIND: ClassVar[str] = "control"
    faults: str
    id: str | None = None


def encode(message: WireMessage) -> bytes:
    return json.dumps(message.to_json(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _object(payload: bytes) -> Mapping[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(PROTOCOL, f"payload of {len(payload)} bytes (at most {MAX_PAYLOAD_BYTES})")
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(PROTOCOL, "not UTF-8", offset=exc.start) from None
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(PROTOCOL, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(PROTOCOL, f"payload is a JSON {type(data).__name__}, not an object")
    v = data.get("v", VERSION)
    if v != VERSION:
        raise ProtocolError(PROTOCOL, f"version `v` is {v!r}; this dialect is version {VERSION}")
    return data


M = TypeVar("M", bound=WireMessage)

_TEXT = {"cid", "device", "user", "event", "code", "qualifier", "centre", "sent", "routed", "operator", "action",
         "faults", "id", "zone"}
_INTS = {"priority": (1, 9), "seq": (0, 2**53), "battery": (0, 100)}


def decode(payload: bytes, kind: type[M]) -> M:
    """Decode one payload as `kind`; ProtocolError names what is wrong."""
    data = _object(payload)
    values: dict[str, Any] = {}
    for f in fields(kind):
        required = f.default is MISSING and f.default_factory is MISSING
        raw = data.get(f.name)
        if kind is LabControl and f.name == "faults" and raw == "":
            values["faults"] = ""  # an empty fault set switches every fault off
            continue
        if f.name in _TEXT:
            if f.name == "id" and isinstance(raw, int | float) and not isinstance(raw, bool):
                raw = str(raw)
            v: Any = _text(f.name, raw, required=required)
        elif f.name in _INTS:
            lo, hi = _INTS[f.name]
            v = _int(f.name, raw, lo, hi, required=required)
        else:
            v = _number(f.name, raw, required=required)
        if v is None and not required:
            continue
        values[f.name] = v
    if kind is Heartbeat and values.get("interval_s", 0) <= 0:
        raise ProtocolError(PROTOCOL, "field `interval_s` must be positive")
    return kind(**values)


def wall_clock_text(epoch_s: float) -> str:
    """UTC ISO 8601 with milliseconds and `Z`, the dialect's time format (for people, never for latency)."""
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = [
    "CONTENT_FIELDS",
    "MAX_PAYLOAD_BYTES",
    "ROUTING_FIELDS",
    "CentreAck",
    "DeviceAck",
    "DeviceEvent",
    "Heartbeat",
    "LabControl",
    "RoutedAlarm",
    "WireMessage",
    "decode",
    "encode",
    "wall_clock_text",
]
