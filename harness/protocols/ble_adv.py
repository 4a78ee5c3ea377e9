"""BLE advertising data: AD structures, and pluggable decoders for manufacturer-specific data.

An advertisement is a run of AD structures: a length byte (type + data), a type byte, the data (Core Spec
Vol 3 Part C §11; types from the Assigned Numbers). A zero length ends the data early (padding).

Alarm buttons and fall detectors rarely use a standard GATT profile: they advertise, connectionless, either
BTHome (service data 0xFCD2, decoded by `harness.protocols.bthome`) or vendor bytes under a company id
(AD type 0xFF); or they list vtlab's 128-bit alarm service (`harness.protocols.ble_alarm`), which `to_json`
names under `vendor_services`, and report by GATT. Vendor formats are plugged in by company id:

    registry = ManufacturerRegistry()
    registry.register(0x1234, my_decoder, name="Acme fall sensor")   # my_decoder(bytes) -> a frozen event
    decode_advertisement(data, registry=registry)

`DEFAULT_REGISTRY` carries the documented example below (company id 0xFFFF, the id the SIG reserves for
tests); the lead exposes `register` as a plugin hook so a lab can add a vendor without touching this file.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.protocols import ble_alarm, bthome
from harness.protocols.base import ProtocolError

PROTOCOL = "ble-adv"
MAX_AD_BYTES = 1650
"""The longest extended advertising data a controller can deliver (chained PDUs); legacy is 31."""


class AdType(enum.IntEnum):
    FLAGS = 0x01
    INCOMPLETE_UUID16 = 0x02
    COMPLETE_UUID16 = 0x03
    INCOMPLETE_UUID32 = 0x04
    COMPLETE_UUID32 = 0x05
    INCOMPLETE_UUID128 = 0x06
    COMPLETE_UUID128 = 0x07
    SHORT_NAME = 0x08
    COMPLETE_NAME = 0x09
    TX_POWER = 0x0A
    SERVICE_DATA_UUID16 = 0x16
    APPEARANCE = 0x19
    SERVICE_DATA_UUID32 = 0x20
    SERVICE_DATA_UUID128 = 0x21
    MANUFACTURER_DATA = 0xFF


class AdFlags(enum.IntFlag):
    LE_LIMITED_DISCOVERABLE = 0x01
    LE_GENERAL_DISCOVERABLE = 0x02
    BR_EDR_NOT_SUPPORTED = 0x04
    SIMULTANEOUS_LE_BR_EDR_CONTROLLER = 0x08
    SIMULTANEOUS_LE_BR_EDR_HOST = 0x10


@dataclass(frozen=True, slots=True)
class AdStructure:
    ad_type: int
    data: bytes
    offset: int  # where its length byte was


def _uuid128_text(raw: bytes) -> str:
    h = raw[::-1].hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _uuid_text(raw: bytes) -> str:
    """16/32-bit UUIDs as upper-case hex ("180D"), 128-bit ones in the usual dashed form."""
    if len(raw) == 16:
        return _uuid128_text(raw)
    return f"{int.from_bytes(raw, 'little'):0{len(raw) * 2}X}"


@dataclass(frozen=True, slots=True)
class AdvertisingData:
    structures: tuple[AdStructure, ...]
    flags: AdFlags | None = None
    local_name: str | None = None
    complete_name: bool = False
    service_uuids: tuple[str, ...] = ()
    service_data: tuple[tuple[str, bytes], ...] = ()
    manufacturer_data: tuple[tuple[int, bytes], ...] = ()
    tx_power: int | None = None
    appearance: int | None = None

    def service_data_for(self, uuid: str) -> list[bytes]:
        return [d for u, d in self.service_data if u == uuid.upper()]


def parse(data: bytes) -> AdvertisingData:
    """Split advertising (or scan response) data into AD structures and read the common ones."""
    raw = bytes(data)
    if len(raw) > MAX_AD_BYTES:
        raise ProtocolError(PROTOCOL, f"{len(raw)} bytes is longer than any advertising data")
    structures: list[AdStructure] = []
    pos = 0
    while pos < len(raw):
        length = raw[pos]
        if length == 0:
            break  # early termination; the rest is padding
        if pos + 1 + length > len(raw):
            raise ProtocolError(
                PROTOCOL, f"AD structure of length {length} runs past the end ({len(raw) - pos - 1} left)", offset=pos
            )
        structures.append(AdStructure(raw[pos + 1], raw[pos + 2 : pos + 1 + length], pos))
        pos += 1 + length
    flags = name = tx = appearance = None
    complete = False
    uuids: list[str] = []
    sdata: list[tuple[str, bytes]] = []
    mdata: list[tuple[int, bytes]] = []
    for s in structures:
        t, d = s.ad_type, s.data
        if t == AdType.FLAGS:
            _need(s, 1)
            flags = AdFlags(d[0])
        elif t in (AdType.SHORT_NAME, AdType.COMPLETE_NAME):
            try:
                name = d.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(PROTOCOL, "local name is not UTF-8", offset=s.offset) from None
            complete = t == AdType.COMPLETE_NAME
        elif AdType.INCOMPLETE_UUID16 <= t <= AdType.COMPLETE_UUID128:
            width = {0x02: 2, 0x03: 2, 0x04: 4, 0x05: 4, 0x06: 16, 0x07: 16}[t]
            if len(d) % width:
                raise ProtocolError(
                    PROTOCOL, f"UUID list of {len(d)} bytes is not a multiple of {width}", offset=s.offset
                )
            uuids += [_uuid_text(d[i : i + width]) for i in range(0, len(d), width)]
        elif t in (AdType.SERVICE_DATA_UUID16, AdType.SERVICE_DATA_UUID32, AdType.SERVICE_DATA_UUID128):
            width = {0x16: 2, 0x20: 4, 0x21: 16}[t]
            _need(s, width)
            sdata.append((_uuid_text(d[:width]), d[width:]))
        elif t == AdType.MANUFACTURER_DATA:
            _need(s, 2)
            mdata.append((int.from_bytes(d[:2], "little"), d[2:]))
        elif t == AdType.TX_POWER:
            _need(s, 1)
            tx = int.from_bytes(d[:1], "little", signed=True)
        elif t == AdType.APPEARANCE:
            _need(s, 2)
            appearance = int.from_bytes(d[:2], "little")
    return AdvertisingData(
        tuple(structures), flags, name, complete, tuple(uuids), tuple(sdata), tuple(mdata), tx, appearance
    )


def _need(s: AdStructure, n: int) -> None:
    if len(s.data) < n:
        name = AdType(s.ad_type).name if s.ad_type in AdType._value2member_map_ else f"0x{s.ad_type:02X}"
        raise ProtocolError(PROTOCOL, f"{name} needs {n} bytes, has {len(s.data)}", offset=s.offset)


# --- building (vtlab playing an advertiser) -------------------------------------------------------------------


def ad(ad_type: int, data: bytes) -> bytes:
    if len(data) > 254:
        raise ValueError("an AD structure holds at most 254 bytes of data")
    return bytes([len(data) + 1, ad_type]) + data


def ad_flags(flags: int = AdFlags.LE_GENERAL_DISCOVERABLE | AdFlags.BR_EDR_NOT_SUPPORTED) -> bytes:
    return ad(AdType.FLAGS, bytes([int(flags)]))


def ad_name(name: str, *, complete: bool = True) -> bytes:
    return ad(AdType.COMPLETE_NAME if complete else AdType.SHORT_NAME, name.encode("utf-8"))


def ad_uuid16_list(uuids: list[int]) -> bytes:
    return ad(AdType.COMPLETE_UUID16, b"".join(u.to_bytes(2, "little") for u in uuids))


def ad_service_data16(uuid: int, data: bytes) -> bytes:
    return ad(AdType.SERVICE_DATA_UUID16, uuid.to_bytes(2, "little") + data)


def ad_manufacturer(company_id: int, data: bytes) -> bytes:
    return ad(AdType.MANUFACTURER_DATA, company_id.to_bytes(2, "little") + data)


# --- manufacturer-specific decoders -----------------------------------------------------------------------------

ManufacturerDecoder = Callable[[bytes], Any]
"""bytes after the company id -> a frozen event; raises ProtocolError for bytes it cannot accept."""


@dataclass(slots=True)
class ManufacturerRegistry:
    """Company id -> decoder. One decoder per id; registering twice is a mistake worth hearing about."""

    decoders: dict[int, tuple[str, ManufacturerDecoder]] = field(default_factory=dict)

    def register(self, company_id: int, decoder: ManufacturerDecoder, *, name: str, replace: bool = False) -> None:
        if not 0 <= company_id <= 0xFFFF:
            raise ValueError(f"company id {company_id} is not 16 bits")
        if company_id in self.decoders and not replace:
            raise ValueError(f"company id 0x{company_id:04X} already has a decoder ({self.decoders[company_id][0]})")
        self.decoders[company_id] = (name, decoder)

    def decode(self, company_id: int, data: bytes) -> Any | None:
        """The decoded event, or None when no decoder knows this company id."""
        entry = self.decoders.get(company_id)
        return entry[1](data) if entry else None

    def copy(self) -> ManufacturerRegistry:
        return ManufacturerRegistry(dict(self.decoders))


# The documented example: an alarm button / fall detector advertising its state.
EXAMPLE_COMPANY_ID = 0xFFFF
"""The SIG's id for tests and internal use, never a shipped product: safe for vtlab's simulated button."""


class AlarmState(enum.IntFlag):
    ALARM = 0x01  # the button is (or was just) pressed: a personal emergency
    FALL = 0x02  # the fall sensor fired
    LOW_BATTERY = 0x04
    TAMPER = 0x08
    OFF_BODY = 0x10  # not worn


@dataclass(frozen=True, slots=True)
class AlarmButtonAdvert:
    """vtlab's example vendor format (company id 0xFFFF), 5 bytes after the company id:

    version u8 (= 1) | state u8 (AlarmState bits) | battery u8 (0-100 %) | counter u16 LE

    The counter increases with each new event, so a receiver that sees the same advertisement many times
    counts one alarm, and a gap in counters is a lost event.
    """

    state: AlarmState
    battery_percent: int
    counter: int
    version: int = 1

    def to_bytes(self) -> bytes:
        if not 0 <= self.battery_percent <= 100:
            raise ValueError("battery is 0..100 %")
        return bytes([self.version, int(self.state), self.battery_percent]) + self.counter.to_bytes(2, "little")


def decode_alarm_button(data: bytes) -> AlarmButtonAdvert:
    if len(data) != 5:
        raise ProtocolError(PROTOCOL, f"alarm button data is {len(data)} bytes, expected 5")
    if data[0] != 1:
        raise ProtocolError(PROTOCOL, f"alarm button format version {data[0]}, only 1 is known", offset=0)
    if data[2] > 100:
        raise ProtocolError(PROTOCOL, f"alarm button battery {data[2]} % is above 100", offset=2)
    return AlarmButtonAdvert(AlarmState(data[1]), data[2], int.from_bytes(data[3:5], "little"), data[0])


DEFAULT_REGISTRY = ManufacturerRegistry()
DEFAULT_REGISTRY.register(EXAMPLE_COMPANY_ID, decode_alarm_button, name="vtlab example alarm button")


# --- everything at once -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedAdvertisement:
    """The parsed AD structures plus what the known decoders made of them.

    `errors` keeps a decoder's ProtocolError per payload (say an encrypted BTHome packet without a key), so
    one bad part does not hide the rest of the advertisement.
    """

    data: AdvertisingData
    bthome: bthome.BTHomePacket | None = None
    manufacturer: tuple[tuple[int, Any], ...] = ()
    errors: tuple[ProtocolError, ...] = ()


def decode_advertisement(
    data: bytes,
    *,
    registry: ManufacturerRegistry | None = None,
    bthome_key: bytes | None = None,
    address: str | None = None,
) -> DecodedAdvertisement:
    """Parse AD structures (ProtocolError if they are malformed), then decode BTHome and vendor payloads."""
    parsed = parse(data)
    reg = DEFAULT_REGISTRY if registry is None else registry
    packet = None
    errors: list[ProtocolError] = []
    for uuid, payload in parsed.service_data:
        if uuid == f"{bthome.UUID16:04X}":
            try:
                packet = bthome.decode(payload, key=bthome_key, address=address)
            except ProtocolError as exc:
                errors.append(exc)
    vendor: list[tuple[int, Any]] = []
    for company, payload in parsed.manufacturer_data:
        try:
            event = reg.decode(company, payload)
        except ProtocolError as exc:
            errors.append(exc)
            continue
        if event is not None:
            vendor.append((company, event))
    return DecodedAdvertisement(parsed, packet, tuple(vendor), tuple(errors))


def to_json(decoded: DecodedAdvertisement) -> dict[str, Any]:
    d = decoded.data
    out: dict[str, Any] = {
        "flags": [m.name for m in AdFlags if d.flags is not None and m in d.flags],
        "local_name": d.local_name,
        "service_uuids": list(d.service_uuids),
        "service_data": [{"uuid": u, "data": v.hex()} for u, v in d.service_data],
        "manufacturer_data": [{"company_id": f"0x{c:04X}", "data": v.hex()} for c, v in d.manufacturer_data],
        "tx_power": d.tx_power,
        "appearance": d.appearance,
    }
    if ble_alarm.SERVICE_UUID in d.service_uuids:  # a button that reports by GATT (harness.protocols.ble_alarm)
        out["vendor_services"] = [ble_alarm.service_json()]
    if decoded.bthome is not None:
        out["bthome"] = bthome.to_json(decoded.bthome)
    if decoded.manufacturer:
        from harness.protocols.ble._codec import to_json as reading_json

        out["decoded_manufacturer_data"] = [
            {"company_id": f"0x{c:04X}", "event": reading_json(e)} for c, e in decoded.manufacturer
        ]
    if decoded.errors:
        out["errors"] = [str(e) for e in decoded.errors]
    return out
