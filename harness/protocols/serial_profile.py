"""Serial device profiles as data: a YAML file says how a device frames, checks and words its messages.

Serial devices (medicine dispensers, alarm receivers that print Contact ID lines, sensors behind RS-232
or USB adapters) each speak a small vendor protocol. Writing a codec per vendor does not scale, and a test
team must be able to add one from the vendor's documentation. So a profile describes:

- framing: `line` (terminator), `sentinel` (STX ... ETX, optional trailer bytes after ETX) or `length`
  (optional sync bytes, a length field);
- encoding of the body: `ascii` text, `hex` (ASCII hex digits carrying bytes) or `binary`;
- fields: a regex with named groups, fixed positions, or a Python hook for the unusual;
- checksum: none, xor8, sum8, CRC-16 variants, or Contact ID's mod-15 digit, as hex text or binary, over a
  named range of the frame;
- events: which field values mean which vtlab event, with the Contact ID code and SCAIP stc where one exists.

`ProfileCodec` is sans-I/O: `feed(bytes) -> list[SerialEvent]`, `encode(event, fields) -> bytes`. Malformed
frames and bad checksums raise `ProtocolError`; a bad profile file raises `InputError` naming file:line.
"""

from __future__ import annotations

import importlib
import re
import string
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.errors import InputError
from harness.protocols.base import MAX_FRAME_BYTES, ProtocolError
from harness.yamlfile import SourceFile, load_yaml

PROTOCOL = "serial"

# --------------------------------------------------------------------------------------------------
# Checksums. Parameters from the CRC RevEng catalogue; each has its published check value over
# b"123456789" in the tests.


def xor8(data: bytes) -> int:
    """XOR of all bytes (NMEA 0183 style)."""
    out = 0
    for b in data:
        out ^= b
    return out


def sum8(data: bytes) -> int:
    """Sum of all bytes mod 256 (ASTM E1381 style)."""
    return sum(data) & 0xFF


def _reflect(value: int, width: int) -> int:
    out = 0
    for _ in range(width):
        out = (out << 1) | (value & 1)
        value >>= 1
    return out


@dataclass(frozen=True, slots=True)
class Crc16:
    """A CRC-16 in the Rocksoft/RevEng model, table driven."""

    name: str
    poly: int
    init: int
    refin: bool
    refout: bool
    xorout: int
    table: tuple[int, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def make(cls, name: str, poly: int, init: int, refin: bool, refout: bool, xorout: int) -> Crc16:
        table = []
        for byte in range(256):
            if refin:
                crc = byte
                rpoly = _reflect(poly, 16)
                for _ in range(8):
                    crc = (crc >> 1) ^ rpoly if crc & 1 else crc >> 1
            else:
                crc = byte << 8
                for _ in range(8):
                    crc = ((crc << 1) ^ poly) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
            table.append(crc)
        return cls(name, poly, init, refin, refout, xorout, tuple(table))

    def __call__(self, data: bytes) -> int:
        table = self.table
        if self.refin:
            crc = _reflect(self.init, 16)
            for b in data:
                crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
            if not self.refout:
                crc = _reflect(crc, 16)
        else:
            crc = self.init
            for b in data:
                crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
            if self.refout:
                crc = _reflect(crc, 16)
        return crc ^ self.xorout


CRC16_ARC = Crc16.make("CRC-16/ARC", 0x8005, 0x0000, True, True, 0x0000)
CRC16_CCITT_FALSE = Crc16.make("CRC-16/CCITT-FALSE", 0x1021, 0xFFFF, False, False, 0x0000)
CRC16_XMODEM = Crc16.make("CRC-16/XMODEM", 0x1021, 0x0000, False, False, 0x0000)
CRC16_MODBUS = Crc16.make("CRC-16/MODBUS", 0x8005, 0xFFFF, True, True, 0x0000)
CRC16_KERMIT = Crc16.make("CRC-16/KERMIT", 0x1021, 0x0000, True, True, 0x0000)

_CID_VALUE = {**{str(d): d for d in range(1, 10)}, "0": 10, "B": 11, "C": 12, "D": 13, "E": 14, "F": 15}
_CID_DIGIT = {v: k for k, v in _CID_VALUE.items()}


def contact_id_check(data: bytes) -> int:
    """Ademco Contact ID check value S (1..15) such that (sum of digit values + S) % 15 == 0.

    Digit 0 counts as 10, B..F as 11..15 (PROTOCOLS.md §3). Any other byte is not a Contact ID digit.
    """
    total = 0
    for i, b in enumerate(data):
        value = _CID_VALUE.get(chr(b).upper())
        if value is None:
            raise ProtocolError(PROTOCOL, f"{chr(b)!r} is not a Contact ID digit (0-9, B-F)", offset=i)
        total += value
    return 15 - total % 15


def contact_id_digit(value: int) -> str:
    """How a Contact ID check value is written: 10 as '0', 11..15 as 'B'..'F'."""
    return _CID_DIGIT[value]


ChecksumName = Literal[
    "none",
    "xor8",
    "sum8",
    "crc16_arc",
    "crc16_ccitt_false",
    "crc16_xmodem",
    "crc16_modbus",
    "crc16_kermit",
    "contact_id",
]
CHECKSUMS: dict[str, tuple[Callable[[bytes], int], int]] = {
    "xor8": (xor8, 8),
    "sum8": (sum8, 8),
    "crc16_arc": (CRC16_ARC, 16),
    "crc16_ccitt_false": (CRC16_CCITT_FALSE, 16),
    "crc16_xmodem": (CRC16_XMODEM, 16),
    "crc16_modbus": (CRC16_MODBUS, 16),
    "crc16_kermit": (CRC16_KERMIT, 16),
    "contact_id": (contact_id_check, 4),
}
"""name -> (function over the covered bytes, width in bits)."""


# --------------------------------------------------------------------------------------------------
# The profile file model.


def _escape_help() -> str:
    return "write control characters as escapes in single quotes, e.g. '\\r\\n' or '\\x02'"


_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[rnt0\\]|.?)", re.DOTALL)
_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "0": "\0", "\\": "\\"}


