"""IEEE 11073-20601 SFLOAT/FLOAT against published vectors, every special value, and the whole 16-bit space."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.protocols.base import ProtocolError
from harness.protocols.ieee11073 import (
    FLOAT_SPECIALS,
    SFLOAT_SPECIALS,
    Special,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
    float_from_raw,
    float_to_raw,
    sfloat_from_raw,
    sfloat_to_raw,
)

# HL7 PHD implementation guide, "Mder FLOATs and SFLOATs" (HL7/phd input/pagecontent/MderFLOATsandSFLOATs.md):
# the FHIR value keeps the precision the exponent gives (0xF014 is 2.0, not 2).
HL7_SFLOAT = [
    (0x0002, "2"),
    (0xF014, "2.0"),
    (0xE0C8, "2.00"),
    (0x1002, "2E+1"),
    (0x2002, "2E+2"),
    (0x00C8, "200"),
    (0x04D2, "1234"),
    (0x0B2E, "-1234"),
]
HL7_FLOAT = [
    (0x00000002, "2"),
    (0xFF000014, "2.0"),
    (0xFE0000C8, "2.00"),
    (0x01000002, "2E+1"),
    (0x02000002, "2E+2"),
    (0x000000C8, "200"),
    (0x000004D2, "1234"),
    (0x00FFFB2E, "-1234"),
]


@pytest.mark.parametrize(("raw", "text"), HL7_SFLOAT)
def test_sfloat_hl7_vectors_decode_exactly_and_encode_back(raw: int, text: str) -> None:
    value = sfloat_from_raw(raw)
    assert isinstance(value, Decimal)
    assert value == Decimal(text)
    assert str(value) == text  # the precision survives, not just the number
    assert sfloat_to_raw(value) == raw
    assert decode_sfloat(raw.to_bytes(2, "little")) == Decimal(text)


@pytest.mark.parametrize(("raw", "text"), HL7_FLOAT)
def test_float_hl7_vectors_decode_exactly_and_encode_back(raw: int, text: str) -> None:
    value = float_from_raw(raw)
    assert isinstance(value, Decimal)
    assert str(value) == text
    assert float_to_raw(value) == raw
    assert decode_float(raw.to_bytes(4, "little")) == Decimal(text)


def test_the_briefs_example_0xf014_is_two_point_zero() -> None:
    assert str(decode_sfloat(bytes([0x14, 0xF0]))) == "2.0"


@pytest.mark.parametrize(
    ("raw", "special"),
    [(0x07FF, Special.NAN), (0x0800, Special.NRES), (0x07FE, Special.POS_INF), (0x0802, Special.NEG_INF),
     (0x0801, Special.RESERVED)],
)  # fmt: skip
def test_every_sfloat_special_value(raw: int, special: Special) -> None:
    assert sfloat_from_raw(raw) is special
    assert encode_sfloat(special) == raw.to_bytes(2, "little")


@pytest.mark.parametrize(
    ("raw", "special"),
    [(0x007FFFFF, Special.NAN), (0x00800000, Special.NRES), (0x007FFFFE, Special.POS_INF),
     (0x00800002, Special.NEG_INF), (0x00800001, Special.RESERVED)],
)  # fmt: skip
def test_every_float_special_value(raw: int, special: Special) -> None:
    assert float_from_raw(raw) is special
    assert encode_float(special) == raw.to_bytes(4, "little")


def test_specials_tables_cover_five_values_each() -> None:
    assert set(SFLOAT_SPECIALS.values()) == set(Special) == set(FLOAT_SPECIALS.values())


def test_every_16_bit_pattern_decodes_and_ordinary_ones_encode_back_unchanged() -> None:
    refused = 0
    for raw in range(0x10000):
        value = sfloat_from_raw(raw)
        if isinstance(value, Special):
            continue
        mantissa = raw & 0x0FFF
        mantissa = mantissa - 0x1000 if mantissa & 0x800 else mantissa
        if abs(mantissa) > 2045:  # a special's mantissa with a non-zero exponent: never produced by the encoder
            refused += 1
            continue
        assert sfloat_to_raw(value) == raw, hex(raw)
    assert refused == 15 * 5  # the five reserved mantissas under each of the 15 non-zero exponents


def test_negative_exponents_and_mantissas() -> None:
    assert sfloat_from_raw(0xFFFF) == Decimal("-0.1")  # exponent -1, mantissa -1
    assert sfloat_from_raw(0x8001) == Decimal("1E-8")  # smallest exponent
    assert sfloat_from_raw(0x77FD) == Decimal("2045E+7")


def test_encoder_normalises_without_rounding() -> None:
    assert sfloat_to_raw(Decimal("120000")) == sfloat_to_raw(Decimal("1200E+2"))  # trailing zeros moved out
    assert sfloat_from_raw(sfloat_to_raw(Decimal("120000"))) == 120000
    assert sfloat_to_raw(Decimal("37.5")) == (0xF << 12) | 375
    with pytest.raises(ValueError, match="exactly"):
        sfloat_to_raw(Decimal("12345"))  # 5 significant digits do not fit 12 bits
    with pytest.raises(ValueError, match="exactly"):
        sfloat_to_raw(Decimal("1E-9"))
    with pytest.raises(ValueError, match="finite"):
        sfloat_to_raw(Decimal("NaN"))


@pytest.mark.parametrize("size", [0, 1])
def test_truncated_sfloat_is_a_protocol_error(size: int) -> None:
    with pytest.raises(ProtocolError, match="SFLOAT needs 2 bytes"):
        decode_sfloat(bytes(size))


def test_truncated_float_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="FLOAT needs 4 bytes"):
        decode_float(b"\x00\x00\x00")


@given(st.integers(-2045, 2045), st.integers(-8, 7))
def test_any_representable_sfloat_round_trips(mantissa: int, exponent: int) -> None:
    value = Decimal(mantissa).scaleb(exponent)
    assert sfloat_from_raw(sfloat_to_raw(value)) == value


@given(st.integers(-8388605, 8388605), st.integers(-128, 127))
def test_any_representable_float_round_trips(mantissa: int, exponent: int) -> None:
    value = Decimal(mantissa).scaleb(exponent)
    assert float_from_raw(float_to_raw(value)) == value


@given(st.binary(max_size=6))
def test_random_bytes_give_a_number_a_special_or_protocol_error(data: bytes) -> None:
    for decoder in (decode_sfloat, decode_float):
        with contextlib.suppress(ProtocolError):
            assert isinstance(decoder(data), Decimal | Special)
