"""BTHome v2: sensor and button data in BLE advertisements (service data, 16-bit UUID 0xFCD2).

Layout (bthome.io/format): device information byte (b0 encrypted, b1 MAC included, b2 trigger based,
b5-7 version = 2), the 6-byte MAC (reversed) if b1, then objects: an object id byte followed by a fixed-size
little-endian value (a length byte first for text and raw). An unknown object id ends parsing with a
ProtocolError, since its size is unknown.

Encrypted payloads (b0) are AES-CCM with a 4-byte MIC: ciphertext, then a 4-byte counter and the MIC; the
nonce is MAC (6 bytes, as written) + 0xD2 0xFC + device information byte + counter. Without a key an
encrypted payload is refused with a ProtocolError that says so; with a key it is decrypted and checked.

Object table checked against the bthome-ble parser (Bluetooth-Devices/bthome-ble, src/bthome_ble/const.py).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from harness.protocols.base import ProtocolError

PROTOCOL = "bthome"
UUID16 = 0xFCD2
UUID_BYTES = b"\xd2\xfc"
MAX_PAYLOAD_BYTES = 255

_ENCRYPTED, _MAC_INCLUDED, _TRIGGER = 0x01, 0x02, 0x04


class ButtonEvent(enum.IntEnum):
    NONE = 0x00
    PRESS = 0x01
    DOUBLE_PRESS = 0x02
    TRIPLE_PRESS = 0x03
    LONG_PRESS = 0x04
    LONG_DOUBLE_PRESS = 0x05
    LONG_TRIPLE_PRESS = 0x06
    HOLD_PRESS = 0x80


class DimmerEvent(enum.IntEnum):
    NONE = 0x00
    ROTATE_LEFT = 0x01
    ROTATE_RIGHT = 0x02


@dataclass(frozen=True, slots=True)
class ObjectType:
    """One row of the BTHome object table: how many bytes, signed or not, the factor and the unit."""

    object_id: int
    name: str
    size: int  # 0: a length byte precedes the value
    signed: bool = False
    factor: str = "1"
    unit: str | None = None
    kind: str = "number"  # number, binary, button, dimmer, text, raw, firmware, timestamp


def _t(oid: int, name: str, size: int, factor: str = "1", unit: str | None = None, signed: bool = False) -> ObjectType:
    return ObjectType(oid, name, size, signed, factor, unit)


_BINARY = dict(
    zip(
        (0x0F, 0x10, 0x11, *range(0x15, 0x2E)),
        [
            "generic_boolean",
            "power",
            "opening",
            "battery_low",
            "battery_charging",
            "carbon_monoxide",
            "cold",
            "connectivity",
            "door",
            "garage_door",
            "gas",
            "heat",
            "light",
            "lock",
            "moisture_binary",
            "motion",
            "moving",
            "occupancy",
            "plug",
            "presence",
            "problem",
            "running",
            "safety",
            "smoke",
            "sound",
            "tamper",
            "vibration",
            "window",
        ],
        strict=True,
    )
)

OBJECT_TYPES: dict[int, ObjectType] = {
    t.object_id: t
    for t in (
        _t(0x00, "packet_id", 1),
        _t(0x01, "battery", 1, unit="%"),
        _t(0x02, "temperature", 2, "0.01", "Cel", signed=True),
        _t(0x03, "humidity", 2, "0.01", "%"),
        _t(0x04, "pressure", 3, "0.01", "hPa"),
        _t(0x05, "illuminance", 3, "0.01", "lx"),
        _t(0x06, "mass", 2, "0.01", "kg"),
        _t(0x07, "mass_lb", 2, "0.01", "lb"),
        _t(0x08, "dewpoint", 2, "0.01", "Cel", signed=True),
        _t(0x09, "count", 1),
        _t(0x0A, "energy", 3, "0.001", "kWh"),
        _t(0x0B, "power", 3, "0.01", "W"),
        _t(0x0C, "voltage", 2, "0.001", "V"),
        _t(0x0D, "pm2_5", 2, unit="ug/m3"),
        _t(0x0E, "pm10", 2, unit="ug/m3"),
        *(ObjectType(oid, name, 1, kind="binary") for oid, name in _BINARY.items()),
        _t(0x12, "co2", 2, unit="ppm"),
        _t(0x13, "tvoc", 2, unit="ug/m3"),
        _t(0x14, "moisture", 2, "0.01", "%"),
        _t(0x2E, "humidity", 1, unit="%"),
        _t(0x2F, "moisture", 1, unit="%"),
        ObjectType(0x3A, "button", 1, kind="button"),
        ObjectType(0x3C, "dimmer", 2, kind="dimmer"),
        _t(0x3D, "count", 2),
        _t(0x3E, "count", 4),
        _t(0x3F, "rotation", 2, "0.1", "deg", signed=True),
        _t(0x40, "distance_mm", 2, unit="mm"),
        _t(0x41, "distance_m", 2, "0.1", "m"),
        _t(0x42, "duration", 3, "0.001", "s"),
        _t(0x43, "current", 2, "0.001", "A"),
        _t(0x44, "speed", 2, "0.01", "m/s"),
        _t(0x45, "temperature", 2, "0.1", "Cel", signed=True),
        _t(0x46, "uv_index", 1, "0.1"),
        _t(0x47, "volume", 2, "0.1", "L"),
        _t(0x48, "volume", 2, unit="mL"),
        _t(0x49, "volume_flow_rate", 2, "0.001", "m3/h"),
        _t(0x4A, "voltage", 2, "0.1", "V"),
        _t(0x4B, "gas", 3, "0.001", "m3"),
        _t(0x4C, "gas", 4, "0.001", "m3"),
        _t(0x4D, "energy", 4, "0.001", "kWh"),
        _t(0x4E, "volume", 4, "0.001", "L"),
        _t(0x4F, "water", 4, "0.001", "L"),
        ObjectType(0x50, "timestamp", 4, unit="s", kind="timestamp"),
        _t(0x51, "acceleration", 2, "0.001", "m/s2"),
        _t(0x52, "gyroscope", 2, "0.001", "deg/s"),
        ObjectType(0x53, "text", 0, kind="text"),
        ObjectType(0x54, "raw", 0, kind="raw"),
        _t(0x55, "volume_storage", 4, "0.001", "L"),
        _t(0x56, "conductivity", 2, unit="uS/cm"),
        _t(0x57, "temperature", 1, "1", "Cel", signed=True),
        _t(0x58, "temperature", 1, "0.35", "Cel", signed=True),
        _t(0x59, "count", 1, signed=True),
        _t(0x5A, "count", 2, signed=True),
        _t(0x5B, "count", 4, signed=True),
        _t(0x5C, "power", 4, "0.01", "W", signed=True),
        _t(0x5D, "current", 2, "0.001", "A", signed=True),
        _t(0x5E, "direction", 2, "0.01", "deg"),
        _t(0x5F, "precipitation", 2, "0.1", "mm"),
        _t(0x60, "channel", 1),
        _t(0x61, "rotational_speed", 2, unit="rpm"),
        _t(0xF0, "device_type_id", 2),
        ObjectType(0xF1, "firmware_version", 4, kind="firmware"),
        ObjectType(0xF2, "firmware_version", 3, kind="firmware"),
    )
}

Value = Decimal | int | bool | str | bytes | ButtonEvent | DimmerEvent | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BTHomeObject:
    """One measurement or event. `value` is an exact Decimal for scaled numbers, an int for plain counts."""

    object_id: int
    name: str
    value: Value
    unit: str | None = None
    steps: int | None = None  # dimmer only


@dataclass(frozen=True, slots=True)
class BTHomePacket:
    version: int
    encrypted: bool
    trigger_based: bool
    objects: tuple[BTHomeObject, ...]
    mac: str | None = None  # only when the payload carries it
    counter: int | None = None  # encryption counter (replay protection), encrypted packets only

    def values(self, name: str) -> list[Value]:
        return [o.value for o in self.objects if o.name == name]

    @property
    def packet_id(self) -> int | None:
        ids = self.values("packet_id")
        return int(ids[0]) if ids else None  # type: ignore[arg-type]

    @property
    def battery(self) -> Decimal | int | None:
        found = self.values("battery")
        return found[0] if found else None  # type: ignore[return-value]

    @property
    def button_events(self) -> list[ButtonEvent | int]:
        return [v for v in self.values("button") if isinstance(v, int)]


def _mac_bytes(address: str) -> bytes:
    try:
        raw = bytes.fromhex(address.replace(":", "").replace("-", "")[:12])
    except ValueError:
        raise ValueError(f"{address!r} is not a Bluetooth address") from None
    if len(raw) != 6:
        raise ValueError(f"{address!r} is not a Bluetooth address")
    return raw


def _nonce(mac: bytes, info: int, counter: bytes) -> bytes:
    return mac + UUID_BYTES + bytes([info]) + counter


def decode(payload: bytes, *, key: bytes | None = None, address: str | None = None) -> BTHomePacket:
    """Decode BTHome service data (the bytes after the 0xFCD2 UUID).

    `address` is the advertiser's address ("AA:BB:CC:DD:EE:FF"), needed with `key` to decrypt unless the
    payload includes the MAC.
    """
    data = bytes(payload)
    if not data:
        raise ProtocolError(PROTOCOL, "empty service data: no device information byte")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(PROTOCOL, f"{len(data)} bytes is longer than any advertisement")
    info = data[0]
    version = info >> 5
    if version != 2:
        raise ProtocolError(PROTOCOL, f"BTHome version {version} (device information 0x{info:02X}); only v2", offset=0)
    pos = 1
    mac: str | None = None
    mac_raw: bytes | None = None
    if info & _MAC_INCLUDED:
        if len(data) < 7:
            raise ProtocolError(PROTOCOL, "truncated: MAC flagged but fewer than 6 bytes follow", offset=1)
        mac_raw = data[1:7][::-1]
        mac = ":".join(f"{b:02X}" for b in mac_raw)
        pos = 7
    body = data[pos:]
    counter: int | None = None
    if info & _ENCRYPTED:
        if key is None:
            raise ProtocolError(
                PROTOCOL, "payload is encrypted (device information bit 0); give the device's bind key to decode it"
            )
        if len(body) < 9:
            raise ProtocolError(PROTOCOL, f"encrypted payload of {len(body)} bytes: needs data, counter and MIC")
        if mac_raw is None:
            if address is None:
                raise ProtocolError(PROTOCOL, "encrypted payload without MAC: the advertiser's address is needed")
            mac_raw = _mac_bytes(address)
        body, counter = _decrypt(body, key, mac_raw, info), int.from_bytes(body[-8:-4], "little")
    objects = _parse_objects(body, pos)
    return BTHomePacket(2, bool(info & _ENCRYPTED), bool(info & _TRIGGER), objects, mac, counter)


def _decrypt(body: bytes, key: bytes, mac: bytes, info: int) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    if len(key) != 16:
        raise ValueError("a BTHome bind key is 16 bytes (32 hex digits)")
    ciphertext, counter, mic = body[:-8], body[-8:-4], body[-4:]
    try:
        return AESCCM(key, tag_length=4).decrypt(_nonce(mac, info, counter), ciphertext + mic, None)
    except InvalidTag:
        raise ProtocolError(PROTOCOL, "decryption failed: wrong bind key, wrong address, or altered payload") from None


def _parse_objects(body: bytes, base: int) -> tuple[BTHomeObject, ...]:
    out: list[BTHomeObject] = []
    pos = 0
    while pos < len(body):
        oid = body[pos]
        kind = OBJECT_TYPES.get(oid)
        if kind is None:
            raise ProtocolError(PROTOCOL, f"unknown object id 0x{oid:02X}: cannot know its size", offset=base + pos)
        pos += 1
        size = kind.size
        if size == 0:
            if pos >= len(body):
                raise ProtocolError(PROTOCOL, f"truncated: {kind.name} has no length byte", offset=base + pos)
            size = body[pos]
            pos += 1
        if pos + size > len(body):
            raise ProtocolError(
                PROTOCOL, f"truncated: {kind.name} needs {size} bytes, {len(body) - pos} left", offset=base + pos
            )
        raw = body[pos : pos + size]
        out.append(_object(kind, raw, base + pos))
        pos += size
    return tuple(out)


def _object(kind: ObjectType, raw: bytes, offset: int) -> BTHomeObject:
    if kind.kind == "binary":
        if raw[0] > 1:
            raise ProtocolError(PROTOCOL, f"{kind.name} is binary but holds {raw[0]}", offset=offset)
        return BTHomeObject(kind.object_id, kind.name, bool(raw[0]))
    if kind.kind == "button":
        try:
            return BTHomeObject(kind.object_id, kind.name, ButtonEvent(raw[0]))
        except ValueError:
            return BTHomeObject(kind.object_id, kind.name, raw[0])
    if kind.kind == "dimmer":
        try:
            event: DimmerEvent | int = DimmerEvent(raw[0])
        except ValueError:
            event = raw[0]
        return BTHomeObject(kind.object_id, kind.name, event, steps=raw[1])
    if kind.kind == "text":
        try:
            return BTHomeObject(kind.object_id, kind.name, raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(PROTOCOL, "text object is not UTF-8", offset=offset) from None
    if kind.kind == "raw":
        return BTHomeObject(kind.object_id, kind.name, raw)
    if kind.kind == "firmware":
        return BTHomeObject(kind.object_id, kind.name, tuple(reversed(raw)))
    number = int.from_bytes(raw, "little", signed=kind.signed)
    if kind.factor == "1":
        return BTHomeObject(kind.object_id, kind.name, number, kind.unit)
    return BTHomeObject(kind.object_id, kind.name, Decimal(number) * Decimal(kind.factor), kind.unit)


# --- encoding (vtlab playing a BTHome device) ----------------------------------------------------------------


def encode_object(object_id: int, value: Value, *, steps: int = 0) -> bytes:
    """One object: id byte and value. Numbers are given in the object's unit (21.5 for 21.5 Cel)."""
    kind = OBJECT_TYPES.get(object_id)
    if kind is None:
        raise ValueError(f"unknown BTHome object id 0x{object_id:02X}")
    head = bytes([object_id])
    if kind.kind in ("text", "raw"):
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)  # type: ignore[arg-type]
        if len(raw) > 255:
            raise ValueError(f"{kind.name} longer than 255 bytes")
        return head + bytes([len(raw)]) + raw
    if kind.kind == "dimmer":
        return head + bytes([int(value), steps])  # type: ignore[arg-type]
    if kind.kind == "firmware":
        if not isinstance(value, tuple) or len(value) != kind.size:
            raise ValueError(f"firmware version 0x{object_id:02X} is a tuple of {kind.size} ints")
        return head + bytes(reversed(value))
    if isinstance(value, bool | int | enum.IntEnum) and kind.factor == "1":
        number = int(value)
    else:
        scaled = Decimal(str(value)) / Decimal(kind.factor)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{kind.name} {value!r} is not a multiple of {kind.factor}")
        number = int(scaled)
    try:
        return head + number.to_bytes(kind.size, "little", signed=kind.signed)
    except OverflowError:
        raise ValueError(f"{kind.name} {value!r} does not fit in {kind.size} bytes") from None


