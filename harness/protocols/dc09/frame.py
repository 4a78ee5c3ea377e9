"""SIA DC-09 frames: bytes <-> typed events (`DC09Message`, `DC09Reply`), with CRC, length and encryption.

    LF  CRC(4 hex)  LEN(4 hex)  "ID" SEQ [Rrcvr] [Lline] [#acct] [data] [x-data]... [_HH:MM:SS,MM-DD-YYYY]  CR

CRC-16/ARC and LEN cover the bytes from the first `"` to before CR. SEQ is four decimal digits. An encrypted
frame has `*` before the ID and, after the first `[`, the hex of AES-CBC(pad|data]x-data..._timestamp).
Sources: SIA DC-09-2013 public review draft as quoted in /work/shared/domain/PROTOCOLS.md section 2;
pysiaalarm `utils/regexes.py`, `event.py`; dc09-spt `msg/dc09_msg.py`; fioletoven/dc09 (its test frames).

Peer quirks seen and deliberately not copied: dc09-spt writes SEQ, R and L in hexadecimal (`{:04X}`; SEQ is
decimal here, so its frames from sequence 10 on are refused); pysiaalarm does not check LEN (several of its
test frames carry a wrong one) and its NAK echoes the message's R/L. pysiaalarm requires the `L` field.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from harness.protocols.base import ProtocolError
from harness.protocols.dc09.crypto import Padding, decrypt_hex, encrypt_hex, pad_text, split_pad

PROTOCOL = "dc09"
MAX_FRAME_BYTES: Final = 4096
"""A DC-09 frame is a few hundred bytes; anything longer is refused unread (LEN could claim up to 65535)."""

SIA_DCS: Final = "SIA-DCS"
ADM_CID: Final = "ADM-CID"
NULL: Final = "NULL"
MESSAGE_IDS: Final = frozenset({SIA_DCS, ADM_CID, NULL})
ACK: Final = "ACK"
NAK: Final = "NAK"
DUH: Final = "DUH"
RSP: Final = "RSP"
REPLY_KINDS: Final = frozenset({ACK, NAK, DUH, RSP})

TIMESTAMP_FORMAT: Final = "%H:%M:%S,%m-%d-%Y"

# R and L are lazy so that a NAK's `R0L0A0[` reads as line 0 and account prefix A0, not line 0A0
_HEADER = re.compile(
    r'"(?P<star>\*)?(?P<token>[A-Z0-9][A-Z0-9-]{0,15})"'
    r"(?P<seq>[0-9]{4})"
    r"(?:R(?P<rcv>[0-9A-Fa-f]{1,6}?))?"
    r"(?:L(?P<line>[0-9A-Fa-f]{1,6}?))?"
    r"(?:#(?P<acct>[0-9A-Fa-f]{3,16})|A(?P<aprefix>[0-9A-Fa-f]{1,6}))?"
    r"\["
)
_TIMESTAMP = re.compile(r"_(\d\d):(\d\d):(\d\d),(\d\d)-(\d\d)-(\d{4})")
_HEX = re.compile(r"[0-9A-Fa-f]*")


@dataclass(frozen=True, slots=True)
class DC09Message:
    """A transmitter's message (`SIA-DCS`, `ADM-CID`, `NULL`, or an ID this receiver does not know).

    `data` is the text of the first `[...]` block without brackets and, when encrypted, without the pad.
    `encrypted` records how it arrived; encoding encrypts exactly when a key is given.
    """

    token: str
    sequence: int
    account: str | None = None
    data: str = ""
    receiver: str | None = None
    line: str | None = None
    extended: tuple[tuple[str, str], ...] = ()
    timestamp: datetime | None = None
    encrypted: bool = False


@dataclass(frozen=True, slots=True)
class DC09Reply:
    """A receiver's reply: ACK, NAK (carries the receiver's time), DUH (cannot process) or RSP."""

    kind: str
    sequence: int
    account: str | None = None
    data: str = ""
    receiver: str | None = None
    line: str | None = None
    extended: tuple[tuple[str, str], ...] = ()
    timestamp: datetime | None = None
    encrypted: bool = False


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame whose envelope (CRC, LEN, header) checked out; `payload` follows the first `[`, maybe still hex."""

    token: str
    encrypted: bool
    sequence: int
    receiver: str | None
    line: str | None
    account: str | None
    payload: str
    raw: bytes


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (reflected polynomial 0xA001, init 0, no final xor); of b"123456789" it is 0xBB3D."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def format_timestamp(ts: datetime) -> str:
    """`HH:MM:SS,MM-DD-YYYY` in UTC (naive datetimes are taken as UTC)."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC)
    return ts.strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Parse `_HH:MM:SS,MM-DD-YYYY` (with the underscore) into an aware UTC datetime."""
    m = _TIMESTAMP.fullmatch(text)
    if m is None:
        raise ProtocolError(PROTOCOL, f"timestamp {text!r} is not _HH:MM:SS,MM-DD-YYYY")
    hh, mi, ss, mo, dd, yy = (int(g) for g in m.groups())
    try:
        return datetime(yy, mo, dd, hh, mi, ss, tzinfo=UTC)
    except ValueError:
        raise ProtocolError(PROTOCOL, f"timestamp {text!r} is not a real date and time") from None


