"""Weight Scale service 0x181D: weight measurement 0x2A9D (indicated), feature 0x2A9E.

Weight Measurement: flags u8 (b0 imperial, b1 time stamp, b2 user id, b3 BMI and height), weight u16 at
0.005 kg or 0.01 lb (0xFFFF: measurement unsuccessful), time stamp, user id u8 (255 unknown user),
BMI u16 at 0.1 kg/m2 and height u16 at 0.001 m or 0.1 in.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.protocols.ble._codec import (
    INCH,
    KG,
    KG_M2,
    LB,
    METRE,
    DateTime,
    Quantity,
    Reader,
    Writer,
    characteristic,
    in_unit,
    scaled,
    unscaled,
)
from harness.protocols.ieee11073 import Special

_STEP = {KG: "0.005", LB: "0.01", METRE: "0.001", INCH: "0.1", KG_M2: "0.1"}
UNSUCCESSFUL = 0xFFFF


@characteristic(0x2A9D, "Weight Measurement")
@dataclass(frozen=True, slots=True)
class WeightMeasurement:
    """`weight.value` is Special.NAN when the scale reports 'measurement unsuccessful' (0xFFFF)."""

    UUID = 0x2A9D

    weight: Quantity
    timestamp: DateTime | None = None
    user_id: int | None = None
    bmi: Quantity | None = None
    height: Quantity | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> WeightMeasurement:
        r = Reader(data, "weight measurement")
        flags = r.u8("flags")
        mass, length = (LB, INCH) if flags & 0x01 else (KG, METRE)
        raw = r.u16("weight")
        weight = Quantity(Special.NAN, mass) if raw == UNSUCCESSFUL else scaled(raw, _STEP[mass], mass)
        ts = r.date_time("time stamp") if flags & 0x02 else None
        user = r.u8("user id") if flags & 0x04 else None
        bmi = height = None
        if flags & 0x08:
            bmi = scaled(r.u16("BMI"), _STEP[KG_M2], KG_M2)
            height = scaled(r.u16("height"), _STEP[length], length)
        r.end()
        return cls(weight, ts, user, bmi, height)

    def to_bytes(self) -> bytes:
        mass = in_unit(self.weight, (KG, LB), "weight")
        if (self.bmi is None) != (self.height is None):
            raise ValueError("BMI and height are sent together or not at all")
        flags = (0x01 if mass == LB else 0) | (0x02 if self.timestamp else 0)
        flags |= (0x04 if self.user_id is not None else 0) | (0x08 if self.bmi else 0)
        raw = UNSUCCESSFUL if isinstance(self.weight.value, Special) else unscaled(self.weight, _STEP[mass], "weight")
        w = Writer().uint(flags, 1).uint(raw, 2)
        if self.timestamp:
            w.date_time(self.timestamp)
        if self.user_id is not None:
            w.uint(self.user_id, 1)
        if self.bmi and self.height:
            in_unit(self.height, (INCH if mass == LB else METRE,), "height")
            w.uint(unscaled(self.bmi, _STEP[KG_M2], "BMI"), 2)
            w.uint(unscaled(self.height, _STEP[self.height.unit], "height"), 2)
        return w.bytes()


@characteristic(0x2A9E, "Weight Scale Feature")
@dataclass(frozen=True, slots=True)
class WeightScaleFeature:
    """Raw u32: b0 time stamp, b1 multiple users, b2 BMI, b3-6 weight resolution, b7-9 height resolution."""

    UUID = 0x2A9E

    features: int

    @classmethod
    def from_bytes(cls, data: bytes) -> WeightScaleFeature:
        r = Reader(data, "weight scale feature")
        value = r.uint(4, "features")
        r.end()
        return cls(value)

    def to_bytes(self) -> bytes:
        return self.features.to_bytes(4, "little")