def encode(
    objects: Iterable[tuple[int, Value]],
    *,
    trigger_based: bool = False,
    key: bytes | None = None,
    address: str | None = None,
    counter: int = 0,
    include_mac: str | None = None,
) -> bytes:
    """BTHome v2 service data (without the UUID). Objects are sorted by id, as the format asks.

    With `key`, the payload is encrypted for the advertiser `address` (or the `include_mac` carried inside).
    """
    items = sorted(objects, key=lambda item: item[0])
    body = b"".join(encode_object(oid, value) for oid, value in items)
    info = 0x40 | (_TRIGGER if trigger_based else 0) | (_ENCRYPTED if key is not None else 0)
    prefix = b""
    if include_mac is not None:
        info |= _MAC_INCLUDED
        prefix = _mac_bytes(include_mac)[::-1]
    if key is not None:
        from cryptography.hazmat.primitives.ciphers.aead import AESCCM

        mac_text = include_mac or address
        if mac_text is None:
            raise ValueError("encrypting needs the advertiser's address (or include_mac)")
        count = counter.to_bytes(4, "little")
        sealed = AESCCM(key, tag_length=4).encrypt(_nonce(_mac_bytes(mac_text), info, count), body, None)
        body = sealed[:-4] + count + sealed[-4:]
    return bytes([info]) + prefix + body