def _err(reason: str, offset: int | None = None) -> ProtocolError:
    return ProtocolError(PROTOCOL, reason, offset=offset)


def parse_frame(raw: bytes) -> Frame:
    """Check the envelope of one frame (LF ... CR): size, ASCII, LEN, CRC and header. No decryption yet."""
    if len(raw) > MAX_FRAME_BYTES:
        raise _err(f"frame of {len(raw)} bytes exceeds {MAX_FRAME_BYTES}")
    if len(raw) < 10 or raw[:1] != b"\n" or raw[-1:] != b"\r":
        raise _err("frame must be LF, CRC, LEN, body, CR")
    body = raw[9:-1]
    for i, byte in enumerate(raw[1:-1]):
        if not 0x20 <= byte <= 0x7E:
            raise _err(f"byte 0x{byte:02X} is not printable ASCII", i + 1)
    head = raw[1:9].decode("ascii")
    if not _HEX.fullmatch(head):
        raise _err(f"CRC and LEN must be 8 hex digits, not {head!r}", 1)
    crc, length = int(head[:4], 16), int(head[4:], 16)
    if length != len(body):
        raise _err(f"LEN says {length} bytes but the body has {len(body)}", 5)
    actual = crc16_arc(body)
    if crc != actual:
        raise _err(f"CRC {head[:4]} does not match the body (computed {actual:04X})", 1)
    text = body.decode("ascii")
    m = _HEADER.match(text)
    if m is None:
        raise _err(f"header is not '\"ID\"SEQ[Rrcvr][Lline][#acct][': {text[:40]!r}", 9)
    return Frame(
        token=m["token"],
        encrypted=m["star"] is not None,
        sequence=int(m["seq"]),
        receiver=m["rcv"],
        line=m["line"],
        account=m["acct"],
        payload=text[m.end() :],
        raw=raw,
    )


def _parse_content(text: str) -> tuple[str, tuple[tuple[str, str], ...], datetime | None]:
    """`data]` `[x-data]`... `[_timestamp]` -> parts (text starts just after the first `[`)."""
    end = text.find("]")
    if end < 0:
        raise _err("data block has no closing ']'")
    data = text[:end]
    if "[" in data:
        raise _err("'[' inside the data block")
    pos = end + 1
    extended: list[tuple[str, str]] = []
    while pos < len(text) and text[pos] == "[":
        close = text.find("]", pos)
        if close < 0:
            raise _err("extended data block has no closing ']'")
        block = text[pos + 1 : close]
        if not block or "[" in block:
            raise _err(f"malformed extended data block {block!r}")
        extended.append((block[0], block[1:]))
        pos = close + 1
    rest = text[pos:]
    timestamp = parse_timestamp(rest) if rest else None
    return data, tuple(extended), timestamp


