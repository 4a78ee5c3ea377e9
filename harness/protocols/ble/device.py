"""Battery 0x180F, Device Information 0x180A, and the alert level used by Immediate Alert / Link Loss.

Device information strings are UTF-8 without a terminator; a trailing NUL some firmwares send is dropped.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from harness.protocols.base import ProtocolError
from harness.protocols.ble._codec import (
    DECODERS,
    NAMES,
    PERCENT,
    PROTOCOL,
    Quantity,
    Reader,
    characteristic,
    enum_or_int,
)


@characteristic(0x2A19, "Battery Level")
@dataclass(frozen=True, slots=True)
class BatteryLevel:
    UUID = 0x2A19

    level: Quantity

    @classmethod
    def from_bytes(cls, data: bytes) -> BatteryLevel:
        r = Reader(data, "battery level")
        value = r.u8("level")
        r.end()
        if value > 100:
            raise ProtocolError(PROTOCOL, f"battery level {value} % is above 100", offset=0)
        return cls(Quantity(Decimal(value), PERCENT))

    def to_bytes(self) -> bytes:
        if self.level.unit != PERCENT:
            raise ValueError("battery level is in %")
        return bytes([int(self.level.value)])  # type: ignore[arg-type]


DIS_STRINGS: dict[int, str] = {
    0x2A29: "Manufacturer Name String",
    0x2A24: "Model Number String",
    0x2A25: "Serial Number String",
    0x2A27: "Hardware Revision String",
    0x2A26: "Firmware Revision String",
    0x2A28: "Software Revision String",
    0x2A00: "Device Name",
}


@dataclass(frozen=True, slots=True)
class InfoString:
    """One of the Device Information strings (or the GAP device name); `uuid` says which."""

    uuid: int
    text: str

    @property
    def UUID(self) -> int:
        return self.uuid

    def to_bytes(self) -> bytes:
        return self.text.encode("utf-8")


def decode_info_string(uuid: int, data: bytes) -> InfoString:
    r = Reader(data, DIS_STRINGS.get(uuid, "string"))
    raw = r.take(r.remaining, "text").rstrip(b"\x00")
    try:
        return InfoString(uuid, raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError(PROTOCOL, f"{DIS_STRINGS.get(uuid, 'string')}: not UTF-8", offset=exc.start) from None


def _string_decoder(uuid: int) -> Callable[[bytes], InfoString]:
    return lambda data: decode_info_string(uuid, data)


for _uuid, _name in DIS_STRINGS.items():
    DECODERS[_uuid] = _string_decoder(_uuid)
    NAMES[_uuid] = _name


@characteristic(0x2A23, "System ID")
@dataclass(frozen=True, slots=True)
class SystemId:
    """40-bit manufacturer identifier and 24-bit organizationally unique identifier."""

    UUID = 0x2A23

    manufacturer_identifier: int
    oui: int

    @classmethod
    def from_bytes(cls, data: bytes) -> SystemId:
        r = Reader(data, "system id")
        result = cls(r.uint(5, "manufacturer identifier"), r.uint(3, "OUI"))
        r.end()
        return result

    def to_bytes(self) -> bytes:
        return self.manufacturer_identifier.to_bytes(5, "little") + self.oui.to_bytes(3, "little")


@characteristic(0x2A50, "PnP ID")
@dataclass(frozen=True, slots=True)
class PnpId:
    """Vendor id source (1 Bluetooth SIG, 2 USB-IF), vendor id, product id, product version."""

    UUID = 0x2A50

    vendor_id_source: int
    vendor_id: int
    product_id: int
    product_version: int

    @classmethod
    def from_bytes(cls, data: bytes) -> PnpId:
        r = Reader(data, "PnP id")
        result = cls(r.u8("vendor id source"), r.u16("vendor id"), r.u16("product id"), r.u16("product version"))
        r.end()
        return result

    def to_bytes(self) -> bytes:
        return bytes([self.vendor_id_source]) + b"".join(
            v.to_bytes(2, "little") for v in (self.vendor_id, self.product_id, self.product_version)
        )


class AlertLevelValue(enum.IntEnum):
    NO_ALERT = 0
    MILD_ALERT = 1
    HIGH_ALERT = 2


@characteristic(0x2A06, "Alert Level")
@dataclass(frozen=True, slots=True)
class AlertLevel:
    UUID = 0x2A06

    level: AlertLevelValue | int

    @classmethod
    def from_bytes(cls, data: bytes) -> AlertLevel:
        r = Reader(data, "alert level")
        value = enum_or_int(AlertLevelValue, r.u8("level"))
        r.end()
        return cls(value)

    def to_bytes(self) -> bytes:
        return bytes([int(self.level)])