def service_data_ad(payload: bytes) -> bytes:
    """The whole AD structure (length, type 0x16 service data, UUID 0xFCD2, payload) for an advertisement."""
    return bytes([len(payload) + 3, 0x16]) + UUID_BYTES + payload


def to_json(packet: BTHomePacket) -> dict[str, object]:
    def shown(o: BTHomeObject) -> object:
        v = o.value
        if isinstance(v, enum.Enum):
            return v.name.lower()
        if isinstance(v, Decimal):
            return format(v, "f")
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, tuple):
            return ".".join(map(str, v))
        return v

    objects: list[dict[str, object]] = []
    for o in packet.objects:
        item: dict[str, object] = {"id": f"0x{o.object_id:02X}", "name": o.name, "value": shown(o)}
        if o.unit:
            item["unit"] = o.unit
        if o.steps is not None:
            item["steps"] = o.steps
        objects.append(item)
    return {
        "type": "BTHome",
        "version": packet.version,
        "encrypted": packet.encrypted,
        "trigger_based": packet.trigger_based,
        "mac": packet.mac,
        "counter": packet.counter,
        "objects": objects,
    }


__all__: Sequence[str] = (
    "OBJECT_TYPES",
    "UUID16",
    "BTHomeObject",
    "BTHomePacket",
    "ButtonEvent",
    "DimmerEvent",
    "ObjectType",
    "decode",
    "encode",
    "encode_object",
    "service_data_ad",
    "to_json",
)
