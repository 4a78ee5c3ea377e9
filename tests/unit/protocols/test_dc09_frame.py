"""DC-09 frames: CRC, published frames, encryption with each key size and both paddings, malformed input."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols.base import ProtocolError
from harness.protocols.dc09 import (
    MAX_FRAME_BYTES,
    DC09Message,
    DC09Reply,
    crc16_arc,
    decode,
    encode_message,
    encode_reply,
    nak,
    parse_frame,
)
from harness.protocols.dc09.crypto import decrypt_hex

T = datetime(2024, 3, 5, 12, 30, 45, tzinfo=UTC)


def frame(body: str) -> bytes:
    raw = body.encode("ascii")
    return b"\n" + f"{crc16_arc(raw):04X}{len(raw):04X}".encode() + raw + b"\r"


def test_crc16_arc_check_value() -> None:
    assert crc16_arc(b"123456789") == 0xBB3D
    assert crc16_arc(b"") == 0


@pytest.mark.parametrize(
    "raw",
    [  # fioletoven/dc09 common/src/dc09/message.tests.rs (an independent Rust implementation)
        b'\nF4D20029"SIA-DCS"0001RF3L77#1234[#1234|NRR|Atest]\r',
        b'\n96ED0016"SIA-DCS"0001L0#1234[]\r',
        b'\nE4410025"NAK"0000R0L0A0[]_16:20:01,09-24-2025\r',
    ],
)
def test_frames_of_an_independent_implementation_decode(raw: bytes) -> None:
    event = decode(raw)
    assert event.sequence in (0, 1)
    if isinstance(event, DC09Reply):
        assert event.kind == "NAK" and event.timestamp == datetime(2025, 9, 24, 16, 20, 1, tzinfo=UTC)
        assert (event.receiver, event.line, event.account) == ("0", "0", None)
        # and vtlab writes the same NAK byte for byte
        assert encode_reply(nak(event.timestamp)) == raw
    else:
        assert event.account == "1234"
        assert encode_message(event) == raw


@pytest.mark.parametrize(
    ("crc", "body"),
    [  # pysiaalarm tests/test_sia_package_cases.py: the CRC is right, the LEN there is not (pysiaalarm ignores it)
        ("5715", '"ADM-CID"0247R4F39L4F39#4F39[#4F39|3401 01 057]'),
        ("97F9", '"SIA-DCS"6002L0#AAA[|Nri2/JC12]_12:58:23,09-15-2021'),
        ("8757", '"SIA-DCS"6002L0#AAA[|Nri1/CL501][M0026B9E4268B]_14:12:04,09-25-2019'),
        ("5B09", '"SIA-DCS"0004L0#1111[#1111|Nri1/PA501][X006E07.7777777][Y49N06.6666666]_20:45:46,04-22-2021'),
        ("E5D5", '"SIA-DCS"6002L0#AAA[|Nri1/CL501]_14:12:04,09-25-2019'),
    ],
)
def test_pysiaalarm_frames_crc_and_decode(crc: str, body: str) -> None:
    assert f"{crc16_arc(body.encode()):04X}" == crc
    event = decode(frame(body))
    assert isinstance(event, DC09Message) and event.token in ("SIA-DCS", "ADM-CID")
    wrong_len = b"\n" + crc.encode() + b"0078" + body.encode() + b"\r"
    with pytest.raises(ProtocolError, match="LEN"):
        decode(wrong_len)


def test_pysiaalarm_encrypted_null_from_a_panel() -> None:
    raw = b'\n76D80055"*NULL"0000R0L0#AAAB[B4BC8B40D0E6D959D6BEA78E88CC0B2155741A3C44FBB96D476A3E557CAD64D9\r'
    event = decode(raw, b"AAAAAAAAAAAAAAAA")
    assert isinstance(event, DC09Message) and event.encrypted and event.token == "NULL"
    assert event.timestamp == datetime(2020, 7, 5, 18, 24, 52, tzinfo=UTC)
    # its pad ('p' * 11) has no '|' before ']': accepted as empty data
    assert decrypt_hex(raw.decode()[raw.index(b"[") + 1 : -1], b"A" * 16).startswith("ppppppppppp]")
    with pytest.raises(ProtocolError, match=r"decrypt|wrong key"):
        decode(raw, b"BBBBBBBBBBBBBBBB")
    with pytest.raises(ProtocolError, match="no key"):
        decode(raw)


def test_the_dc09_draft_adm_cid_example_fields() -> None:
    body = '"ADM-CID"9876R579BDFL789ABC#12345A[#12345A|1110 00 129]_14:12:04,09-25-2011'
    event = decode(frame(body))
    assert isinstance(event, DC09Message)
    assert (event.sequence, event.receiver, event.line, event.account) == (9876, "579BDF", "789ABC", "12345A")
    assert event.data == "#12345A|1110 00 129"
    assert event.timestamp == datetime(2011, 9, 25, 14, 12, 4, tzinfo=UTC)


@pytest.mark.parametrize("key_size", [16, 24, 32])
@pytest.mark.parametrize("padding", ["random", "zeros"])
def test_encryption_each_key_size_and_padding(key_size: int, padding: str) -> None:
    key = bytes(random.Random(key_size).choice(b"0123456789ABCDEF") for _ in range(key_size))
    msg = DC09Message("SIA-DCS", 42, "1234", "#1234|Nri1/MA1", "0", "0", (("X", "10E"),), T, True)
    raw = encode_message(msg, key, padding=padding)  # type: ignore[arg-type]
    assert raw.startswith(b"\n") and b'"*SIA-DCS"0042R0L0#1234[' in raw
    hex_part = raw.decode()[raw.index(b"[") + 1 : -1]
    assert len(hex_part) % 32 == 0 and hex_part == hex_part.upper()
    plain = decrypt_hex(hex_part, key)
    pad = plain[: plain.index("|")]
    assert 1 <= len(pad) <= 16 and (set(pad) == {"0"} if padding == "zeros" else not set(pad) & set("|[]"))
    assert plain.endswith("|#1234|Nri1/MA1][X10E]_12:30:45,03-05-2024")
    assert decode(raw, key) == msg


def test_encrypted_ack_and_nak_is_never_encrypted() -> None:
    key = b"K" * 16
    ack = DC09Reply("ACK", 7, "1234", "", "0", "0", (), T, True)
    assert decode(encode_reply(ack, key), key) == ack
    raw = encode_reply(nak(T), key)
    assert raw == frame('"NAK"0000R0L0A0[]_12:30:45,03-05-2024')


@pytest.mark.parametrize("kind", ["ACK", "NAK", "DUH", "RSP"])
def test_every_reply_kind_round_trips(kind: str) -> None:
    reply = DC09Reply(
        kind,
        0 if kind == "NAK" else 12,
        None if kind == "NAK" else "1234",
        "data" if kind == "RSP" else "",
        "0",
        "0",
        (),
        T if kind == "NAK" else None,
    )
    assert decode(encode_reply(reply)) == reply


def test_sequence_and_fields_are_written_as_dc09_says() -> None:
    raw = encode_message(DC09Message("NULL", 1, "ABC", "", None, "1"))
    assert raw == frame('"NULL"0001L1#ABC[]')
    with pytest.raises(ValueError):
        encode_message(DC09Message("NULL", 10000, "ABC"))
    with pytest.raises(ValueError):
        encode_message(DC09Message("NULL", 1, "ABC"), b"K" * 16)  # encrypted needs a timestamp
    with pytest.raises(ValueError):
        encode_message(DC09Message("NULL", 1, "ABC", "", None, None, (), T), b"short")


GOOD = frame('"SIA-DCS"0001R0L0#1234[#1234|Nri1/MA1]_12:30:45,03-05-2024')


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (GOOD[:5] + b"0" + GOOD[6:] if GOOD[5:6] != b"0" else GOOD[:5] + b"1" + GOOD[6:], "LEN"),
        (GOOD[:1] + (b"0000" if GOOD[1:5] != b"0000" else b"1111") + GOOD[5:], "CRC"),
        (GOOD[:-8], "LF, CRC"),
        (GOOD[:-1], "LF, CRC"),
        (b"\n" + b"0" * (MAX_FRAME_BYTES + 10) + b"\r", "exceeds"),
        (frame('"SIA-DCS"00A1R0L0#1234[#1234|Nri1/MA1]'), "header"),  # dc09-spt's hex sequence
        (frame('"SIA-DCS"0001R0L0#1234#1234|Nri1/MA1]'), "header"),
        (frame('"SIA-DCS"0001R0L0#1234[#1234|Nri1/MA1'), "closing"),
        (frame('"SIA-DCS"0001R0L0#1234[#1234|Nri1/MA1]_25:00:00,01-01-2024'), "real date"),
        (frame('"SIA-DCS"0001R0L0#1234[#1234|Nri1/MA1]junk'), "timestamp"),
        (frame('"*SIA-DCS"0001R0L0#1234[ABCDEF'), "AES blocks|no key"),
        (b"\nZZZZ0000\r", "hex"),
    ],
)
def test_malformed_frames_raise_protocol_error(raw: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode(raw, b"K" * 16 if b"*" in raw and b"ABCDEF" not in raw else None)


def test_non_ascii_byte_is_refused() -> None:
    body = b'"SIA-DCS"0001R0L0#1234[#1234|Nri1/MA1]'.replace(b"MA1", b"M\xc31")
    raw = b"\n" + f"{crc16_arc(body):04X}{len(body):04X}".encode() + body + b"\r"
    with pytest.raises(ProtocolError, match="ASCII"):
        parse_frame(raw)


def test_wrong_key_is_a_protocol_error() -> None:
    raw = encode_message(DC09Message("ADM-CID", 3, "1234", "#1234|1101 00 001", "0", "0", (), T), b"A" * 16)
    with pytest.raises(ProtocolError):
        decode(raw, b"B" * 16)
    with pytest.raises(ProtocolError):
        decode(raw, b"B" * 32)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_protocol_error(data: bytes) -> None:
    for raw in (data, b"\n" + data + b"\r", GOOD[:9] + data + b"\r"):
        with contextlib.suppress(ProtocolError):
            decode(raw, b"K" * 16)


@settings(max_examples=300)
@given(st.integers(0, len(GOOD) - 1), st.integers(0, 255))
def test_any_single_byte_change_is_caught(where: int, value: int) -> None:
    raw = GOOD[:where] + bytes([value]) + GOOD[where + 1 :]
    if raw == GOOD or (1 <= where <= 8 and raw.upper() == GOOD.upper()):
        return  # the same frame (CRC and LEN in lower-case hex are the same numbers)
    with pytest.raises(ProtocolError):
        decode(raw)
