"""Pulse Oximeter service 0x1822: spot-check 0x2A5E (indicated), continuous 0x2A5F (notified), features 0x2A60.

Spot-check: flags u8 (b0 time stamp, b1 measurement status, b2 device and sensor status, b3 pulse amplitude
index, b4 device clock not set), SpO2 and PR as SFLOAT, then time stamp, status u16, device and sensor status
u24, PAI SFLOAT. Continuous: flags u8 (b0 SpO2PR-Fast, b1 SpO2PR-Slow, b2 measurement status, b3 device and
sensor status, b4 PAI), SpO2PR-Normal, then the optional pairs and fields in flag order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from harness.protocols.ble._codec import BPM, PERCENT, DateTime, Quantity, Reader, Writer, characteristic, in_unit


class PlxMeasurementStatus(enum.IntFlag):
    """Measurement Status field (u16); bits 0-4 reserved."""

    MEASUREMENT_ONGOING = 1 << 5
    EARLY_ESTIMATED_DATA = 1 << 6
    VALIDATED_DATA = 1 << 7
    FULLY_QUALIFIED_DATA = 1 << 8
    DATA_FROM_MEASUREMENT_STORAGE = 1 << 9
    DATA_FOR_DEMONSTRATION = 1 << 10
    DATA_FOR_TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    MEASUREMENT_UNAVAILABLE = 1 << 13
    QUESTIONABLE_MEASUREMENT = 1 << 14
    INVALID_MEASUREMENT = 1 << 15


class PlxDeviceStatus(enum.IntFlag):
    """Device and Sensor Status field (u24); bits 16-23 reserved."""

    EXTENDED_DISPLAY_UPDATE_ONGOING = 1 << 0
    EQUIPMENT_MALFUNCTION = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY = 1 << 2
    INADEQUATE_SIGNAL = 1 << 3
    POOR_SIGNAL = 1 << 4
    LOW_PERFUSION = 1 << 5
    ERRATIC_SIGNAL = 1 << 6
    NONPULSATILE_SIGNAL = 1 << 7
    QUESTIONABLE_PULSE = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE = 1 << 10
    SENSOR_UNCONNECTED_TO_USER = 1 << 11
    UNKNOWN_SENSOR_CONNECTED = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


@dataclass(frozen=True, slots=True)
class SpO2PR:
    """One oxygen saturation (%) and pulse rate (bpm) pair."""

    spo2: Quantity
    pulse_rate: Quantity


def _read_pair(r: Reader, name: str) -> SpO2PR:
    return SpO2PR(Quantity(r.sfloat(f"{name} SpO2"), PERCENT), Quantity(r.sfloat(f"{name} PR"), BPM))


def _write_pair(w: Writer, pair: SpO2PR) -> None:
    in_unit(pair.spo2, (PERCENT,), "SpO2")
    in_unit(pair.pulse_rate, (BPM,), "pulse rate")
    w.sfloat(pair.spo2.value).sfloat(pair.pulse_rate.value)


@characteristic(0x2A5E, "PLX Spot-Check Measurement")
@dataclass(frozen=True, slots=True)
class PlxSpotCheck:
    UUID = 0x2A5E

    spo2: Quantity
    pulse_rate: Quantity
    timestamp: DateTime | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_status: PlxDeviceStatus | None = None
    pulse_amplitude_index: Quantity | None = None
    device_clock_not_set: bool = False

    @classmethod
    def from_bytes(cls, data: bytes) -> PlxSpotCheck:
        r = Reader(data, "PLX spot-check measurement")
        flags = r.u8("flags")
        pair = _read_pair(r, "spot-check")
        ts = r.date_time("time stamp") if flags & 0x01 else None
        ms = PlxMeasurementStatus(r.u16("measurement status")) if flags & 0x02 else None
        ds = PlxDeviceStatus(r.uint(3, "device and sensor status")) if flags & 0x04 else None
        pai = Quantity(r.sfloat("pulse amplitude index"), PERCENT) if flags & 0x08 else None
        r.end()
        return cls(pair.spo2, pair.pulse_rate, ts, ms, ds, pai, bool(flags & 0x10))

    def to_bytes(self) -> bytes:
        flags = (0x01 if self.timestamp else 0) | (0x02 if self.measurement_status is not None else 0)
        flags |= 0x04 if self.device_status is not None else 0
        flags |= (0x08 if self.pulse_amplitude_index else 0) | (0x10 if self.device_clock_not_set else 0)
        w = Writer().uint(flags, 1)
        _write_pair(w, SpO2PR(self.spo2, self.pulse_rate))
        if self.timestamp:
            w.date_time(self.timestamp)
        if self.measurement_status is not None:
            w.uint(int(self.measurement_status), 2)
        if self.device_status is not None:
            w.uint(int(self.device_status), 3)
        if self.pulse_amplitude_index:
            w.sfloat(self.pulse_amplitude_index.value)
        return w.bytes()


@characteristic(0x2A5F, "PLX Continuous Measurement")
@dataclass(frozen=True, slots=True)
class PlxContinuous:
    UUID = 0x2A5F

    normal: SpO2PR
    fast: SpO2PR | None = None
    slow: SpO2PR | None = None
    measurement_status: PlxMeasurementStatus | None = None
    device_status: PlxDeviceStatus | None = None
    pulse_amplitude_index: Quantity | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> PlxContinuous:
        r = Reader(data, "PLX continuous measurement")
        flags = r.u8("flags")
        normal = _read_pair(r, "SpO2PR-Normal")
        fast = _read_pair(r, "SpO2PR-Fast") if flags & 0x01 else None
        slow = _read_pair(r, "SpO2PR-Slow") if flags & 0x02 else None
        ms = PlxMeasurementStatus(r.u16("measurement status")) if flags & 0x04 else None
        ds = PlxDeviceStatus(r.uint(3, "device and sensor status")) if flags & 0x08 else None
        pai = Quantity(r.sfloat("pulse amplitude index"), PERCENT) if flags & 0x10 else None
        r.end()
        return cls(normal, fast, slow, ms, ds, pai)

    def to_bytes(self) -> bytes:
        flags = (0x01 if self.fast else 0) | (0x02 if self.slow else 0)
        flags |= (0x04 if self.measurement_status is not None else 0) | (0x08 if self.device_status is not None else 0)
        flags |= 0x10 if self.pulse_amplitude_index else 0
        w = Writer().uint(flags, 1)
        for pair in (self.normal, self.fast, self.slow):
            if pair:
                _write_pair(w, pair)
        if self.measurement_status is not None:
            w.uint(int(self.measurement_status), 2)
        if self.device_status is not None:
            w.uint(int(self.device_status), 3)
        if self.pulse_amplitude_index:
            w.sfloat(self.pulse_amplitude_index.value)
        return w.bytes()


class PlxSupportedFeatures(enum.IntFlag):
    """PLX Features 0x2A60, Supported Features field (u16)."""

    MEASUREMENT_STATUS = 1 << 0
    DEVICE_AND_SENSOR_STATUS = 1 << 1
    MEASUREMENT_STORAGE_SPOT_CHECK = 1 << 2
    TIMESTAMP_SPOT_CHECK = 1 << 3
    SPO2PR_FAST = 1 << 4
    SPO2PR_SLOW = 1 << 5
    PULSE_AMPLITUDE_INDEX = 1 << 6
    MULTIPLE_BONDS = 1 << 7


@characteristic(0x2A60, "PLX Features")
@dataclass(frozen=True, slots=True)
class PlxFeatures:
    """Supported features, then the status masks the device can set (each present only if its bit says so)."""

    UUID = 0x2A60

    supported: PlxSupportedFeatures
    measurement_status_support: PlxMeasurementStatus | None = None
    device_status_support: PlxDeviceStatus | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> PlxFeatures:
        r = Reader(data, "PLX features")
        sup = PlxSupportedFeatures(r.u16("supported features"))
        ms = PlxMeasurementStatus(r.u16("measurement status support")) if sup & 0x01 else None
        ds = PlxDeviceStatus(r.uint(3, "device and sensor status support")) if sup & 0x02 else None
        r.end()
        return cls(sup, ms, ds)

    def to_bytes(self) -> bytes:
        sup = int(self.supported) & ~0x03
        sup |= (0x01 if self.measurement_status_support is not None else 0) | (
            0x02 if self.device_status_support is not None else 0
        )
        w = Writer().uint(sup, 2)
        if self.measurement_status_support is not None:
            w.uint(int(self.measurement_status_support), 2)
        if self.device_status_support is not None:
            w.uint(int(self.device_status_support), 3)
        return w.bytes()
