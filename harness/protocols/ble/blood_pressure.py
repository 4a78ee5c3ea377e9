"""Blood Pressure service 0x1810: measurement 0x2A35 (indicated), intermediate cuff pressure 0x2A36, feature 0x2A49.

Layout (GATT Specification Supplement, Blood Pressure Measurement): flags u8 (b0 kPa, b1 time stamp, b2 pulse
rate, b3 user id, b4 measurement status), systolic, diastolic, MAP as SFLOAT, then the optional fields in
flag order. The intermediate cuff pressure has the same layout, with the current cuff pressure in the
systolic place and diastolic and MAP sent as NaN.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from harness.protocols.ble._codec import (
    BPM,
    KPA,
    MMHG,
    DateTime,
    Quantity,
    Reader,
    Writer,
    characteristic,
    in_unit,
)
from harness.protocols.ieee11073 import Special

_KPA, _TIME, _PULSE, _USER, _STATUS = 0x01, 0x02, 0x04, 0x08, 0x10


class BpmStatus(enum.IntFlag):
    """Measurement Status (u16). Bits 3-4 are one 2-bit pulse-rate-range field: 0 within range, 3 reserved."""

    BODY_MOVEMENT = 0x0001
    CUFF_TOO_LOOSE = 0x0002
    IRREGULAR_PULSE = 0x0004
    PULSE_RATE_ABOVE_UPPER_LIMIT = 0x0008
    PULSE_RATE_BELOW_LOWER_LIMIT = 0x0010
    IMPROPER_MEASUREMENT_POSITION = 0x0020


class BpFeature(enum.IntFlag):
    """Blood Pressure Feature 0x2A49 (u16)."""

    BODY_MOVEMENT_DETECTION = 0x0001
    CUFF_FIT_DETECTION = 0x0002
    IRREGULAR_PULSE_DETECTION = 0x0004
    PULSE_RATE_RANGE_DETECTION = 0x0008
    MEASUREMENT_POSITION_DETECTION = 0x0010
    MULTIPLE_BOND = 0x0020


def _decode(
    data: bytes, what: str
) -> tuple[str, tuple[Quantity, ...], DateTime | None, Quantity | None, int | None, BpmStatus | None]:
    r = Reader(data, what)
    flags = r.u8("flags")
    unit = KPA if flags & _KPA else MMHG
    values = tuple(Quantity(r.sfloat(name), unit) for name in ("systolic", "diastolic", "mean arterial pressure"))
    timestamp = r.date_time("time stamp") if flags & _TIME else None
    pulse = Quantity(r.sfloat("pulse rate"), BPM) if flags & _PULSE else None
    user = r.u8("user id") if flags & _USER else None
    status = BpmStatus(r.u16("measurement status")) if flags & _STATUS else None
    r.end()
    return unit, values, timestamp, pulse, user, status


def _encode(
    values: tuple[Quantity, Quantity, Quantity],
    timestamp: DateTime | None,
    pulse: Quantity | None,
    user: int | None,
    status: BpmStatus | None,
) -> bytes:
    unit = in_unit(values[0], (MMHG, KPA), "pressure")
    for q in values[1:]:
        if not isinstance(q.value, Special) and q.unit != unit:
            raise ValueError("systolic, diastolic and MAP must share one unit")
    flags = (_KPA if unit == KPA else 0) | (_TIME if timestamp else 0) | (_PULSE if pulse else 0)
    flags |= (_USER if user is not None else 0) | (_STATUS if status is not None else 0)
    w = Writer().uint(flags, 1)
    for q in values:
        w.sfloat(q.value)
    if timestamp:
        w.date_time(timestamp)
    if pulse:
        in_unit(pulse, (BPM,), "pulse rate")
        w.sfloat(pulse.value)
    if user is not None:
        w.uint(user, 1)
    if status is not None:
        w.uint(int(status), 2)
    return w.bytes()


@characteristic(0x2A35, "Blood Pressure Measurement")
@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    UUID = 0x2A35

    systolic: Quantity
    diastolic: Quantity
    mean_arterial_pressure: Quantity
    timestamp: DateTime | None = None
    pulse_rate: Quantity | None = None
    user_id: int | None = None
    status: BpmStatus | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> BloodPressureMeasurement:
        _, (sys_, dia, mean), ts, pulse, user, status = _decode(data, "blood pressure measurement")
        return cls(sys_, dia, mean, ts, pulse, user, status)

    def to_bytes(self) -> bytes:
        values = (self.systolic, self.diastolic, self.mean_arterial_pressure)
        return _encode(values, self.timestamp, self.pulse_rate, self.user_id, self.status)


@characteristic(0x2A36, "Intermediate Cuff Pressure")
@dataclass(frozen=True, slots=True)
class IntermediateCuffPressure:
    UUID = 0x2A36

    cuff_pressure: Quantity
    timestamp: DateTime | None = None
    pulse_rate: Quantity | None = None
    user_id: int | None = None
    status: BpmStatus | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> IntermediateCuffPressure:
        _, (cuff, _dia, _mean), ts, pulse, user, status = _decode(data, "intermediate cuff pressure")
        return cls(cuff, ts, pulse, user, status)

    def to_bytes(self) -> bytes:
        nan = Quantity(Special.NAN, self.cuff_pressure.unit)
        return _encode((self.cuff_pressure, nan, nan), self.timestamp, self.pulse_rate, self.user_id, self.status)


@characteristic(0x2A49, "Blood Pressure Feature")
@dataclass(frozen=True, slots=True)
class BloodPressureFeature:
    UUID = 0x2A49

    features: BpFeature

    @classmethod
    def from_bytes(cls, data: bytes) -> BloodPressureFeature:
        r = Reader(data, "blood pressure feature")
        value = BpFeature(r.u16("features"))
        r.end()
        return cls(value)

    def to_bytes(self) -> bytes:
        return Writer().uint(int(self.features), 2).bytes()
