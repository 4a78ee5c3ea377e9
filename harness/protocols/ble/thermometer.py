"""Health Thermometer service 0x1809: temperature measurement 0x2A1C (indicated), type 0x2A1D, intermediate 0x2A1E,
measurement interval 0x2A21.

Temperature Measurement: flags u8 (b0 Fahrenheit, b1 time stamp, b2 temperature type), value as FLOAT, then
time stamp (7 bytes) and type (u8) when flagged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from harness.protocols.ble._codec import (
    CEL,
    DEGF,
    SECOND,
    DateTime,
    Quantity,
    Reader,
    Writer,
    characteristic,
    enum_or_int,
    in_unit,
)


class TemperatureType(enum.IntEnum):
    """Temperature Type 0x2A1D values (where on the body the temperature was taken)."""

    ARMPIT = 1
    BODY = 2
    EAR = 3
    FINGER = 4
    GASTROINTESTINAL_TRACT = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9


def _decode(cls: type[TemperatureMeasurement], data: bytes, what: str) -> TemperatureMeasurement:
    r = Reader(data, what)
    flags = r.u8("flags")
    value = Quantity(r.float32("temperature"), DEGF if flags & 0x01 else CEL)
    ts = r.date_time("time stamp") if flags & 0x02 else None
    kind = enum_or_int(TemperatureType, r.u8("temperature type")) if flags & 0x04 else None
    r.end()
    return cls(value, ts, kind)


@characteristic(0x2A1C, "Temperature Measurement")
@dataclass(frozen=True, slots=True)
class TemperatureMeasurement:
    UUID = 0x2A1C

    temperature: Quantity
    timestamp: DateTime | None = None
    temperature_type: TemperatureType | int | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> TemperatureMeasurement:
        return _decode(cls, data, "temperature measurement")

    def to_bytes(self) -> bytes:
        unit = in_unit(self.temperature, (CEL, DEGF), "temperature")
        flags = (0x01 if unit == DEGF else 0) | (0x02 if self.timestamp else 0)
        flags |= 0x04 if self.temperature_type is not None else 0
        w = Writer().uint(flags, 1).float32(self.temperature.value)
        if self.timestamp:
            w.date_time(self.timestamp)
        if self.temperature_type is not None:
            w.uint(int(self.temperature_type), 1)
        return w.bytes()


@characteristic(0x2A1E, "Intermediate Temperature")
@dataclass(frozen=True, slots=True)
class IntermediateTemperature(TemperatureMeasurement):
    UUID = 0x2A1E

    @classmethod
    def from_bytes(cls, data: bytes) -> IntermediateTemperature:
        result = _decode(cls, data, "intermediate temperature")
        assert isinstance(result, IntermediateTemperature)
        return result


@characteristic(0x2A1D, "Temperature Type")
@dataclass(frozen=True, slots=True)
class TemperatureTypeValue:
    UUID = 0x2A1D

    temperature_type: TemperatureType | int

    @classmethod
    def from_bytes(cls, data: bytes) -> TemperatureTypeValue:
        r = Reader(data, "temperature type")
        value = enum_or_int(TemperatureType, r.u8("temperature type"))
        r.end()
        return cls(value)

    def to_bytes(self) -> bytes:
        return bytes([int(self.temperature_type)])


@characteristic(0x2A21, "Measurement Interval")
@dataclass(frozen=True, slots=True)
class MeasurementInterval:
    """Seconds between periodic measurements; 0 means no periodic measurement."""

    UUID = 0x2A21

    interval: Quantity

    @classmethod
    def from_bytes(cls, data: bytes) -> MeasurementInterval:
        r = Reader(data, "measurement interval")
        value = Quantity(Decimal(r.u16("interval")), SECOND)
        r.end()
        return cls(value)

    def to_bytes(self) -> bytes:
        in_unit(self.interval, (SECOND,), "interval")
        return Writer().uint(int(self.interval.value), 2).bytes()  # type: ignore[arg-type]
