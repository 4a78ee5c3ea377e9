"""Glucose service 0x1808: measurement 0x2A18, context 0x2A34, feature 0x2A51, Record Access Control Point 0x2A52.

Glucose Measurement: flags u8 (b0 time offset, b1 concentration + type/location, b2 units mol/L (else kg/L),
b3 sensor status annunciation, b4 context follows), sequence u16, base time (7), time offset s16 minutes,
concentration SFLOAT, type (low nibble) and sample location (high nibble) u8, status u16.
Concentrations are given in mg/dL (from kg/L, x 10^5) and mmol/L (from mol/L, x 10^3), exactly.

Context: flags u8 (b0 carbohydrate, b1 meal, b2 tester-health, b3 exercise, b4 medication, b5 medication in
litres (else kg), b6 HbA1c, b7 extended flags), sequence u16, then the fields in flag order.

RACP: opcode u8, operator u8, operand. Requests carry a filter type (1 sequence number, 2 user facing time)
and one or two filter values; the meter answers with opcode 5 (number of records, u16) or 6 (response code:
request opcode u8, response code u8) with operator 0 (null).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal

from harness.protocols.base import ProtocolError
from harness.protocols.ble._codec import (
    KG,
    LITRE,
    MG_DL,
    MINUTE,
    MMOL_L,
    PERCENT,
    PROTOCOL,
    SECOND,
    DateTime,
    Quantity,
    Reader,
    Writer,
    characteristic,
    enum_or_int,
    in_unit,
)
from harness.protocols.ieee11073 import Number, Special

_KG_L_TO_MG_DL = 5  # 1 kg/L = 10^5 mg/dL
_MOL_L_TO_MMOL_L = 3


class GlucoseType(enum.IntEnum):
    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class SampleLocation(enum.IntEnum):
    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


class GlucoseStatus(enum.IntFlag):
    """Sensor Status Annunciation (u16)."""

    BATTERY_LOW = 1 << 0
    SENSOR_MALFUNCTION = 1 << 1
    SAMPLE_SIZE_INSUFFICIENT = 1 << 2
    STRIP_INSERTION_ERROR = 1 << 3
    STRIP_TYPE_INCORRECT = 1 << 4
    RESULT_TOO_HIGH = 1 << 5
    RESULT_TOO_LOW = 1 << 6
    TEMPERATURE_TOO_HIGH = 1 << 7
    TEMPERATURE_TOO_LOW = 1 << 8
    READ_INTERRUPTED = 1 << 9
    GENERAL_DEVICE_FAULT = 1 << 10
    TIME_FAULT = 1 << 11


def _scale(value: Number, places: int) -> Number:
    return value if isinstance(value, Special) else value.scaleb(places)


@characteristic(0x2A18, "Glucose Measurement")
@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    UUID = 0x2A18

    sequence_number: int
    base_time: DateTime
    time_offset: Quantity | None = None
    concentration: Quantity | None = None
    glucose_type: GlucoseType | int | None = None
    sample_location: SampleLocation | int | None = None
    status: GlucoseStatus | None = None
    context_follows: bool = False

    @classmethod
    def from_bytes(cls, data: bytes) -> GlucoseMeasurement:
        r = Reader(data, "glucose measurement")
        flags = r.u8("flags")
        seq = r.u16("sequence number")
        base = r.date_time("base time")
        offset = Quantity(Decimal(r.sint(2, "time offset")), MINUTE) if flags & 0x01 else None
        conc = kind = loc = None
        if flags & 0x02:
            raw = r.sfloat("glucose concentration")
            conc = (
                Quantity(_scale(raw, _MOL_L_TO_MMOL_L), MMOL_L)
                if flags & 0x04
                else Quantity(_scale(raw, _KG_L_TO_MG_DL), MG_DL)
            )
            type_loc = r.u8("type and sample location")
            kind = enum_or_int(GlucoseType, type_loc & 0x0F)
            loc = enum_or_int(SampleLocation, type_loc >> 4)
        status = GlucoseStatus(r.u16("sensor status annunciation")) if flags & 0x08 else None
        r.end()
        return cls(seq, base, offset, conc, kind, loc, status, bool(flags & 0x10))

    def to_bytes(self) -> bytes:
        flags = (0x01 if self.time_offset else 0) | (0x02 if self.concentration else 0)
        flags |= (0x08 if self.status is not None else 0) | (0x10 if self.context_follows else 0)
        if self.concentration and in_unit(self.concentration, (MG_DL, MMOL_L), "glucose") == MMOL_L:
            flags |= 0x04
        w = Writer().uint(flags, 1).uint(self.sequence_number, 2).date_time(self.base_time)
        if self.time_offset:
            in_unit(self.time_offset, (MINUTE,), "time offset")
            w.sint(int(self.time_offset.value), 2)  # type: ignore[arg-type]
        if self.concentration:
            places = _MOL_L_TO_MMOL_L if self.concentration.unit == MMOL_L else _KG_L_TO_MG_DL
            w.sfloat(_scale(self.concentration.value, -places))
            w.uint((int(self.sample_location or 0) << 4) | int(self.glucose_type or 0), 1)
        if self.status is not None:
            w.uint(int(self.status), 2)
        return w.bytes()


class Carbohydrate(enum.IntEnum):
    BREAKFAST = 1
    LUNCH = 2
    DINNER = 3
    SNACK = 4
    DRINK = 5
    SUPPER = 6
    BRUNCH = 7


class Meal(enum.IntEnum):
    PREPRANDIAL = 1
    POSTPRANDIAL = 2
    FASTING = 3
    CASUAL = 4
    BEDTIME = 5


class Tester(enum.IntEnum):
    SELF = 1
    HEALTH_CARE_PROFESSIONAL = 2
    LAB_TEST = 3
    NOT_AVAILABLE = 15


class Health(enum.IntEnum):
    MINOR_HEALTH_ISSUES = 1
    MAJOR_HEALTH_ISSUES = 2
    DURING_MENSES = 3
    UNDER_STRESS = 4
    NO_HEALTH_ISSUES = 5
    NOT_AVAILABLE = 15


class Medication(enum.IntEnum):
    RAPID_ACTING_INSULIN = 1
    SHORT_ACTING_INSULIN = 2
    INTERMEDIATE_ACTING_INSULIN = 3
    LONG_ACTING_INSULIN = 4
    PRE_MIXED_INSULIN = 5


@characteristic(0x2A34, "Glucose Measurement Context")
@dataclass(frozen=True, slots=True)
class GlucoseContext:
    """Carbohydrate in kg and medication in kg or L, as the characteristic carries them (no rescaling)."""

    UUID = 0x2A34

    sequence_number: int
    extended_flags: int | None = None
    carbohydrate: Carbohydrate | int | None = None
    carbohydrate_amount: Quantity | None = None
    meal: Meal | int | None = None
    tester: Tester | int | None = None
    health: Health | int | None = None
    exercise_duration: Quantity | None = None
    exercise_intensity: Quantity | None = None
    medication: Medication | int | None = None
    medication_amount: Quantity | None = None
    hba1c: Quantity | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> GlucoseContext:
        r = Reader(data, "glucose measurement context")
        flags = r.u8("flags")
        seq = r.u16("sequence number")
        ext = r.u8("extended flags") if flags & 0x80 else None
        carb = carb_amount = meal = tester = health = duration = intensity = med = med_amount = hba1c = None
        if flags & 0x01:
            carb = enum_or_int(Carbohydrate, r.u8("carbohydrate id"))
            carb_amount = Quantity(r.sfloat("carbohydrate"), KG)
        if flags & 0x02:
            meal = enum_or_int(Meal, r.u8("meal"))
        if flags & 0x04:
            th = r.u8("tester-health")
            tester, health = enum_or_int(Tester, th & 0x0F), enum_or_int(Health, th >> 4)
        if flags & 0x08:
            duration = Quantity(Decimal(r.u16("exercise duration")), SECOND)
            intensity = Quantity(Decimal(r.u8("exercise intensity")), PERCENT)
        if flags & 0x10:
            med = enum_or_int(Medication, r.u8("medication id"))
            med_amount = Quantity(r.sfloat("medication"), LITRE if flags & 0x20 else KG)
        if flags & 0x40:
            hba1c = Quantity(r.sfloat("HbA1c"), PERCENT)
        r.end()
        return cls(seq, ext, carb, carb_amount, meal, tester, health, duration, intensity, med, med_amount, hba1c)

    def to_bytes(self) -> bytes:
        flags = (0x01 if self.carbohydrate is not None else 0) | (0x02 if self.meal is not None else 0)
        flags |= 0x04 if (self.tester is not None or self.health is not None) else 0
        flags |= 0x08 if self.exercise_duration is not None else 0
        flags |= 0x10 if self.medication is not None else 0
        if self.medication is not None and self.medication_amount and self.medication_amount.unit == LITRE:
            flags |= 0x20
        flags |= (0x40 if self.hba1c else 0) | (0x80 if self.extended_flags is not None else 0)
        w = Writer().uint(flags, 1).uint(self.sequence_number, 2)
        if self.extended_flags is not None:
            w.uint(self.extended_flags, 1)
        if self.carbohydrate is not None:
            amount = self.carbohydrate_amount or Quantity(Special.NAN, KG)
            w.uint(int(self.carbohydrate), 1).sfloat(amount.value)
        if self.meal is not None:
            w.uint(int(self.meal), 1)
        if flags & 0x04:
            w.uint((int(self.health or 0) << 4) | int(self.tester or 0), 1)
        if self.exercise_duration is not None:
            intensity = self.exercise_intensity.value if self.exercise_intensity else 0
            w.uint(int(self.exercise_duration.value), 2).uint(int(intensity), 1)  # type: ignore[arg-type]
        if self.medication is not None:
            amount = self.medication_amount or Quantity(Special.NAN, KG)
            w.uint(int(self.medication), 1).sfloat(amount.value)
        if self.hba1c:
            w.sfloat(self.hba1c.value)
        return w.bytes()


@characteristic(0x2A51, "Glucose Feature")
@dataclass(frozen=True, slots=True)
class GlucoseFeature:
    """Raw u16 feature bits (b0 low battery detection ... b10 multiple bond)."""

    UUID = 0x2A51

    features: int

    @classmethod
    def from_bytes(cls, data: bytes) -> GlucoseFeature:
        r = Reader(data, "glucose feature")
        value = r.u16("features")
        r.end()
        return cls(value)

    def to_bytes(self) -> bytes:
        return self.features.to_bytes(2, "little")


# --- Record Access Control Point -----------------------------------------------------------------------------


class RacpOpcode(enum.IntEnum):
    REPORT_STORED_RECORDS = 1
    DELETE_STORED_RECORDS = 2
    ABORT_OPERATION = 3
    REPORT_NUMBER_OF_STORED_RECORDS = 4
    NUMBER_OF_STORED_RECORDS_RESPONSE = 5
    RESPONSE_CODE = 6


class RacpOperator(enum.IntEnum):
    NULL = 0
    ALL_RECORDS = 1
    LESS_THAN_OR_EQUAL = 2
    GREATER_THAN_OR_EQUAL = 3
    WITHIN_RANGE = 4
    FIRST_RECORD = 5
    LAST_RECORD = 6


class RacpFilter(enum.IntEnum):
    SEQUENCE_NUMBER = 1
    USER_FACING_TIME = 2


class RacpResponseCode(enum.IntEnum):
    SUCCESS = 1
    OPCODE_NOT_SUPPORTED = 2
    INVALID_OPERATOR = 3
    OPERATOR_NOT_SUPPORTED = 4
    INVALID_OPERAND = 5
    NO_RECORDS_FOUND = 6
    ABORT_UNSUCCESSFUL = 7
    PROCEDURE_NOT_COMPLETED = 8
    OPERAND_NOT_SUPPORTED = 9


_FILTERED = {RacpOperator.LESS_THAN_OR_EQUAL: 1, RacpOperator.GREATER_THAN_OR_EQUAL: 1, RacpOperator.WITHIN_RANGE: 2}


@dataclass(frozen=True, slots=True)
class RacpRequest:
    """A collector's request (opcodes 1-4). `bounds` holds 1 or 2 sequence numbers or DateTimes."""

    UUID = 0x2A52

    opcode: RacpOpcode
    operator: RacpOperator | int
    filter_type: RacpFilter | int | None = None
    bounds: tuple[int | DateTime, ...] = ()

    def to_bytes(self) -> bytes:
        w = Writer().uint(int(self.opcode), 1).uint(int(self.operator), 1)
        if self.filter_type is not None:
            w.uint(int(self.filter_type), 1)
            for b in self.bounds:
                if isinstance(b, DateTime):
                    w.date_time(b)
                else:
                    w.uint(b, 2)
        return w.bytes()