def unescape(text: str) -> str:
    """Profile files write control bytes as escapes in single quotes ('\\r\\n', '\\x02'): vtlab's YAML
    loader refuses control characters in a file (what a reviewer sees is what is loaded), so the profile
    reads the escapes itself. Text without a backslash is taken as it is."""

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        if code.startswith("x") and len(code) == 3:
            return chr(int(code[1:], 16))
        if code in _ESCAPES:
            return _ESCAPES[code]
        raise InputError(f"unknown escape {m.group(0)!r} in {text!r}", fix=_escape_help() + "; '\\\\' for a backslash")

    return _ESCAPE.sub(one, text)


def _byte_text(value: str) -> str:
    value = unescape(value)
    if any(ord(c) > 0xFF for c in value):
        raise InputError(f"{value!r} is not bytes", fix=_escape_help())
    return value


ByteText = Annotated[str, AfterValidator(_byte_text)]
"""A short byte string in a profile (terminator, separator ...), escapes allowed."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileError(InputError):
    """An InputError raised inside a model validator, with the key (relative to that model) it is about,
    so the message names that key's line rather than the model's first line."""

    def __init__(self, problem: str, *, loc: tuple[str | int, ...] = (), fix: str | None = None) -> None:
        super().__init__(problem, fix=fix)
        self.loc = loc


def _one_byte(value: int | str) -> bytes:
    if isinstance(value, int):
        if not 0 <= value <= 255:
            raise InputError(f"byte value {value} is outside 0..255", fix="write one byte, e.g. 0x02 for STX")
        return bytes([value])
    raw = value.encode("latin-1", errors="replace")
    if len(raw) != 1:
        raise InputError(f"{value!r} is not one byte", fix="write one byte, e.g. 0x02 for STX")
    return raw


class LineFraming(_Model):
    """One frame per line. `strip` characters are removed from both ends (a `\\r` before `\\n`).

    Write control characters as escapes in single quotes: `terminator: '\\r\\n'`."""

    kind: Literal["line"]
    terminator: ByteText = "\n"
    strip: ByteText = "\r"
    skip_empty: bool = True
    max_frame: int = Field(default=1024, ge=1, le=MAX_FRAME_BYTES)

    @field_validator("terminator")
    @classmethod
    def _terminator(cls, value: str) -> str:
        if not value or not value.isascii():
            raise InputError("the line terminator must be one or more ASCII characters", fix=_escape_help())
        return value


class SentinelFraming(_Model):
    """STX body ETX, then `trailer` bytes that belong to the frame (e.g. a checksum after ETX)."""

    kind: Literal["sentinel"]
    start: int | ByteText = 0x02
    end: int | ByteText = 0x03
    trailer: int = Field(default=0, ge=0, le=16)
    max_frame: int = Field(default=1024, ge=3, le=MAX_FRAME_BYTES)

    @field_validator("start", "end")
    @classmethod
    def _byte(cls, value: int | str) -> int | str:
        _one_byte(value)
        return value

    @property
    def start_byte(self) -> bytes:
        return _one_byte(self.start)

    @property
    def end_byte(self) -> bytes:
        return _one_byte(self.end)


class LengthFraming(_Model):
    """Optional sync bytes, a length field, then `length + length_adjust` bytes."""

    kind: Literal["length"]
    sync: str = ""
    length_size: Literal[1, 2] = 1
    endian: Literal["big", "little"] = "big"
    length_adjust: int = 0
    max_frame: int = Field(default=1024, ge=2, le=MAX_FRAME_BYTES)

    @field_validator("sync")
    @classmethod
    def _sync(cls, value: str) -> str:
        try:
            bytes.fromhex(value)
        except ValueError:
            raise InputError(f"sync {value!r} is not hex", fix='write the sync bytes as hex, e.g. "AA55"') from None
        return value

    @property
    def sync_bytes(self) -> bytes:
        return bytes.fromhex(self.sync)

    @property
    def header_size(self) -> int:
        return len(self.sync_bytes) + self.length_size


Framing = Annotated[LineFraming | SentinelFraming | LengthFraming, Field(discriminator="kind")]


class ChecksumSpec(_Model):
    """Where the checksum sits, what it covers and how it is written.

    place `end`: the last thing in the body (before ETX for sentinel framing); `after_end`: the trailer
    after the end sentinel. covers `body`: the body before the separator; `body_and_separator`; `frame`:
    every wire byte before the checksum (sentinels, sync and length included). `skip` leading bytes of the
    covered range are left out (NMEA's `$`); `ignore` characters are not counted (spaces in Contact ID).
    """

    algorithm: ChecksumName
    format: Literal["hex", "binary"] = "hex"
    case: Literal["upper", "lower", "any"] = "upper"
    endian: Literal["big", "little"] = "big"
    place: Literal["end", "after_end"] = "end"
    separator: ByteText = ""
    covers: Literal["body", "body_and_separator", "frame"] = "body"
    skip: int = Field(default=0, ge=0)
    ignore: ByteText = ""

    @model_validator(mode="after")
    def _consistent(self) -> ChecksumSpec:
        if self.algorithm == "contact_id" and self.format != "hex":
            raise InputError("the contact_id checksum is one digit", fix="use `format: hex` (the default)")
        return self

    @property
    def size(self) -> int:
        """Bytes the checksum takes on the wire."""
        if self.algorithm == "none":
            return 0
        bits = CHECKSUMS[self.algorithm][1]
        return max(1, bits // 4) if self.format == "hex" else bits // 8


class Position(_Model):
    """A field at a fixed position of the body (characters for ascii, bytes for hex/binary)."""

    name: str
    start: int = Field(ge=0)
    length: int = Field(ge=1)
    type: Literal["text", "int", "hex"] = "text"
    pad: str | None = None

    @field_validator("pad")
    @classmethod
    def _pad(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise InputError("`pad` is one character", fix='e.g. pad: "0"')
        return value


class FieldsSpec(_Model):
    """Exactly one of: `regex` (named groups, matched against the whole body), `positions`, `hook`."""

    regex: str | None = None
    positions: list[Position] | None = None
    hook: str | None = None
    names: list[str] = []
    template: str | None = None
    encode_hook: str | None = None
    defaults: dict[str, StrictStr] = {}

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise InputError(f"the regex does not compile: {exc}", fix="check brackets and escapes") from None
        if not pattern.groupindex:
            raise InputError("the regex has no named groups", fix="name each field: (?P<code>[0-9]{3})")
        return value

    @field_validator("hook", "encode_hook")
    @classmethod
    def _hook(cls, value: str | None) -> str | None:
        if value is not None:
            resolve_hook(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> FieldsSpec:
        kinds = [k for k in ("regex", "positions", "hook") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise InputError(
                f"fields need exactly one of regex, positions or hook (found {', '.join(kinds) or 'none'})",
                fix="keep one way of finding the fields",
            )
        if self.template is not None:
            for name in _template_names(self.template):
                if name not in self.field_names:
                    raise ProfileError(
                        loc=("template",),
                        problem=f"the template names `{name}`, which is not a field",
                        fix=f"use one of: {', '.join(self.field_names)}",
                    )
        return self

    @property
    def field_names(self) -> tuple[str, ...]:
        if self.regex is not None:
            return tuple(re.compile(self.regex).groupindex)
        if self.positions is not None:
            return tuple(p.name for p in self.positions)
        return tuple(self.names)


class EventRule(_Model):
    """Fields whose values (each one of the listed strings) mean `event`.

    `event`, `contact_id` and `qualifier` may be templates over the fields, e.g. `contact_id_{code}`.
    """

    event: str
    when: dict[str, StrictStr | list[StrictStr]] = {}
    contact_id: str | None = None
    qualifier: str | None = None
    scaip_stc: str | None = None
    description: str = ""

    @field_validator("scaip_stc")
    @classmethod
    def _stc(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9]{4}", value):
            raise InputError(f"scaip_stc {value!r} is not a 4-digit SCAIP status code", fix='e.g. scaip_stc: "0083"')
        return value

    def matches(self, fields: Mapping[str, str]) -> bool:
        for key, wanted in self.when.items():
            value = fields.get(key)
            if value is None or (value not in wanted if isinstance(wanted, list) else value != wanted):
                return False
        return True

    @property
    def literal(self) -> bool:
        return not _template_names(self.event)


class Example(_Model):
    """A frame from the vendor's documentation and the event it must decode to (checked by the tests).

    `frame` is the text on the wire without the line terminator (YAML escapes for control bytes), or
    `hex` the wire bytes."""

    event: str
    frame: str | None = None
    hex: str | None = None
    fields: dict[str, StrictStr] = {}

    @model_validator(mode="after")
    def _one(self) -> Example:
        if (self.frame is None) == (self.hex is None):
            raise InputError("an example needs exactly one of `frame:` or `hex:`", fix="keep one")
        if self.hex is not None:
            try:
                bytes.fromhex(self.hex)
            except ValueError:
                raise InputError(f"example hex {self.hex!r} is not hex", fix="write pairs of hex digits") from None
        return self

    @property
    def wire(self) -> bytes:
        return bytes.fromhex(self.hex) if self.hex is not None else (self.frame or "").encode("latin-1")


class SerialProfile(_Model):
    """A serial device protocol, as a file a test team can write from the vendor's documentation."""

    name: str
    description: str = ""
    device_model: str | None = None
    framing: Framing
    encoding: Literal["ascii", "hex", "binary"] = "ascii"
    checksum: ChecksumSpec = ChecksumSpec(algorithm="none")
    fields: FieldsSpec
    events: list[EventRule] = Field(min_length=1)
    unmapped: Literal["refuse", "keep"] = "refuse"
    examples: list[Example] = []

    @model_validator(mode="after")
    def _consistent(self) -> SerialProfile:
        cs, f = self.checksum, self.framing
        if cs.place == "after_end":
            if not isinstance(f, SentinelFraming):
                raise ProfileError(
                    "`place: after_end` needs sentinel framing", loc=("checksum", "place"), fix="use `place: end`"
                )
            if f.trailer != cs.size + len(cs.separator):
                raise ProfileError(
                    loc=("framing", "trailer"),
                    problem=f"the checksum after ETX takes {cs.size + len(cs.separator)} bytes but the framing's "
                    f"trailer is {f.trailer}",
                    fix=f"set `framing.trailer: {cs.size + len(cs.separator)}`",
                )
        if self.encoding != "ascii" and self.fields.regex is not None:
            raise ProfileError(
                "a regex reads text; this profile's body is not ascii",
                loc=("fields", "regex"),
                fix="use `positions:` for hex or binary bodies, or `encoding: ascii`",
            )
        names = set(self.fields.field_names)
        for i, rule in enumerate(self.events):
            for key in rule.when:
                if key not in names:
                    raise ProfileError(
                        loc=("events", i, "when", key),
                        problem=f"event `{rule.event}` tests field `{key}`, which the profile does not have",
                        fix=f"use one of: {', '.join(sorted(names))}",
                    )
            for text in (rule.event, rule.contact_id or "", rule.qualifier or ""):
                for key in _template_names(text):
                    if key not in names:
                        raise ProfileError(
                            loc=("events", i),
                            problem=f"`{{{key}}}` in event `{rule.event}` is not a field",
                            fix=f"use one of: {', '.join(sorted(names))}",
                        )
        if self.fields.positions is None and self.fields.template is None and self.fields.encode_hook is None:
            raise ProfileError(
                "nothing says how to write a frame", loc=("fields",), fix="add `fields.template:` (or `encode_hook:`)"
            )
        return self


def _template_names(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name]
    except ValueError:
        raise InputError(
            f"{text!r} is not a valid template", fix="write fields as {name}; double {{ for a brace"
        ) from None


def resolve_hook(dotted: str) -> Callable[..., Any]:
    """`package.module:function` or `package.module.function` -> the function (InputError if not found)."""
    module_name, sep, attr = dotted.partition(":")
    if not sep:
        module_name, _, attr = dotted.rpartition(".")
    if not module_name or not attr:
        raise InputError(f"hook {dotted!r} is not a dotted path", fix="write package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(
            f"hook module {module_name!r} cannot be imported: {exc}",
            fix="check the name, and that the module is on the Python path",
        ) from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise InputError(f"hook {dotted!r}: {module_name} has no function {attr!r}", fix="check the name")
    return func


def load_profile(path: str | Path) -> SerialProfile:
    """Read and validate a profile file; any problem is an InputError naming file:line."""
    src = load_yaml(Path(path), "serial profile")
    if not isinstance(src.data, dict):
        raise InputError("a serial profile is a mapping of keys", place=src.place(), fix="start with `name:`")
    try:
        return SerialProfile.model_validate(src.data)
    except ValidationError as exc:
        raise _profile_error(src, exc) from None


def _profile_error(src: SourceFile, exc: ValidationError) -> InputError:
    """Like `harness.yamlfile.validation_error`, but the place is the key the error is about: union tags
    (`line`, `str`) dropped from the location and a validator's own key (ProfileError.loc) added."""
    err = exc.errors(include_url=False)[0]
    ctx_error = (err.get("ctx") or {}).get("error")
    loc = _data_loc(src.data, tuple(err["loc"]))
    if isinstance(ctx_error, ProfileError):
        loc = _data_loc(src.data, (*loc, *ctx_error.loc))
    if isinstance(ctx_error, InputError):
        return InputError(ctx_error.problem, place=src.place(*loc), fix=ctx_error.fix)
    where = ".".join(str(part) for part in loc) or "(top level)"
    if err["type"] == "missing":
        problem, fix = f"`{where}` is missing", f"add `{err['loc'][-1]}:` here"
    elif err["type"] == "extra_forbidden":
        problem, fix = f"unknown key `{loc[-1]}`", "remove it, or check its spelling against the example profiles"
    elif err["type"] == "string_type" and isinstance(err["input"], int | float | bool):
        problem = f"`{where}`: {err['input']!r} is read as a number or boolean, not text"
        fix = f'quote it: "{err["input"]}" (YAML reads 01 as 1 and yes as true)'
    else:
        problem, fix = f"`{where}`: {err['msg']}", "see fixtures/profiles/ for examples of each key"
    return InputError(problem, place=src.place(*loc), fix=fix)


def _data_loc(data: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """`loc` without the parts that are not keys of the data (pydantic's union and tag names)."""
    out: list[str | int] = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
            out.append(part)
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# Framing: bytes from a stream -> frames, bounded.


@dataclass(frozen=True, slots=True)
class Refused:
    """Bytes the framer refused (too long, outside a frame): a finding, with what arrived."""

    raw: bytes
    reason: str


FramerItem = bytes | Refused


class Framer:
    """Splits a byte stream into frames. Never holds more than `max_frame` bytes of a partial frame."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.buf = bytearray()
        self.discarded = 0

    def push(self, data: bytes) -> list[FramerItem]:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame (or of garbage waiting for a frame start)."""
        return len(self.buf)

    @property
    def busy(self) -> bool:
        """In the middle of something: a partial frame, or discarding an over-long one."""
        return bool(self.buf)

    def take_partial(self) -> bytes:
        """Give up on the unfinished frame (the peer stopped mid-frame or went away) and return it."""
        raw = bytes(self.buf)
        self.buf.clear()
        return raw


class LineFramer(Framer):
    def __init__(self, spec: LineFraming) -> None:
        super().__init__(spec.max_frame)
        self.term = spec.terminator.encode("ascii")
        self.skip_empty = spec.skip_empty
        self.strip = spec.strip.encode("latin-1")
        self.dropping = False

    def push(self, data: bytes) -> list[FramerItem]:
        self.buf += data
        out: list[FramerItem] = []
        while True:
            i = self.buf.find(self.term)
            if i < 0:
                break
            line = bytes(self.buf[:i])
            del self.buf[: i + len(self.term)]
            if self.dropping:
                self.dropping = False
                self.discarded += len(line)
                continue
            if len(line) > self.max_frame:
                out.append(Refused(line[: self.max_frame], f"line longer than max_frame ({self.max_frame} bytes)"))
                continue
            line = line.strip(self.strip) if self.strip else line
            if not line and self.skip_empty:
                continue
            out.append(line)
        if len(self.buf) > self.max_frame:
            keep = len(self.term) - 1
            if not self.dropping:
                out.append(
                    Refused(
                        bytes(self.buf[: self.max_frame]),
                        f"no line terminator within max_frame ({self.max_frame} bytes)",
                    )
                )
            self.dropping = True
            self.discarded += len(self.buf) - keep
            del self.buf[: len(self.buf) - keep]
        return out

    @property
    def busy(self) -> bool:
        return bool(self.buf) or self.dropping

    def take_partial(self) -> bytes:
        """The unfinished line; empty when discarding an over-long one (already refused once)."""
        raw = b"" if self.dropping else bytes(self.buf)
        self.buf.clear()
        self.dropping = False
        return raw


class SentinelFramer(Framer):
    def __init__(self, spec: SentinelFraming) -> None:
        super().__init__(spec.max_frame)
        self.stx = spec.start_byte
        self.etx = spec.end_byte
        self.trailer = spec.trailer

    def push(self, data: bytes) -> list[FramerItem]:
        self.buf += data
        out: list[FramerItem] = []
        while self.buf:
            if self.buf[:1] != self.stx:
                i = self.buf.find(self.stx)
                if i < 0:
                    if len(self.buf) > self.max_frame:
                        out.append(Refused(bytes(self.buf[: self.max_frame]), "bytes outside a frame (no STX)"))
                        self.discarded += len(self.buf)
                        self.buf.clear()
                    break
                out.append(Refused(bytes(self.buf[:i][: self.max_frame]), f"{i} bytes outside a frame (before STX)"))
                del self.buf[:i]
            end = self.buf.find(self.etx, 1)
            restart = self.buf.find(self.stx, 1)
            if restart >= 0 and (end < 0 or restart < end):
                out.append(Refused(bytes(self.buf[:restart][: self.max_frame]), "frame restarted (STX) before its ETX"))
                del self.buf[:restart]
                continue
            if end < 0:
                if len(self.buf) > self.max_frame:
                    out.append(
                        Refused(bytes(self.buf[: self.max_frame]), f"no ETX within max_frame ({self.max_frame} bytes)")
                    )
                    self.discarded += len(self.buf)
                    self.buf.clear()
                break
            total = end + 1 + self.trailer
            if len(self.buf) < total:
                break
            if total > self.max_frame:
                out.append(
                    Refused(bytes(self.buf[: self.max_frame]), f"frame longer than max_frame ({self.max_frame})")
                )
            else:
                out.append(bytes(self.buf[:total]))
            del self.buf[:total]
        return out


class LengthFramer(Framer):
    def __init__(self, spec: LengthFraming) -> None:
        super().__init__(spec.max_frame)
        self.spec = spec
        self.sync = spec.sync_bytes

    def push(self, data: bytes) -> list[FramerItem]:
        self.buf += data
        out: list[FramerItem] = []
        spec = self.spec
        while self.buf:
            if self.sync and not self.buf.startswith(self.sync[: len(self.buf)]):
                i = self.buf.find(self.sync, 1)
                cut = i if i >= 0 else max(1, len(self.buf) - len(self.sync) + 1)
                # keep a possible start of sync at the end of the buffer
                while i < 0 and cut < len(self.buf) and not self.sync.startswith(bytes(self.buf[cut:])):
                    cut += 1
                out.append(Refused(bytes(self.buf[:cut][: self.max_frame]), f"{cut} bytes outside a frame (no sync)"))
                del self.buf[:cut]
                continue
            if len(self.buf) < spec.header_size:
                break
            field_bytes = bytes(self.buf[len(self.sync) : spec.header_size])
            length = int.from_bytes(field_bytes, spec.endian)
            total = spec.header_size + length + spec.length_adjust
            if total <= spec.header_size or total > self.max_frame:
                out.append(
                    Refused(
                        bytes(self.buf[: spec.header_size]),
                        f"length field {length} gives a frame of {total} bytes (allowed "
                        f"{spec.header_size + 1}..{self.max_frame})",
                    )
                )
                if self.sync:
                    del self.buf[:1]
                    continue
                self.discarded += len(self.buf)
                self.buf.clear()  # no sync to find the next frame by: drop what is buffered
                break
            if len(self.buf) < total:
                break
            out.append(bytes(self.buf[:total]))
            del self.buf[:total]
        return out


def make_framer(framing: LineFraming | SentinelFraming | LengthFraming) -> Framer:
    if isinstance(framing, LineFraming):
        return LineFramer(framing)
    if isinstance(framing, SentinelFraming):
        return SentinelFramer(framing)
    return LengthFramer(framing)


# --------------------------------------------------------------------------------------------------
# Events and the codec.


@dataclass(frozen=True, slots=True)
class SerialEvent:
    """A frame the profile understood: the vtlab event name and what it carried."""

    event: str
    fields: Mapping[str, str] = field(hash=False)
    raw: bytes
    profile: str
    contact_id: str | None = None
    qualifier: str | None = None
    scaip_stc: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "fields": dict(self.fields),
            "contact_id": self.contact_id,
            "qualifier": self.qualifier,
            "scaip_stc": self.scaip_stc,
            "raw_hex": self.raw.hex(),
        }


def _hex_chars(n: int) -> re.Pattern[str]:
    return re.compile(f"[0-9A-Fa-f]{{{n}}}")


class ProfileCodec:
    """Sans-I/O codec for one profile: `feed(bytes) -> events`, `decode_frame(frame)`, `encode(event)`."""

    def __init__(self, profile: SerialProfile) -> None:
        self.profile = profile
        self.framer = make_framer(profile.framing)
        self._queue: deque[FramerItem] = deque()
        fs = profile.fields
        self._regex = re.compile(fs.regex) if fs.regex is not None else None
        self._hook = resolve_hook(fs.hook) if fs.hook else None
        self._encode_hook = resolve_hook(fs.encode_hook) if fs.encode_hook else None

    @classmethod
    def from_file(cls, path: str | Path) -> ProfileCodec:
        return cls(load_profile(path))

    def new_framer(self) -> Framer:
        """A fresh framer for a transport that frames on its own reading thread."""
        return make_framer(self.profile.framing)

    # ---- decoding

    def feed(self, data: bytes) -> list[SerialEvent]:
        """Events of every complete frame so far. A malformed frame raises ProtocolError; events decoded
        before it in the same call are returned first, and the error is raised by the next call (`feed(b"")`).
        Frames after it stay buffered for the following calls."""
        self._queue.extend(self.framer.push(data))
        events: list[SerialEvent] = []
        while self._queue:
            item = self._queue.popleft()
            try:
                if isinstance(item, Refused):
                    raise ProtocolError(PROTOCOL, item.reason)
                events.append(self.decode_frame(item))
            except ProtocolError:
                if events:
                    self._queue.appendleft(item)
                    return events
                raise
        return events

    @property
    def has_pending(self) -> bool:
        """Frames (or refusals) waiting for the next `feed` call."""
        return bool(self._queue)

    def feed_all(self, data: bytes) -> list[SerialEvent | ProtocolError]:
        """Everything `data` completes, in order, errors as values (for tools and logs)."""
        out: list[SerialEvent | ProtocolError] = []
        chunk = data
        while True:
            try:
                out.extend(self.feed(chunk))
            except ProtocolError as exc:
                out.append(exc)
            chunk = b""
            if not self._queue:
                return out

    def decode_frame(self, frame: bytes) -> SerialEvent:
        """One frame as the framer delivered it (sentinels and length included, line terminator not)."""
        try:
            return self._decode(frame)
        except ProtocolError:
            raise
        except (ValueError, IndexError, KeyError, TypeError, UnicodeError, OverflowError) as exc:
            raise ProtocolError(PROTOCOL, f"{self.profile.name}: cannot decode frame ({exc})") from None

    def _decode(self, frame: bytes) -> SerialEvent:
        p = self.profile
        if len(frame) > p.framing.max_frame:
            raise ProtocolError(PROTOCOL, f"frame of {len(frame)} bytes exceeds max_frame {p.framing.max_frame}")
        prefix, content, suffix = self._split(frame)
        body = self._check(prefix, content, suffix)
        fields = self._fields(body)
        return self._event(fields, frame)

    def _split(self, frame: bytes) -> tuple[bytes, bytes, bytes]:
        """(framing before the content, the content, framing after it)."""
        f = self.profile.framing
        if isinstance(f, LineFraming):
            return b"", frame, b""
        if isinstance(f, SentinelFraming):
            stx, etx = f.start_byte, f.end_byte
            if len(frame) < 2 + f.trailer or frame[:1] != stx or frame[len(frame) - f.trailer - 1 :][:1] != etx:
                raise ProtocolError(PROTOCOL, "frame does not start with STX and end with ETX (+ trailer)")
            return frame[:1], frame[1 : len(frame) - f.trailer - 1], frame[len(frame) - f.trailer - 1 :]
        sync = f.sync_bytes
        if not frame.startswith(sync) or len(frame) < f.header_size:
            raise ProtocolError(PROTOCOL, "frame does not start with the sync bytes and length field")
        length = int.from_bytes(frame[len(sync) : f.header_size], f.endian)
        if len(frame) != f.header_size + length + f.length_adjust:
            raise ProtocolError(PROTOCOL, f"length field says {length}, frame has {len(frame) - f.header_size}")
        return frame[: f.header_size], frame[f.header_size :], b""

    def _check(self, prefix: bytes, content: bytes, suffix: bytes) -> bytes:
        """Verify the checksum; return the body (content without separator and checksum)."""
        cs = self.profile.checksum
        if cs.algorithm == "none":
            return content
        n, sep = cs.size, cs.separator.encode("latin-1")
        if cs.place == "end":
            if len(content) < n + len(sep):
                raise ProtocolError(PROTOCOL, f"frame too short for a {n}-byte checksum")
            got, before = content[len(content) - n :], content[: len(content) - n]
        else:  # after ETX: suffix = ETX + separator + checksum (+ rest of trailer)
            got = suffix[1 + len(sep) : 1 + len(sep) + n]
            before = suffix[: 1 + len(sep)]
        if sep:
            sep_at = before[len(before) - len(sep) :]
            if sep_at != sep:
                shown = sep_at.decode("latin-1")
                raise ProtocolError(PROTOCOL, f"expected checksum separator {cs.separator!r}, got {shown!r}")
        if cs.place == "end":
            body = before[: len(before) - len(sep)]
            covered = self._covered(prefix, body, sep, b"")
        else:
            body = content
            covered = self._covered(prefix, body, sep, suffix[:1])
        expected = self._compute(covered)
        actual = self._parse_checksum(got)
        if actual != expected:
            raise ProtocolError(
                PROTOCOL,
                f"bad checksum: frame says {got.decode('latin-1')!r}, "
                f"computed {self._render_checksum(expected).decode('latin-1')!r}",
            )
        return body

    def _covered(self, prefix: bytes, body: bytes, sep: bytes, end: bytes) -> bytes:
        cs = self.profile.checksum
        if cs.covers == "body":
            covered = body
        elif cs.covers == "body_and_separator":
            covered = body + sep if cs.place == "end" else body
        else:
            covered = prefix + body + (sep if cs.place == "end" else end + sep)
        covered = covered[cs.skip :]
        if cs.ignore:
            drop = cs.ignore.encode("latin-1")
            covered = bytes(b for b in covered if b not in drop)
        return covered

    def _compute(self, covered: bytes) -> int:
        func, _ = CHECKSUMS[self.profile.checksum.algorithm]
        return func(covered)

    def _render_checksum(self, value: int) -> bytes:
        cs = self.profile.checksum
        if cs.algorithm == "contact_id":
            return contact_id_digit(value).encode("ascii")
        if cs.format == "binary":
            return value.to_bytes(cs.size, cs.endian)
        text = f"{value:0{cs.size}X}"
        return (text.lower() if cs.case == "lower" else text).encode("ascii")

    def _parse_checksum(self, got: bytes) -> int:
        cs = self.profile.checksum
        if cs.format == "binary":
            return int.from_bytes(got, cs.endian)
        text = got.decode("latin-1")
        if cs.algorithm == "contact_id":
            value = _CID_VALUE.get(text.upper() if cs.case == "any" else text)
            if value is None:
                raise ProtocolError(PROTOCOL, f"checksum {text!r} is not a Contact ID digit (1-9, 0, B-F)")
            return value
        if not _hex_chars(cs.size).fullmatch(text):
            raise ProtocolError(PROTOCOL, f"checksum {text!r} is not {cs.size} hex digits")
        if (cs.case == "upper" and text != text.upper()) or (cs.case == "lower" and text != text.lower()):
            raise ProtocolError(PROTOCOL, f"checksum {text!r} is not in {cs.case} case as the profile requires")
        return int(text, 16)

    def _fields(self, body: bytes) -> dict[str, str]:
        p = self.profile
        fs = p.fields
        if self._hook is not None:
            try:
                result = self._hook(body)
            except ProtocolError:
                raise
            except Exception as exc:
                raise ProtocolError(PROTOCOL, f"hook {fs.hook} could not read the frame: {exc!r}") from None
            if not isinstance(result, Mapping):
                raise ProtocolError(PROTOCOL, f"hook {fs.hook} returned {type(result).__name__}, not fields")
            return {str(k): str(v) for k, v in result.items()}
        if p.encoding == "ascii":
            if not body.isascii():
                bad = next(i for i, b in enumerate(body) if b > 0x7F)
                raise ProtocolError(PROTOCOL, "non-ASCII byte in an ascii frame", offset=bad)
            text = body.decode("ascii")
            if self._regex is not None:
                m = self._regex.fullmatch(text)
                if m is None:
                    raise ProtocolError(PROTOCOL, f"{p.name}: frame {text[:80]!r} does not match the profile's fields")
                return {k: v for k, v in m.groupdict().items() if v is not None}
            data: bytes | str = text
        elif p.encoding == "hex":
            text = body.decode("latin-1")
            if len(text) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", text):
                raise ProtocolError(PROTOCOL, "body is not an even number of hex digits")
            data = bytes.fromhex(text)
        else:
            data = body
        assert fs.positions is not None
        out: dict[str, str] = {}
        need = max(pos.start + pos.length for pos in fs.positions)
        if len(data) < need:
            raise ProtocolError(PROTOCOL, f"{p.name}: body has {len(data)} units, the fields need {need}")
        for pos in fs.positions:
            part = data[pos.start : pos.start + pos.length]
            if isinstance(part, str):
                if pos.type == "int" and not part.strip().isdigit():
                    raise ProtocolError(PROTOCOL, f"field {pos.name} {part!r} is not a number", offset=pos.start)
                out[pos.name] = str(int(part)) if pos.type == "int" else part
            else:
                out[pos.name] = str(int.from_bytes(part, "big")) if pos.type == "int" else part.hex().upper()
        return out

    def _event(self, fields: dict[str, str], raw: bytes) -> SerialEvent:
        p = self.profile
        for rule in p.events:
            if rule.matches(fields):
                return SerialEvent(
                    event=_fill(rule.event, fields),
                    fields=MappingProxyType(fields),
                    raw=raw,
                    profile=p.name,
                    contact_id=_fill(rule.contact_id, fields) if rule.contact_id else None,
                    qualifier=_fill(rule.qualifier, fields) if rule.qualifier else None,
                    scaip_stc=rule.scaip_stc,
                )
        if p.unmapped == "keep":
            return SerialEvent(event="unmapped", fields=MappingProxyType(fields), raw=raw, profile=p.name)
        shown = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        raise ProtocolError(PROTOCOL, f"{p.name}: no event in the profile for {shown}")

    # ---- encoding

    @property
    def event_names(self) -> list[str]:
        """Events this codec can encode (rules with a literal event name)."""
        return list(dict.fromkeys(r.event for r in self.profile.events if r.literal))

    def encode(self, event: str, fields: Mapping[str, object] | None = None) -> bytes:
        """The wire bytes of `event`, with `fields` filling what the event's rule does not fix.

        Raises InputError for an event the profile does not know or fields that make an unreadable frame:
        that is the caller's mistake, not the device's.
        """
        p = self.profile
        rule = next((r for r in p.events if r.literal and r.event == event), None)
        if rule is None:
            raise InputError(
                f"serial profile {p.name} has no event {event!r}", fix=f"use one of: {', '.join(self.event_names)}"
            )
        values: dict[str, str] = dict(p.fields.defaults)
        values.update({k: (v[0] if isinstance(v, list) else v) for k, v in rule.when.items()})
        values.update({k: str(v) for k, v in (fields or {}).items()})
        body = self._encode_body(values)
        try:
            frame = self._frame(body)
        except ProtocolError as exc:
            raise InputError(
                f"serial profile {p.name}: fields {values} cannot be checksummed ({exc.reason})",
                fix="check the field values against the profile",
            ) from None
        try:
            decoded = self.decode_frame(frame)
        except ProtocolError as exc:
            raise InputError(
                f"serial profile {p.name}: fields {values} make a frame it cannot read back ({exc})",
                fix="check the field values against the profile's regex or positions",
            ) from None
        if decoded.event != event:
            raise InputError(
                f"serial profile {p.name}: fields {values} read back as {decoded.event!r}, not {event!r}",
                fix="do not override the fields that select the event",
            )
        return frame + self._line_terminator()

    def _encode_body(self, values: dict[str, str]) -> bytes:
        p, fs = self.profile, self.profile.fields
        if self._encode_hook is not None:
            out = self._encode_hook(dict(values))
            return out if isinstance(out, bytes) else str(out).encode("ascii")
        if fs.template is not None:
            try:
                text = fs.template.format_map(values)
            except KeyError as exc:
                raise InputError(
                    f"serial profile {p.name}: field {exc.args[0]!r} has no value",
                    fix="give it in the fields, or in the profile's `defaults:`",
                ) from None
            if p.encoding == "ascii":
                return text.encode("ascii", errors="replace")
            return text.encode("latin-1", errors="replace")
        assert fs.positions is not None
        size = max(pos.start + pos.length for pos in fs.positions)
        if p.encoding == "ascii":
            chars = [" "] * size
            for pos in fs.positions:
                value = values.get(pos.name)
                if value is None:
                    raise InputError(
                        f"serial profile {p.name}: field {pos.name!r} has no value",
                        fix="give it in the fields, or in the profile's `defaults:`",
                    )
                if pos.pad is not None:
                    value = value.rjust(pos.length, pos.pad)
                if len(value) != pos.length:
                    raise InputError(
                        f"serial profile {p.name}: field {pos.name}={value!r} must be {pos.length} chars",
                        fix="give a value of that width, or set `pad:` on the position",
                    )
                chars[pos.start : pos.start + pos.length] = list(value)
            return "".join(chars).encode("ascii", errors="replace")
        buf = bytearray(size)
        for pos in fs.positions:
            value = values.get(pos.name)
            if value is None:
                raise InputError(
                    f"serial profile {p.name}: field {pos.name!r} has no value",
                    fix="give it in the fields, or in the profile's `defaults:`",
                )
            try:
                part = int(value).to_bytes(pos.length, "big") if pos.type == "int" else bytes.fromhex(value)
            except (ValueError, OverflowError):
                raise InputError(
                    f"serial profile {p.name}: field {pos.name}={value!r} does not fit its position",
                    fix=f"{pos.type} of {pos.length} bytes",
                ) from None
            if len(part) != pos.length:
                raise InputError(
                    f"serial profile {p.name}: field {pos.name}={value!r} is not {pos.length} bytes",
                    fix="give a value of that width",
                )
            buf[pos.start : pos.start + pos.length] = part
        return bytes(buf).hex().upper().encode("ascii") if p.encoding == "hex" else bytes(buf)

    def _frame(self, body: bytes) -> bytes:
        """Wrap the body: checksum, sentinels or length (the line terminator is added by `encode`)."""
        p, cs = self.profile, self.profile.checksum
        f = p.framing
        sep = cs.separator.encode("latin-1")
        if isinstance(f, SentinelFraming):
            prefix, end = f.start_byte, f.end_byte
        elif isinstance(f, LengthFraming):
            extra = cs.size + len(sep) if cs.algorithm != "none" else 0
            length = len(body) + extra - f.length_adjust
            if not 0 <= length < 256**f.length_size:
                raise InputError(
                    f"serial profile {p.name}: body of {len(body)} bytes does not fit the length field",
                    fix="shorten the fields",
                )
            prefix, end = f.sync_bytes + length.to_bytes(f.length_size, f.endian), b""
        else:
            prefix, end = b"", b""
        if cs.algorithm == "none":
            return prefix + body + end
        if cs.place == "end":
            value = self._compute(self._covered(prefix, body, sep, b""))
            return prefix + body + sep + self._render_checksum(value) + end
        value = self._compute(self._covered(prefix, body, sep, end))
        assert isinstance(f, SentinelFraming)
        return prefix + body + end + sep + self._render_checksum(value)

    def _line_terminator(self) -> bytes:
        f = self.profile.framing
        return f.terminator.encode("ascii") if isinstance(f, LineFraming) else b""


def _fill(template: str, fields: Mapping[str, str]) -> str:
    try:
        return template.format_map(fields)
    except (KeyError, ValueError, IndexError):
        raise ProtocolError(PROTOCOL, f"fields {dict(fields)} do not fill {template!r}") from None
