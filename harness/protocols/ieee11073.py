"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit), the number formats of the Bluetooth health profiles.

Values decode to exact `decimal.Decimal`s that keep the device's precision (0xF014 is `Decimal("2.0")`, not
`2`), so a reading re-encodes to the same bytes and a report shows what the meter claimed, not a binary
float's approximation. The reserved mantissas decode to `Special` members, never to a number.

A special value is the exact 16/32-bit pattern with exponent 0 (as Wireshark, Zephyr's sfloat.h and the HL7
PHD implementation guide read it); the encoders never produce those mantissas for ordinary numbers.
"""

from __future__ import annotations

import enum
from decimal import Decimal

from harness.protocols.base import ProtocolError

PROTOCOL = "ieee11073"


class Special(enum.Enum):
    """The reserved values: a reading field that holds one of these carries no number."""

    NAN = "NaN"
    NRES = "NRes"
    POS_INF = "+INF"
    NEG_INF = "-INF"
    RESERVED = "reserved"


Number = Decimal | Special
"""What an SFLOAT or FLOAT field decodes to."""

SFLOAT_SPECIALS: dict[int, Special] = {
    0x07FF: Special.NAN,
    0x0800: Special.NRES,
    0x07FE: Special.POS_INF,
    0x0802: Special.NEG_INF,
    0x0801: Special.RESERVED,
}
FLOAT_SPECIALS: dict[int, Special] = {
    0x007FFFFF: Special.NAN,
    0x00800000: Special.NRES,
    0x007FFFFE: Special.POS_INF,
    0x00800002: Special.NEG_INF,
    0x00800001: Special.RESERVED,
}
_SFLOAT_RAW = {v: k for k, v in SFLOAT_SPECIALS.items()}
_FLOAT_RAW = {v: k for k, v in FLOAT_SPECIALS.items()}

SFLOAT_MANTISSA_MAX = 2045
"""Largest |mantissa| of an ordinary SFLOAT: 2046..2048 are the special patterns' mantissas."""
FLOAT_MANTISSA_MAX = 8388605


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def sfloat_from_raw(raw: int) -> Number:
    """Decode a 16-bit SFLOAT given as an unsigned integer (0..0xFFFF)."""
    if not 0 <= raw <= 0xFFFF:
        raise ProtocolError(PROTOCOL, f"SFLOAT raw value {raw} is not 16 bits")
    if raw in SFLOAT_SPECIALS:
        return SFLOAT_SPECIALS[raw]
    return Decimal(_signed(raw & 0x0FFF, 12)).scaleb(_signed(raw >> 12, 4))


def float_from_raw(raw: int) -> Number:
    """Decode a 32-bit FLOAT given as an unsigned integer (0..0xFFFFFFFF)."""
    if not 0 <= raw <= 0xFFFFFFFF:
        raise ProtocolError(PROTOCOL, f"FLOAT raw value {raw} is not 32 bits")
    if raw in FLOAT_SPECIALS:
        return FLOAT_SPECIALS[raw]
    return Decimal(_signed(raw & 0xFFFFFF, 24)).scaleb(_signed(raw >> 24, 8))


def decode_sfloat(data: bytes, offset: int = 0) -> Number:
    """SFLOAT at `offset` of `data` (little-endian, as every GATT characteristic sends it)."""
    if len(data) < offset + 2:
        raise ProtocolError(PROTOCOL, "SFLOAT needs 2 bytes", offset=offset)
    return sfloat_from_raw(int.from_bytes(data[offset : offset + 2], "little"))


def decode_float(data: bytes, offset: int = 0) -> Number:
    """FLOAT at `offset` of `data` (little-endian)."""
    if len(data) < offset + 4:
        raise ProtocolError(PROTOCOL, "FLOAT needs 4 bytes", offset=offset)
    return float_from_raw(int.from_bytes(data[offset : offset + 4], "little"))


def _mantissa_exponent(value: Decimal, mantissa_max: int, exp_min: int, exp_max: int) -> tuple[int, int]:
    """The exact (mantissa, exponent) pair for `value`, keeping its precision where the format allows."""
    if not value.is_finite():
        raise ValueError(f"{value} is not finite: pass a Special instead")
    sign, digits, raw_exponent = value.as_tuple()
    exponent = int(raw_exponent)
    mantissa = int("".join(map(str, digits)) or "0")
    # Too many digits: drop trailing zeros (exact). Exponent too small: same. Too large: pad mantissa.
    while (mantissa > mantissa_max or exponent < exp_min) and mantissa % 10 == 0 and mantissa:
        mantissa //= 10
        exponent += 1
    if mantissa == 0:
        exponent = min(max(exponent, exp_min), exp_max)
    while exponent > exp_max and mantissa * 10 <= mantissa_max:
        mantissa *= 10
        exponent -= 1
    if mantissa > mantissa_max or not exp_min <= exponent <= exp_max:
        raise ValueError(
            f"{value} cannot be represented exactly (mantissa ±{mantissa_max}, exponent {exp_min}..{exp_max})"
        )
    return (-mantissa if sign else mantissa), exponent


def sfloat_to_raw(value: Number | int | str) -> int:
    """The 16-bit pattern for an exact value (or a Special). Raises ValueError if not exactly representable."""
    if isinstance(value, Special):
        return _SFLOAT_RAW[value]
    mantissa, exponent = _mantissa_exponent(Decimal(value), SFLOAT_MANTISSA_MAX, -8, 7)
    return ((exponent & 0x0F) << 12) | (mantissa & 0x0FFF)


def float_to_raw(value: Number | int | str) -> int:
    """The 32-bit pattern for an exact value (or a Special). Raises ValueError if not exactly representable."""
    if isinstance(value, Special):
        return _FLOAT_RAW[value]
    mantissa, exponent = _mantissa_exponent(Decimal(value), FLOAT_MANTISSA_MAX, -128, 127)
    return ((exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF)


def encode_sfloat(value: Number | int | str) -> bytes:
    """Two little-endian bytes."""
    return sfloat_to_raw(value).to_bytes(2, "little")


def encode_float(value: Number | int | str) -> bytes:
    """Four little-endian bytes."""
    return float_to_raw(value).to_bytes(4, "little")


def number_to_json(value: Number) -> str:
    """A JSON-safe text for a decoded number: the exact decimal, or the special's name."""
    return value.value if isinstance(value, Special) else str(value)
