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
import re
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from decimal import Decimal, InvalidOperation
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
MAX_READINGS = 32
"""The most readings one message carries (a meter sends a handful)."""
MAX_READING_TEXT = 32
"""The longest reading value, as written."""
MAX_READING_EXPONENT = 24
"""A reading's decimal exponent is within +-this: a value written as 1e999 is refused, never expanded."""
_READING_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_READING_UNIT = re.compile(r"^[A-Za-z0-9%/.\-\[\]]{1,16}$")
_READING_VALUE = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?$")


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
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal) or not math.isfinite(value):
        raise ProtocolError(PROTOCOL, f"field `{name}` must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Reading:
    """One value a health meter measured, exactly as written (a Decimal, never a float), with its unit."""

    name: str
    value: Decimal
    unit: str

    def to_json(self) -> dict[str, str]:
        return {"value": format(self.value, "f"), "unit": self.unit}


def _reading_value(name: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ProtocolError(PROTOCOL, f"reading `{name}` value {str(value)[:40]!r} is not a number")
    text = str(value)
    if len(text) > MAX_READING_TEXT:
        raise ProtocolError(PROTOCOL, f"reading `{name}` value is {len(text)} characters long (at most "
                                      f"{MAX_READING_TEXT})")
    if not _READING_VALUE.match(text):
        raise ProtocolError(PROTOCOL, f"reading `{name}` value {text!r} is not a decimal number")
    try:
        number = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits decimal numbers only
        raise ProtocolError(PROTOCOL, f"reading `{name}` value {text!r} is not a number") from None
    exponent = number.as_tuple().exponent
    if (not number.is_finite() or not isinstance(exponent, int) or abs(exponent) > MAX_READING_EXPONENT
            or abs(number.adjusted()) > MAX_READING_EXPONENT):
        raise ProtocolError(PROTOCOL, f"reading `{name}` value {text!r} is out of any meter's range")
    return number


def decode_readings(raw: Any) -> tuple[Reading, ...]:
    """The `readings` object of a message, `{name: {"value": "182", "unit": "mmHg"}}`, as typed readings.

    Values are decimal text (a JSON number is read exactly as written); names are plain lower-case words;
    units are short UCUM-like text. Anything else, or more than MAX_READINGS, is a ProtocolError."""
    if not isinstance(raw, dict):
        raise ProtocolError(PROTOCOL, f"`readings` is a {type(raw).__name__}, not an object")
    if len(raw) > MAX_READINGS:
        raise ProtocolError(PROTOCOL, f"{len(raw)} readings (at most {MAX_READINGS})")
    out: list[Reading] = []
    for name, item in raw.items():
        if not isinstance(name, str) or not _READING_NAME.match(name):
            raise ProtocolError(PROTOCOL, f"reading name {str(name)[:70]!r} is not a plain lower-case word")
        if not isinstance(item, dict) or set(item) != {"value", "unit"}:
            raise ProtocolError(PROTOCOL, f"reading `{name}` must be {{value, unit}}")
        unit = item["unit"]
        if not isinstance(unit, str) or not _READING_UNIT.match(unit):
            raise ProtocolError(PROTOCOL, f"reading `{name}` has no usable unit ({str(unit)[:20]!r})")
        out.append(Reading(name, _reading_value(name, item["value"]), unit))
    return tuple(out)


def readings_to_json(readings: Iterable[Reading]) -> dict[str, dict[str, str]]:
    return {r.name: r.to_json() for r in readings}


def readings_from(pairs: Mapping[str, tuple[Decimal | int | str, str]]) -> tuple[Reading, ...]:
    """`{name: (value, unit)}` as checked readings (what a device or gateway is about to send);
    ProtocolError when the values would not pass the dialect's own decoder."""
    return decode_readings({name: {"value": str(v), "unit": u} for name, (v, u) in pairs.items()})


def _time(name: str, value: Any) -> str | None:
    text = _text(name, value, required=False)
    if text is None:
        return None
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(PROTOCOL, f"field `{name}` {text[:40]!r} is not an ISO 8601 time") from None
    return text


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
                out[name] = readings_to_json(value) if name == "readings" else value
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
    readings: tuple[Reading, ...] | None = None
    """A health meter's readings, when the event is a measurement."""
    measured: str | None = None
    """The meter's own time stamp of the readings (ISO 8601)."""


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
    readings: tuple[Reading, ...] | None = None
    """The device's readings, unchanged (a measurement a meter or its gateway sent)."""
    measured: str | None = None
    """The meter's own time stamp of the readings, unchanged."""

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
        data = json.loads(payload.decode("utf-8"), parse_float=Decimal)  # a reading's 82.50 stays 82.50
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
    return _decode_object(_object(payload), kind)


MEASUREMENT_FIELDS = ("readings", "measured")


def decode_keeping(payload: bytes, kind: type[M]) -> tuple[M, str | None]:
    """Decode as `kind`; a payload whose only fault is in `readings` or `measured` still decodes, without
    them, and the fault comes back as the second item (the alarm arrived, its reading was altered)."""
    data = _object(payload)
    try:
        return _decode_object(data, kind), None
    except ProtocolError as exc:
        if not any(name in data for name in MEASUREMENT_FIELDS):
            raise
        defect = exc.reason
    bare = {k: v for k, v in data.items() if k not in MEASUREMENT_FIELDS}
    message = _decode_object(bare, kind)  # raises when something else is wrong too
    return message, defect


def _decode_object(data: Mapping[str, Any], kind: type[M]) -> M:
    values: dict[str, Any] = {}
    for f in fields(kind):
        required = f.default is MISSING and f.default_factory is MISSING
        raw = data.get(f.name)
        if kind is LabControl and f.name == "faults" and raw == "":
            values["faults"] = ""  # an empty fault set switches every fault off
            continue
        if f.name == "readings":
            v: Any = decode_readings(raw) if raw is not None else None
        elif f.name == "measured":
            v = _time(f.name, raw)
        elif f.name in _TEXT:
            if f.name == "id" and isinstance(raw, int | float | Decimal) and not isinstance(raw, bool):
                raw = str(raw)
            v = _text(f.name, raw, required=required)
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
    "MAX_READINGS",
    "ROUTING_FIELDS",
    "CentreAck",
    "DeviceAck",
    "DeviceEvent",
    "Heartbeat",
    "LabControl",
    "Reading",
    "RoutedAlarm",
    "WireMessage",
    "decode",
    "decode_keeping",
    "decode_readings",
    "encode",
    "readings_from",
    "readings_to_json",
    "wall_clock_text",
]