def open_frame(frame: Frame, key: bytes | None = None) -> DC09Message | DC09Reply:
    """Decrypt (when `*`) and parse the payload; a reply token gives a `DC09Reply`."""
    payload = frame.payload
    if frame.encrypted:
        if key is None:
            raise _err("encrypted frame but no key for this account")
        if not _HEX.fullmatch(payload):
            raise _err("encrypted part is not hex")
        _pad, payload = split_pad(decrypt_hex(payload, key))
        if any(not (" " <= ch <= "~") for ch in payload):
            raise _err("cannot decrypt: plaintext holds control characters (wrong key?)")
    data, extended, timestamp = _parse_content(payload)
    if frame.encrypted and timestamp is None:
        raise _err("encrypted frame without timestamp")
    fields = (frame.sequence, frame.account, data, frame.receiver, frame.line, extended, timestamp, frame.encrypted)
    if frame.token in REPLY_KINDS:
        return DC09Reply(frame.token, *fields)
    return DC09Message(frame.token, *fields)


def decode(raw: bytes, key: bytes | None = None) -> DC09Message | DC09Reply:
    """One frame (LF ... CR) to an event; malformed bytes raise `ProtocolError` and nothing else."""
    return open_frame(parse_frame(raw), key)


def decode_datagram(datagram: bytes, key: bytes | None = None) -> DC09Message | DC09Reply:
    """A UDP datagram carries exactly one frame."""
    return decode(datagram, key)


_FIELD_RULES: Final = (
    ("receiver", re.compile(r"[0-9A-F]{1,6}")),
    ("line", re.compile(r"[0-9A-F]{1,6}")),
    ("account", re.compile(r"[0-9A-F]{3,16}")),
)


def _build(
    token: str,
    event: DC09Message | DC09Reply,
    key: bytes | None,
    padding: Padding,
    rng: random.Random | None,
) -> bytes:
    if not 0 <= event.sequence <= 9999:
        raise ValueError(f"DC-09 sequence must be 0000-9999, not {event.sequence}")
    for name, rule in _FIELD_RULES:
        value = getattr(event, name)
        if value is not None and not rule.fullmatch(value):
            raise ValueError(f"DC-09 {name} {value!r} must match {rule.pattern}")
    if any(c in event.data for c in "[]") or any(not (" " <= c <= "~") for c in event.data):
        raise ValueError("DC-09 data must be printable ASCII without brackets")
    header = f'"{"*" if key is not None else ""}{token}"{event.sequence:04d}'
    header += f"R{event.receiver}" if event.receiver is not None else ""
    header += f"L{event.line}" if event.line is not None else ""
    if event.account is not None:
        header += f"#{event.account}"
    elif token == NAK:
        header += "A0"
    content = event.data + "]"
    for ident, value in event.extended:
        if len(ident) != 1 or any(c in ident + value for c in "[]") or not (ident + value).isprintable():
            raise ValueError(f"DC-09 extended block {ident!r}{value!r} is malformed")
        content += f"[{ident}{value}]"
    if event.timestamp is not None:
        content += "_" + format_timestamp(event.timestamp)
    if key is not None:
        if event.timestamp is None:
            raise ValueError("an encrypted DC-09 frame needs a timestamp")
        body = header + "[" + encrypt_hex(pad_text("|" + content, padding, rng), key)
    else:
        body = header + "[" + content
    raw = body.encode("ascii")
    return b"\n" + f"{crc16_arc(raw):04X}{len(raw):04X}".encode("ascii") + raw + b"\r"


def encode_message(
    msg: DC09Message, key: bytes | None = None, *, padding: Padding = "random", rng: random.Random | None = None
) -> bytes:
    """A message frame; encrypted (`*ID`) exactly when `key` is given (then `timestamp` is required)."""
    return _build(msg.token, msg, key, padding, rng)


def encode_reply(
    reply: DC09Reply, key: bytes | None = None, *, padding: Padding = "random", rng: random.Random | None = None
) -> bytes:
    """A reply frame; NAK is never encrypted (a key given for a NAK is ignored)."""
    if reply.kind not in REPLY_KINDS:
        raise ValueError(f"reply kind must be one of {sorted(REPLY_KINDS)}, not {reply.kind!r}")
    return _build(reply.kind, reply, None if reply.kind == NAK else key, padding, rng)


def nak(now: datetime) -> DC09Reply:
    """The NAK a receiver sends for a timestamp outside its window: `"NAK"0000R0L0A0[]_<receiver time>`."""
    return DC09Reply(NAK, 0, None, "", "0", "0", (), now.replace(microsecond=0))
