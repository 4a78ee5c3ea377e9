"""What every GATT characteristic codec shares: a bounds-checked reader, a writer, units, date-time, registry.

Every value a reading carries is a `Quantity` (exact number and unit), so nobody downstream has to remember
whether a meter sent kPa or mmHg; every reading is a frozen slotted dataclass that encodes back to bytes.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from harness.protocols.base import ProtocolError
from harness.protocols.ieee11073 import (
    Number,
    Special,
    encode_float,
    encode_sfloat,
    float_from_raw,
    sfloat_from_raw,
)

PROTOCOL = "ble-gatt"
MAX_VALUE_BYTES = 512
"""The ATT maximum attribute value length; a longer value is refused unread."""

# Units: the short forms the brief and the report use (UCUM where UCUM is plain).
MMHG, KPA = "mmHg", "kPa"
CEL, DEGF = "Cel", "degF"
KG, LB = "kg", "lb"
METRE, INCH = "m", "in"
PERCENT, BPM = "%", "bpm"
MG_DL, MMOL_L = "mg/dL", "mmol/L"
KJ, SECOND, MINUTE = "kJ", "s", "min"
KG_M2, LITRE, GRAM = "kg/m2", "L", "g"


@dataclass(frozen=True, slots=True)
class Quantity:
    """An exact value with its unit; `value` may be a Special (NaN, NRes, +INF, -INF, reserved)."""

    value: Number
    unit: str

    def __str__(self) -> str:
        return f"{show_number(self.value)} {self.unit}"


@dataclass(frozen=True, slots=True)
class DateTime:
    """GATT Date Time (0x2A08): year 0 and month/day 0 mean 'not known', so this is not a datetime."""

    year: int
    month: int
    day: int
    hours: int
    minutes: int
    seconds: int

    def __post_init__(self) -> None:
        checks = (
            (self.year == 0 or 1582 <= self.year <= 9999, "year"),
            (0 <= self.month <= 12, "month"),
            (0 <= self.day <= 31, "day"),
            (0 <= self.hours <= 23, "hours"),
            (0 <= self.minutes <= 59, "minutes"),
            (0 <= self.seconds <= 59, "seconds"),
        )
        for ok, name in checks:
            if not ok:
                raise ProtocolError(PROTOCOL, f"date-time {name} out of range in {self.iso()}")

    def iso(self) -> str:
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}T{self.hours:02d}:{self.minutes:02d}:{self.seconds:02d}"


def show_number(value: Number) -> str:
    """Plain decimal text that keeps the sent precision ("37.60", "3000000"), or the special's name."""
    return value.value if isinstance(value, Special) else format(value, "f")


