"""vtlab's example vendor GATT alarm service: an alarm button or worn fall detector that reports by notification.

The GATT twin of `ble_adv.AlarmButtonAdvert`. A button that keeps a connection to its home gateway (instead
of advertising connectionless) serves one vendor service with a 128-bit UUID, as vendors must (16-bit UUIDs
are the SIG's), and pushes each alarm on its alarm characteristic as a notification (or an indication, if
the gateway subscribed for confirmed delivery). The profile asks for an encrypted link: the button accepts a
subscription only once the gateway has paired (Just Works, LE Secure Connections).

    service  SERVICE_UUID
      alarm  ALARM_UUID   read, notify, indicate; subscription needs an encrypted link

The alarm value, 5 bytes, little-endian:

    version u8 (= 1) | state u8 (AlarmEvent) | battery u8 (0-100 %, 0xFF unknown) | counter u16

The counter increases with each new event (wrapping at 65535), so a gateway that hears the same value twice
(say resent after a reconnection) counts one alarm, and a gap is a lost event. Sans-I/O: bytes in, a frozen
`AlarmValue` out; malformed bytes raise ProtocolError.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from harness.protocols.base import ProtocolError

PROTOCOL = "ble-alarm"

SERVICE_UUID = "911e0001-0c92-42e3-97bf-2a12643687cd"
"""The vendor alarm service (a random v4 UUID: the 16-bit space belongs to the SIG)."""
ALARM_UUID = "911e0002-0c92-42e3-97bf-2a12643687cd"
"""The alarm characteristic within it."""
SERVICE_NAME = "vtlab alarm service"
ALARM_NAME = "vtlab alarm"
LAYOUT = "version u8 (= 1) | state u8 | battery u8 (0-100, 0xFF unknown) | counter u16 little-endian"
"""The value's layout in one line, for error messages (a tester holding the wrong bytes sees what is expected)."""

VERSION = 1
LENGTH = 5
BATTERY_UNKNOWN = 0xFF


class AlarmEvent(enum.IntEnum):
    """What the wearer or the sensor did. 0 is not an event (a button that sends it is broken)."""

    PRESS = 1  # a short press: personal emergency
    LONG_PRESS = 2  # held down: also a personal emergency (buttons that avoid accidental alarms use it)
    FALL = 3  # the fall sensor fired
    CANCEL = 4  # the wearer cancels the alarm just raised
    TAMPER = 5
    LOW_BATTERY = 6


@dataclass(frozen=True, slots=True)
class AlarmValue:
    """One value of the alarm characteristic. `battery_percent` is None when the button does not know it."""

    event: AlarmEvent
    battery_percent: int | None
    counter: int
    version: int = VERSION

    def to_bytes(self) -> bytes:
        if self.battery_percent is not None and not 0 <= self.battery_percent <= 100:
            raise ValueError("battery is 0..100 % (or None: unknown)")
        if not 0 <= self.counter <= 0xFFFF:
            raise ValueError("the counter is 16 bits")
        battery = BATTERY_UNKNOWN if self.battery_percent is None else self.battery_percent
        return bytes([self.version, int(self.event), battery]) + self.counter.to_bytes(2, "little")


def decode(data: bytes) -> AlarmValue:
    """The alarm characteristic's value; ProtocolError (with the byte offset) for anything malformed."""
    raw = bytes(data)
    if len(raw) != LENGTH:
        raise ProtocolError(PROTOCOL, f"alarm value is {len(raw)} bytes, expected {LENGTH}: {LAYOUT}")
    if raw[0] != VERSION:
        raise ProtocolError(PROTOCOL, f"alarm value format version {raw[0]}, only {VERSION} is known", offset=0)
    try:
        event = AlarmEvent(raw[1])
    except ValueError:
        known = ", ".join(f"{e.value} {e.name}" for e in AlarmEvent)
        raise ProtocolError(PROTOCOL, f"alarm state {raw[1]} is not a known event ({known})", offset=1) from None
    battery = raw[2]
    if battery > 100 and battery != BATTERY_UNKNOWN:
        raise ProtocolError(PROTOCOL, f"battery {battery} % is above 100", offset=2)
    return AlarmValue(event, None if battery == BATTERY_UNKNOWN else battery, int.from_bytes(raw[3:5], "little"))


def to_json(value: AlarmValue) -> dict[str, Any]:
    """The value as `vtlab decode ble` prints it: the event by name, an unknown battery as null."""
    return {
        "type": "AlarmValue",
        "event": value.event.name,
        "battery_percent": value.battery_percent,
        "counter": value.counter,
        "version": value.version,
    }


def service_json() -> dict[str, Any]:
    """What an advertisement listing SERVICE_UUID tells a reader: where the alarms will come from."""
    return {
        "uuid": SERVICE_UUID,
        "name": SERVICE_NAME,
        "alarm_characteristic": ALARM_UUID,
        "reports_by": "GATT notification or indication after connecting and pairing (Just Works)",
    }


def uuid128_bytes(uuid: str) -> bytes:
    """A 128-bit UUID's text form as it goes on the air (little-endian, as in AD structures and ATT)."""
    text = uuid.strip().lower()
    parts = text.split("-")
    if len(text) != 36 or [len(p) for p in parts] != [8, 4, 4, 4, 12]:
        raise ValueError(f"{uuid!r} is not a 128-bit UUID (8-4-4-4-12 hex digits)")
    return bytes.fromhex("".join(parts))[::-1]


def advertisement(name: str = "") -> bytes:
    """Connectable advertising data of a button that reports by notification: flags, the complete list of
    128-bit service UUIDs (the alarm service, so a gateway knows to connect) and as much of `name` as fits
    in the 31 bytes of a legacy advertisement."""
    flags = bytes([2, 0x01, 0x06])  # LE General Discoverable, BR/EDR not supported
    uuids = bytes([17, 0x07]) + uuid128_bytes(SERVICE_UUID)  # AD type 0x07: complete list of 128-bit UUIDs
    room = 31 - len(flags) - len(uuids) - 2
    short = name.encode("utf-8")[:room]
    if not short:
        return flags + uuids
    while True:  # never cut a UTF-8 character in half
        try:
            short.decode("utf-8")
            break
        except UnicodeDecodeError:
            short = short[:-1]
    kind = 0x09 if len(short) == len(name.encode("utf-8")) else 0x08  # complete or shortened local name
    return flags + uuids + bytes([len(short) + 1, kind]) + short
