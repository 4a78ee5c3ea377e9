"""Heart Rate service 0x180D: measurement 0x2A37 (notified), body sensor location 0x2A38, control point 0x2A39.

Heart Rate Measurement: flags u8 (b0 value is u16, b1 contact detected, b2 contact supported, b3 energy
expended present, b4 RR intervals present), value u8/u16 bpm, energy u16 kJ, then RR intervals u16 in 1/1024 s
until the end of the value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from harness.protocols.base import ProtocolError
from harness.protocols.ble._codec import (
    BPM,
    KJ,
    PROTOCOL,
    SECOND,
    Quantity,
    Reader,
    Writer,
    characteristic,
    enum_or_int,
    in_unit,
    scaled,
    unscaled,
)

RR_STEP = "0.0009765625"  # 1/1024 s, exact in decimal


class SensorContact(enum.Enum):
    NOT_SUPPORTED = "not_supported"
    NOT_DETECTED = "not_detected"
    DETECTED = "detected"


@characteristic(0x2A37, "Heart Rate Measurement")
@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    UUID = 0x2A37

    heart_rate: Quantity
    contact: SensorContact = SensorContact.NOT_SUPPORTED
    energy_expended: Quantity | None = None
    rr_intervals: tuple[Quantity, ...] = ()
    wide: bool = False
    """The value was (or is to be) sent as u16; kept so a u16 reading re-encodes to the same bytes."""

    @classmethod
    def from_bytes(cls, data: bytes) -> HeartRateMeasurement:
        r = Reader(data, "heart rate measurement")
        flags = r.u8("flags")
        wide = bool(flags & 0x01)
        hr = Quantity(Decimal(r.uint(2 if wide else 1, "heart rate")), BPM)
        if not flags & 0x04:
            contact = SensorContact.NOT_SUPPORTED
        else:
            contact = SensorContact.DETECTED if flags & 0x02 else SensorContact.NOT_DETECTED
        energy = Quantity(Decimal(r.u16("energy expended")), KJ) if flags & 0x08 else None
        rr: list[Quantity] = []
        if flags & 0x10:
            if r.remaining == 0 or r.remaining % 2:
                raise ProtocolError(
                    PROTOCOL, f"heart rate measurement: RR intervals flagged but {r.remaining} bytes left", offset=r.pos
                )
            while r.remaining:
                rr.append(scaled(r.u16("RR interval"), RR_STEP, SECOND))
        r.end()
        return cls(hr, contact, energy, tuple(rr), wide)

    def to_bytes(self) -> bytes:
        in_unit(self.heart_rate, (BPM,), "heart rate")
        value = int(self.heart_rate.value)  # type: ignore[arg-type]
        wide = self.wide or value > 0xFF
        flags = (0x01 if wide else 0) | {
            SensorContact.NOT_SUPPORTED: 0,
            SensorContact.NOT_DETECTED: 0x04,
            SensorContact.DETECTED: 0x06,
        }[self.contact]
        flags |= (0x08 if self.energy_expended else 0) | (0x10 if self.rr_intervals else 0)
        w = Writer().uint(flags, 1).uint(value, 2 if wide else 1)
        if self.energy_expended:
            w.uint(int(self.energy_expended.value), 2)  # type: ignore[arg-type]
        for rr in self.rr_intervals:
            w.uint(unscaled(rr, RR_STEP, "RR interval"), 2)
        return w.bytes()


class BodySensorLocation(enum.IntEnum):
    OTHER = 0
    CHEST = 1
    WRIST = 2
    FINGER = 3
    HAND = 4
    EAR_LOBE = 5
    FOOT = 6


@characteristic(0x2A38, "Body Sensor Location")
@dataclass(frozen=True, slots=True)
class BodySensorLocationValue:
    UUID = 0x2A38

    location: BodySensorLocation | int

    @classmethod
    def from_bytes(cls, data: bytes) -> BodySensorLocationValue:
        r = Reader(data, "body sensor location")
        value = enum_or_int(BodySensorLocation, r.u8("location"))
        r.end()
        return cls(value)

    def to_bytes(self) -> bytes:
        return bytes([int(self.location)])


@characteristic(0x2A39, "Heart Rate Control Point")
@dataclass(frozen=True, slots=True)
class HeartRateControlPoint:
    """Opcode 1 resets the energy expended counter; others are reserved."""

    UUID = 0x2A39

    opcode: int = 1

    @classmethod
    def from_bytes(cls, data: bytes) -> HeartRateControlPoint:
        r = Reader(data, "heart rate control point")
        value = r.u8("opcode")
        r.end()
        return cls(value)

    def to_bytes(self) -> bytes:
        return bytes([self.opcode])