class Reader:
    """Reads little-endian fields; running out of bytes is a ProtocolError naming the field and offset."""

    def __init__(self, data: bytes, what: str) -> None:
        if len(data) > MAX_VALUE_BYTES:
            raise ProtocolError(PROTOCOL, f"{what}: {len(data)} bytes is longer than any attribute value")
        self.data = bytes(data)
        self.what = what
        self.pos = 0

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError(
                PROTOCOL, f"{self.what}: truncated, {field} needs {n} bytes, {self.remaining} left", offset=self.pos
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def uint(self, n: int, field: str) -> int:
        return int.from_bytes(self.take(n, field), "little")

    def sint(self, n: int, field: str) -> int:
        return int.from_bytes(self.take(n, field), "little", signed=True)

    def u8(self, field: str) -> int:
        return self.uint(1, field)

    def u16(self, field: str) -> int:
        return self.uint(2, field)

    def sfloat(self, field: str) -> Number:
        return sfloat_from_raw(self.uint(2, field))

    def float32(self, field: str) -> Number:
        return float_from_raw(self.uint(4, field))

    def date_time(self, field: str) -> DateTime:
        at = self.pos
        raw = self.take(7, field)
        try:
            return DateTime(int.from_bytes(raw[0:2], "little"), raw[2], raw[3], raw[4], raw[5], raw[6])
        except ProtocolError as exc:
            raise ProtocolError(PROTOCOL, f"{self.what}: {field}: {exc.reason}", offset=at) from None

    def end(self) -> None:
        """Trailing bytes mean the flags and the length disagree: a finding, not something to skip."""
        if self.remaining:
            raise ProtocolError(
                PROTOCOL, f"{self.what}: {self.remaining} trailing bytes the flags do not account for", offset=self.pos
            )


class Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def uint(self, value: int, n: int) -> Writer:
        self.out += int(value).to_bytes(n, "little")
        return self

    def sint(self, value: int, n: int) -> Writer:
        self.out += int(value).to_bytes(n, "little", signed=True)
        return self

    def sfloat(self, value: Number) -> Writer:
        self.out += encode_sfloat(value)
        return self

    def float32(self, value: Number) -> Writer:
        self.out += encode_float(value)
        return self

    def date_time(self, value: DateTime) -> Writer:
        self.out += value.year.to_bytes(2, "little") + bytes(
            (value.month, value.day, value.hours, value.minutes, value.seconds)
        )
        return self

    def bytes(self) -> bytes:
        return bytes(self.out)


def enum_or_int(cls: type[enum.IntEnum], raw: int) -> enum.IntEnum | int:
    """Known codes become enum members; codes the spec reserves stay plain ints (reported, not refused)."""
    try:
        return cls(raw)
    except ValueError:
        return raw


def scaled(raw: int, step: str, unit: str) -> Quantity:
    """An integer field with a fixed resolution (0.005 kg, 1/1024 s ...) as an exact Quantity."""
    return Quantity(Decimal(raw) * Decimal(step), unit)


def unscaled(q: Quantity, step: str, field: str) -> int:
    """The integer that `scaled` came from; ValueError if the value is not a whole number of steps."""
    if isinstance(q.value, Special):
        raise ValueError(f"{field} cannot be {q.value.value}")
    n = q.value / Decimal(step)
    if n != n.to_integral_value():
        raise ValueError(f"{field} {q.value} is not a multiple of {step}")
    return int(n)


def in_unit(q: Quantity, allowed: tuple[str, ...], field: str) -> str:
    if q.unit not in allowed:
        raise ValueError(f"{field} is in {q.unit!r}; the characteristic carries only {allowed}")
    return q.unit


class Reading(Protocol):
    """A decoded characteristic value: knows its UUID and how to become bytes again."""

    @property
    def UUID(self) -> int: ...

    def to_bytes(self) -> bytes: ...


R = TypeVar("R")
DECODERS: dict[int, Callable[[bytes], Any]] = {}
NAMES: dict[int, str] = {}


def characteristic(uuid: int, name: str) -> Callable[[type[R]], type[R]]:
    """Register a reading class's `from_bytes` as the decoder for a 16-bit characteristic UUID."""

    def register(cls: type[R]) -> type[R]:
        DECODERS[uuid] = cls.from_bytes  # type: ignore[attr-defined]
        NAMES[uuid] = name
        return cls

    return register


def to_json(value: Any) -> Any:
    """A JSON-ready form of a reading: exact numbers as strings, flags as lists of names, enums by name."""
    if isinstance(value, Quantity):
        return {"value": show_number(value.value), "unit": value.unit}
    if isinstance(value, Special):
        return value.value
    if isinstance(value, Decimal):
        return show_number(value)
    if isinstance(value, DateTime):
        return value.iso()
    if isinstance(value, enum.IntFlag):
        return [m.name for m in type(value) if m.value and (value & m) == m]
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"type": type(value).__name__}
        uuid = getattr(type(value), "UUID", None)
        if isinstance(uuid, int):
            out["uuid"] = f"{uuid:04X}"
        for f in dataclasses.fields(value):
            out[f.name] = to_json(getattr(value, f.name))
        return out
    return value