@dataclass(frozen=True, slots=True)
class RacpNumberOfRecords:
    UUID = 0x2A52

    count: int

    def to_bytes(self) -> bytes:
        return Writer().uint(RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE, 1).uint(0, 1).uint(self.count, 2).bytes()


@dataclass(frozen=True, slots=True)
class RacpResponse:
    UUID = 0x2A52

    request_opcode: RacpOpcode | int
    response_code: RacpResponseCode | int

    def to_bytes(self) -> bytes:
        return bytes([RacpOpcode.RESPONSE_CODE, 0, int(self.request_opcode), int(self.response_code)])


RacpMessage = RacpRequest | RacpNumberOfRecords | RacpResponse


def decode_racp(data: bytes) -> RacpMessage:
    """Either direction of the control point: requests written by a collector, indications from the meter."""
    r = Reader(data, "record access control point")
    opcode_raw = r.u8("opcode")
    operator_raw = r.u8("operator")
    try:
        opcode = RacpOpcode(opcode_raw)
    except ValueError:
        raise ProtocolError(PROTOCOL, f"RACP: unknown opcode {opcode_raw}", offset=0) from None
    if opcode == RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        if operator_raw != RacpOperator.NULL:
            raise ProtocolError(PROTOCOL, f"RACP: response with operator {operator_raw}, not null", offset=1)
        if r.remaining not in (2, 4):
            raise ProtocolError(PROTOCOL, f"RACP: number of records is {r.remaining} bytes, not 2 or 4", offset=2)
        return RacpNumberOfRecords(r.uint(r.remaining, "number of records"))
    if opcode == RacpOpcode.RESPONSE_CODE:
        if operator_raw != RacpOperator.NULL:
            raise ProtocolError(PROTOCOL, f"RACP: response with operator {operator_raw}, not null", offset=1)
        req = enum_or_int(RacpOpcode, r.u8("request opcode"))
        code = enum_or_int(RacpResponseCode, r.u8("response code"))
        r.end()
        return RacpResponse(req, code)
    operator = enum_or_int(RacpOperator, operator_raw)
    n = _FILTERED.get(operator) if isinstance(operator, RacpOperator) else None
    if not n or r.remaining == 0:
        r.end()
        return RacpRequest(opcode, operator)
    filter_type = enum_or_int(RacpFilter, r.u8("filter type"))
    bounds: list[int | DateTime] = []
    for i in range(n):
        if filter_type == RacpFilter.SEQUENCE_NUMBER:
            bounds.append(r.u16(f"sequence number bound {i + 1}"))
        elif filter_type == RacpFilter.USER_FACING_TIME:
            bounds.append(r.date_time(f"user facing time bound {i + 1}"))
        else:
            raise ProtocolError(PROTOCOL, f"RACP: filter type {filter_type} has no known operand layout", offset=2)
    r.end()
    return RacpRequest(opcode, operator, filter_type, tuple(bounds))


# registered by hand: one UUID, three message shapes
from harness.protocols.ble._codec import DECODERS, NAMES  # noqa: E402

DECODERS[0x2A52] = decode_racp
NAMES[0x2A52] = "Record Access Control Point"
