"""Bluetooth LE health profiles: decode any supported GATT characteristic value, encode any reading.

    decode("2A35", data)      -> BloodPressureMeasurement(...)   (or ProtocolError)
    encode(reading)           -> bytes
    to_json(reading)          -> dict (exact numbers as strings, units beside them)

Sans-I/O: the transports hand values in, the peripheral model takes bytes out. One module per profile lives
in `harness/protocols/ble/`; this module is the one place the rest of vtlab imports from.
"""

from __future__ import annotations

from typing import Any

from harness.protocols.base import ProtocolError
from harness.protocols.ble._codec import (
    BPM,
    CEL,
    DECODERS,
    DEGF,
    GRAM,
    INCH,
    KG,
    KG_M2,
    KJ,
    KPA,
    LB,
    LITRE,
    MAX_VALUE_BYTES,
    METRE,
    MG_DL,
    MINUTE,
    MMHG,
    MMOL_L,
    NAMES,
    PERCENT,
    PROTOCOL,
    SECOND,
    DateTime,
    Quantity,
    Reading,
    to_json,
)
from harness.protocols.ble.blood_pressure import (
    BloodPressureFeature,
    BloodPressureMeasurement,
    BpFeature,
    BpmStatus,
    IntermediateCuffPressure,
)
from harness.protocols.ble.device import (
    DIS_STRINGS,
    AlertLevel,
    AlertLevelValue,
    BatteryLevel,
    InfoString,
    PnpId,
    SystemId,
    decode_info_string,
)
from harness.protocols.ble.glucose import (
    Carbohydrate,
    GlucoseContext,
    GlucoseFeature,
    GlucoseMeasurement,
    GlucoseStatus,
    GlucoseType,
    Health,
    Meal,
    Medication,
    RacpFilter,
    RacpMessage,
    RacpNumberOfRecords,
    RacpOpcode,
    RacpOperator,
    RacpRequest,
    RacpResponse,
    RacpResponseCode,
    SampleLocation,
    Tester,
    decode_racp,
)
from harness.protocols.ble.heart_rate import (
    BodySensorLocation,
    BodySensorLocationValue,
    HeartRateControlPoint,
    HeartRateMeasurement,
    SensorContact,
)
from harness.protocols.ble.pulse_oximeter import (
    PlxContinuous,
    PlxDeviceStatus,
    PlxFeatures,
    PlxMeasurementStatus,
    PlxSpotCheck,
    PlxSupportedFeatures,
    SpO2PR,
)
from harness.protocols.ble.thermometer import (
    IntermediateTemperature,
    MeasurementInterval,
    TemperatureMeasurement,
    TemperatureType,
    TemperatureTypeValue,
)
from harness.protocols.ble.weight_scale import WeightMeasurement, WeightScaleFeature
from harness.protocols.ieee11073 import Special

SERVICES: dict[int, str] = {
    0x1822: "Pulse Oximeter",
    0x1810: "Blood Pressure",
    0x1809: "Health Thermometer",
    0x1808: "Glucose",
    0x181D: "Weight Scale",
    0x180D: "Heart Rate",
    0x180F: "Battery",
    0x180A: "Device Information",
    0x1802: "Immediate Alert",
    0x1811: "Alert Notification",
    0x1803: "Link Loss",
}

BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"


def uuid16(uuid: int | str) -> int:
    """A 16-bit SIG UUID from 0x2A35, "2A35", "0x2a35" or "00002a35-0000-1000-8000-00805f9b34fb".

    ValueError (the caller's input, not a peer's bytes) for anything else.
    """
    if isinstance(uuid, int):
        value = uuid
    else:
        text = uuid.strip().lower()
        if len(text) == 36 and text.endswith(BASE_UUID_SUFFIX) and text.startswith("0000"):
            text = text[4:8]
        value = int(text.removeprefix("0x"), 16)
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{uuid!r} is not a 16-bit Bluetooth SIG UUID")
    return value


def uuid128(uuid: int | str) -> str:
    """The full lower-case 128-bit form bleak uses; a 128-bit input is returned normalised."""
    if isinstance(uuid, str) and len(uuid.strip()) == 36:
        return uuid.strip().lower()
    return f"0000{uuid16(uuid):04x}{BASE_UUID_SUFFIX}"


def characteristic_name(uuid: int | str) -> str:
    return NAMES.get(uuid16(uuid), f"0x{uuid16(uuid):04X}")


def supported_uuids() -> list[int]:
    return sorted(DECODERS)


def decode(uuid: int | str, data: bytes) -> Any:
    """Decode one characteristic value. ProtocolError for malformed bytes; ValueError for an unknown UUID."""
    key = uuid16(uuid)
    decoder = DECODERS.get(key)
    if decoder is None:
        raise ValueError(
            f"no decoder for characteristic 0x{key:04X}; known: {', '.join(f'{u:04X}' for u in sorted(DECODERS))}"
        )
    return decoder(bytes(data))


def encode(reading: Reading) -> bytes:
    """The bytes a peripheral sends for `reading` (ValueError if a value cannot be sent exactly)."""
    return reading.to_bytes()


__all__ = [
    "BPM",
    "CEL",
    "DEGF",
    "DIS_STRINGS",
    "GRAM",
    "INCH",
    "KG",
    "KG_M2",
    "KJ",
    "KPA",
    "LB",
    "LITRE",
    "MAX_VALUE_BYTES",
    "METRE",
    "MG_DL",
    "MINUTE",
    "MMHG",
    "MMOL_L",
    "PERCENT",
    "PROTOCOL",
    "SECOND",
    "SERVICES",
    "AlertLevel",
    "AlertLevelValue",
    "BatteryLevel",
    "BloodPressureFeature",
    "BloodPressureMeasurement",
    "BodySensorLocation",
    "BodySensorLocationValue",
    "BpFeature",
    "BpmStatus",
    "Carbohydrate",
    "DateTime",
    "GlucoseContext",
    "GlucoseFeature",
    "GlucoseMeasurement",
    "GlucoseStatus",
    "GlucoseType",
    "Health",
    "HeartRateControlPoint",
    "HeartRateMeasurement",
    "InfoString",
    "IntermediateCuffPressure",
    "IntermediateTemperature",
    "Meal",
    "MeasurementInterval",
    "Medication",
    "PlxContinuous",
    "PlxDeviceStatus",
    "PlxFeatures",
    "PlxMeasurementStatus",
    "PlxSpotCheck",
    "PlxSupportedFeatures",
    "PnpId",
    "ProtocolError",
    "Quantity",
    "RacpFilter",
    "RacpMessage",
    "RacpNumberOfRecords",
    "RacpOpcode",
    "RacpOperator",
    "RacpRequest",
    "RacpResponse",
    "RacpResponseCode",
    "SampleLocation",
    "SensorContact",
    "SpO2PR",
    "Special",
    "SystemId",
    "TemperatureMeasurement",
    "TemperatureType",
    "TemperatureTypeValue",
    "Tester",
    "WeightMeasurement",
    "WeightScaleFeature",
    "characteristic_name",
    "decode",
    "decode_info_string",
    "decode_racp",
    "encode",
    "supported_uuids",
    "to_json",
    "uuid16",
    "uuid128",
]
