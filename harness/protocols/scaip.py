"""SCAIP (SS 91100:2014, CLC/TS 50134-9): the social-care alarm documents `<mrq>` and `<mrs>`.

A device (controller) sends an `<mrq>` in the body of a SIP MESSAGE (`application/scaip+xml`); the
response centre answers the SIP transaction and sends an `<mrs>` with the same `ref` back in a MESSAGE
of its own (see PROTOCOLS.md section 4). This module is the document codec only: bytes <-> frozen
dataclasses, no SIP, no I/O.

Element syntax follows the SCAIP schema as published in the xsdata models of caruhome/scaip-gateway
(patterns and lengths); decoding validates each element and refuses a document with a `ScaipError` that
names the element and carries the SCAIP status number (`snu`) a receiver should answer with: 2 invalid
format (syntax), 3 wrong data content (a value outside a closed code list), 7 mandatory tag missing.

XML is parsed with defusedxml: a DTD, an entity declaration or an external reference is refused before
anything is expanded (billion laughs, XXE), and a document over `MAX_DOCUMENT_BYTES` is refused unread.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Any
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

import defusedxml.ElementTree as safe_et
from defusedxml import DefusedXmlException

from harness.protocols.base import ProtocolError

PROTOCOL = "SCAIP"
CONTENT_TYPE = "application/scaip+xml"
VERSION = "01.00"
MAX_DOCUMENT_BYTES = 8 * 1024
"""A real mrq is a few hundred bytes (the longest elements are a 256-char SIP URI and an 81-char GGA
sentence); 8 KiB leaves room for every element at its maximum and refuses anything else unread."""


class StatusNumber(IntEnum):
    """`snu` of an `<mrs>`: the receiver's verdict on the request."""

    OK = 0
    TOO_LONG = 1
    INVALID_FORMAT = 2
    WRONG_DATA_CONTENT = 3
    HOLD = 4
    NOT_TREATED = 5
    BUSY = 6
    MANDATORY_TAG_MISSING = 7


class MessageType(StrEnum):
    """`mty` of an `<mrq>`."""

    MESSAGE = "ME"
    RESET = "RE"
    INFORMATION = "IN"
    HEARTBEAT = "PI"


class MediaReply(IntEnum):
    """`mre` of an `<mrs>`: what the centre wants from the voice call."""

    NO_VOICE = 0
    DUPLEX = 1
    MICROPHONE_ONLY = 2
    SPEAKER_ONLY = 3


class CallHandlingReply(IntEnum):
    """`cre` of an `<mrs>`: call the predefined receiver, or the number in `tnu`."""

    PREDEFINED_RECEIVER = 61
    TRANSFERRED_NUMBER = 62


DEVICE_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "0000": "unknown",
        "0001": "undefined",
        "0002": "local unit and controller",
        "0003": "personal trigger",
        "0004": "fixed trigger",
        "0005": "fall detector",
        "0010": "activity detector",
        "0011": "pill dispenser",
        "0012": "bed monitor",
        "0013": "mat sensor",
        "0014": "door sensor",
        "0015": "wandering sensor",
        "0017": "epilepsy detector",
        "0020": "environmental monitor",
        "0021": "gas detector",
        "0023": "smoke detector",
        "0025": "heat detector",
        "0026": "carbon monoxide detector",
        "0030": "man-down detector",
        "0032": "communication link monitor",
        "0033": "flood detector",
        "0041": "power supply",
        "0045": "controller",
        "0051": "tracking device",
    }
)
"""Device types (`dty`) with their names: the ones in PROTOCOLS.md section 4 and their close neighbours."""

STATUS_CODES: Mapping[str, str] = MappingProxyType(
    {
        "0000": "unknown",
        "0001": "undefined",
        "0009": "automatic alarm",
        "0010": "manual alarm",
        "0014": "battery failure",
        "0015": "battery ok",
        "0016": "battery low",
        "0023": "IP connection failure",
        "0024": "mobile network connection failure",
        "0081": "pill not taken",
        "0082": "pill reminder",
        "0083": "pill taken",
        "0085": "power failure",
        "0086": "power restored",
        "0092": "automatic reset",
        "0093": "manual reset",
        "0094": "restoral",
        "0102": "test transmission primary",
        "0103": "test transmission redundant",
        "0110": "assistance",
        "0111": "intervention complete",
        "0112": "IP connection re-established",
        "0113": "mobile network connection re-established",
    }
)
"""Status codes (`stc`) with their names: PROTOCOLS.md section 4 and the restorals that pair with them."""


def _code_key(code: str | None) -> str | None:
    return code.zfill(4) if code is not None and code.isdigit() else None


def device_type_name(dty: str | None) -> str | None:
    """Name of a device type code (`"3"` and `"0003"` alike); None when the table does not know it."""
    key = _code_key(dty)
    return DEVICE_TYPES.get(key) if key else None


def status_code_name(stc: str | None) -> str | None:
    """Name of a status code (`"10"` and `"0010"` alike); None when the table does not know it."""
    key = _code_key(stc)
    return STATUS_CODES.get(key) if key else None


class ScaipError(ProtocolError):
    """A SCAIP document that cannot be accepted.

    `element` names the offending element (None for the document as a whole), `snu` is the status
    number a receiver answers with, and `ref` is the request's reference when it could be read, so the
    receiver can still send a matching `<mrs>`.
    """

    def __init__(
        self,
        reason: str,
        *,
        element: str | None = None,
        snu: StatusNumber = StatusNumber.INVALID_FORMAT,
        ref: str | None = None,
    ) -> None:
        super().__init__(PROTOCOL, reason)
        self.element = element
        self.snu = snu
        self.ref = ref


# --- element syntax ------------------------------------------------------------------------------

_FORMAT = StatusNumber.INVALID_FORMAT
_CONTENT = StatusNumber.WRONG_DATA_CONTENT


@dataclass(frozen=True, slots=True)
class _Rule:
    """How one element's text is checked: a pattern (syntax, snu 2), or a closed list (snu 3)."""

    pattern: re.Pattern[str]
    allowed: frozenset[str] | None = None
    what: str = ""


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)


def _text(max_len: int) -> _Rule:
    return _Rule(_rx(r"[^\x00-\x08\x0b\x0c\x0e-\x1f]{1," + str(max_len) + "}"), what=f"1 to {max_len} characters")


_REF = _Rule(_rx(r"[0-9a-zA-Z]{1,16}"), what="1 to 16 letters or digits")
_VERSION = _Rule(_rx(r"[0-9]{2}\.[0-9]{2}"), what="NN.NN")

MRQ_RULES: Mapping[str, _Rule] = MappingProxyType(
    {
        "ref": _REF,
        "ver": _VERSION,
        "sco": _Rule(_rx(r"[0-9]"), frozenset("0123"), "one digit 0-3"),
        "cha": _Rule(_rx(r"[0-9]"), what="one digit"),
        "mty": _Rule(_rx(r"[A-Z]{2}"), frozenset(m.value for m in MessageType), "ME, RE, IN or PI"),
        "hbo": _Rule(_rx(r"[0-9]{1,3}"), what="1 to 3 digits"),
        "cid": _Rule(_rx(r"[0-9]{1,16}"), what="1 to 16 digits"),
        "dty": _Rule(_rx(r"[0-9]{1,4}"), what="1 to 4 digits"),
        "did": _text(8),
        "dco": _Rule(_rx(r"[0-9]{1,3}"), what="1 to 3 digits"),
        "dte": _text(32),
        "crd": _text(256),
        "stc": _Rule(_rx(r"[0-9]{1,4}"), what="1 to 4 digits"),
        "stt": _text(32),
        "pri": _Rule(_rx(r"[0-9]"), what="one digit"),
        "lco": _Rule(_rx(r"[0-9]{1,3}"), what="1 to 3 digits"),
        "lva": _text(2),
        "lte": _text(32),
        "ico": _Rule(_rx(r"[0-9]{1,3}"), what="1 to 3 digits"),
        "ite": _text(128),
        "ame": _Rule(_rx(r"[0-9]"), frozenset("01"), "0 or 1"),
    }
)
LGE_RULES: Mapping[str, _Rule] = MappingProxyType(
    {
        "geo": _Rule(_rx(r"[0-9.,+\-]{1,23}"), what="WGS84 'lat,lon' (digits, '.', ',')"),
        "tim": _Rule(_rx(r"[0-9\-:+TZ.]{10,29}"), what="an ISO 8601 time"),
        "gga": _Rule(_rx(r"[\x20-\x7e]{1,81}"), what="an NMEA GGA sentence of at most 81 characters"),
    }
)
MRS_RULES: Mapping[str, _Rule] = MappingProxyType(
    {
        "ref": _REF,
        "snu": _Rule(_rx(r"[0-9]{1,5}"), frozenset("01234567"), "a status number 0-7"),
        "ste": _text(128),
        "cve": _VERSION,
        "mre": _Rule(_rx(r"[0-9]{1,2}"), frozenset({"0", "1", "2", "3"}), "a media reply 0-3"),
        "cre": _Rule(_rx(r"[0-9]{2}"), frozenset({"61", "62"}), "61 or 62"),
        "tnu": _text(256),
        "hbi": _Rule(_rx(r"[0-9]"), frozenset("01234"), "a heartbeat interval 0-4"),
    }
)
MRQ_ORDER = (
    "ref",
    "ver",
    "sco",
    "cha",
    "mty",
    "hbo",
    "cid",
    "dty",
    "did",
    "dco",
    "dte",
    "crd",
    "stc",
    "stt",
    "pri",
    "lco",
    "lva",
    "lge",
    "lte",
    "ico",
    "ite",
    "ame",
)
"""The schema's sequence: the encoder writes elements in this order (the decoder accepts any order)."""
MRS_ORDER = ("ref", "snu", "ste", "cve", "mre", "cre", "tnu", "hbi")
MRQ_REQUIRED = ("ref", "cid", "dty")
MRS_REQUIRED = ("ref", "snu")


def _check(name: str, value: str, rule: _Rule, ref: str | None) -> str:
    if not rule.pattern.fullmatch(value):
        raise ScaipError(f"<{name}> must be {rule.what}, got {value[:40]!r}", element=name, snu=_FORMAT, ref=ref)
    if rule.allowed is not None and value not in rule.allowed and _normalise_int(value) not in rule.allowed:
        raise ScaipError(f"<{name}> must be {rule.what}, got {value!r}", element=name, snu=_CONTENT, ref=ref)
    return value


def _normalise_int(value: str) -> str:
    return str(int(value)) if value.isdigit() else value


# --- documents -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Geo:
    """`<lge>`: a geographic position (WGS84 `geo`, its time `tim`, or a raw NMEA `gga` sentence)."""

    geo: str | None = None
    tim: str | None = None
    gga: str | None = None

    def __post_init__(self) -> None:
        for name in ("geo", "tim", "gga"):
            value = getattr(self, name)
            if value is not None:
                _check(name, value, LGE_RULES[name], None)


@dataclass(frozen=True, slots=True)
class Mrq:
    """`<mrq>`: a device's message (alarm, reset, information or heartbeat) to the response centre."""

    ref: str
    cid: str
    dty: str
    ver: str | None = VERSION
    mty: MessageType | None = MessageType.MESSAGE
    sco: int | None = None
    cha: int | None = None
    hbo: str | None = None
    did: str | None = None
    dco: str | None = None
    dte: str | None = None
    crd: str | None = None
    stc: str | None = None
    stt: str | None = None
    pri: int | None = None
    lco: str | None = None
    lva: str | None = None
    lge: Geo | None = None
    lte: str | None = None
    ico: str | None = None
    ite: str | None = None
    ame: int | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())
    """Elements the schema does not name, kept (name, text) so a finding can show them; never encoded."""

    def __post_init__(self) -> None:
        _validate(self, MRQ_RULES, self.ref)

    @property
    def device_type_name(self) -> str | None:
        return device_type_name(self.dty)

    @property
    def status_code_name(self) -> str | None:
        return status_code_name(self.stc)

    @property
    def is_heartbeat(self) -> bool:
        return self.mty is MessageType.HEARTBEAT

    def encode(self) -> bytes:
        return encode(self)


@dataclass(frozen=True, slots=True)
class Mrs:
    """`<mrs>`: the response centre's answer to the `<mrq>` with the same `ref`."""

    ref: str
    snu: StatusNumber = StatusNumber.OK
    ste: str | None = None
    cve: str | None = None
    mre: MediaReply | None = None
    cre: CallHandlingReply | None = None
    tnu: str | None = None
    hbi: int | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        _validate(self, MRS_RULES, self.ref)

    @property
    def ok(self) -> bool:
        return self.snu is StatusNumber.OK

    def encode(self) -> bytes:
        return encode(self)


def _validate(doc: Mrq | Mrs, rules: Mapping[str, _Rule], ref: str) -> None:
    """Constructing a document checks it as decoding does: vtlab never sends what it would refuse."""
    for name, rule in rules.items():
        value = getattr(doc, name)
        if value is None:
            continue
        text = value.value if isinstance(value, StrEnum) else str(int(value)) if isinstance(value, int) else value
        if not isinstance(text, str):
            raise ScaipError(f"<{name}> must be text, got {type(value).__name__}", element=name)
        _check(name, text, rule, ref if name != "ref" else None)


def reply_for(mrq: Mrq, snu: StatusNumber = StatusNumber.OK, **fields_: Any) -> Mrs:
    """The `<mrs>` that answers `mrq` (same `ref`, version echoed)."""
    fields_.setdefault("cve", VERSION)
    return Mrs(ref=mrq.ref, snu=snu, **fields_)


# --- encoding ------------------------------------------------------------------------------------


def _element_text(value: object) -> str:
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, int):
        return str(int(value))
    return str(value)


def encode(doc: Mrq | Mrs) -> bytes:
    """The document as UTF-8 XML with a declaration, elements in the schema's order."""
    root, order = ("mrq", MRQ_ORDER) if isinstance(doc, Mrq) else ("mrs", MRS_ORDER)
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', f"<{root}>"]
    for name in order:
        value = getattr(doc, name)
        if value is None:
            continue
        if isinstance(value, Geo):
            inner = "".join(
                f"<{sub}>{escape(text)}</{sub}>" for sub in ("geo", "tim", "gga") if (text := getattr(value, sub))
            )
            parts.append(f"<lge>{inner}</lge>")
        else:
            parts.append(f"<{name}>{escape(_element_text(value))}</{name}>")
    parts.append(f"</{root}>")
    return "".join(parts).encode("utf-8")


# --- decoding ------------------------------------------------------------------------------------


def _local(tag: object) -> str:
    if not isinstance(tag, str):
        return "?"
    return tag.rsplit("}", 1)[-1]


def _parse_xml(data: bytes) -> Element:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ScaipError(
            f"document of {len(data)} bytes is over the {MAX_DOCUMENT_BYTES}-byte bound", snu=StatusNumber.TOO_LONG
        )
    if not data.strip():
        raise ScaipError("empty body: no SCAIP document")
    try:
        root = safe_et.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise ScaipError(
            f"XML refused: {type(exc).__name__} (DTDs, entities and external references are not allowed)"
        ) from None
    except safe_et.ParseError as exc:
        raise ScaipError(f"not well-formed XML: {exc}") from None
    except (ValueError, LookupError, RecursionError) as exc:  # an unknown encoding declaration, deep nesting
        raise ScaipError(f"not readable XML: {type(exc).__name__}") from None
    return root


def _leaf_text(el: Element, name: str, ref: str | None) -> str:
    if len(el):
        raise ScaipError(f"<{name}> must hold text, not elements", element=name, ref=ref)
    return (el.text or "").strip()


def _find_ref(root: Element) -> str | None:
    """The request's `ref` if it is present and valid, so even a refused request can be answered."""
    for child in root:
        if _local(child.tag) == "ref" and not len(child):
            text = (child.text or "").strip()
            if _REF.pattern.fullmatch(text):
                return text
    return None


def _collect(
    root: Element, rules: Mapping[str, _Rule], ref: str | None
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    values: dict[str, Any] = {}
    extra: list[tuple[str, str]] = []
    if (root.text or "").strip():
        raise ScaipError(f"<{_local(root.tag)}> holds text outside its elements", ref=ref)
    for child in root:
        name = _local(child.tag)
        if (child.tail or "").strip():
            raise ScaipError(f"text after <{name}>", element=name, ref=ref)
        if name in values:
            raise ScaipError(f"<{name}> appears twice", element=name, ref=ref)
        if name == "lge" and rules is MRQ_RULES:
            values[name] = _decode_geo(child, ref)
            continue
        if name not in rules:
            extra.append((name, "".join(child.itertext()).strip()[:256]))
            continue
        text = _leaf_text(child, name, ref)
        if not text:
            raise ScaipError(f"<{name}> is empty", element=name, ref=ref)
        values[name] = _check(name, text, rules[name], ref)
    return values, extra


def _decode_geo(el: Element, ref: str | None) -> Geo:
    sub: dict[str, str] = {}
    for child in el:
        name = _local(child.tag)
        if name not in LGE_RULES:
            raise ScaipError(f"<lge> holds an unknown element <{name}>", element=f"lge/{name}", ref=ref)
        if name in sub:
            raise ScaipError(f"<lge/{name}> appears twice", element=f"lge/{name}", ref=ref)
        text = _leaf_text(child, f"lge/{name}", ref)
        if text:
            sub[name] = _check(f"lge/{name}", text, LGE_RULES[name], ref)
    return Geo(**sub)


def _missing(values: Mapping[str, Any], required: tuple[str, ...], root: str, ref: str | None) -> None:
    for name in required:
        if name not in values:
            raise ScaipError(
                f"<{root}> lacks the mandatory element <{name}>",
                element=name,
                snu=StatusNumber.MANDATORY_TAG_MISSING,
                ref=ref,
            )


def decode(data: bytes) -> Mrq | Mrs:
    """An `<mrq>` or `<mrs>` from XML bytes; anything else raises `ScaipError`."""
    root = _parse_xml(data)
    name = _local(root.tag)
    if name == "mrq":
        return _decode_mrq(root)
    if name == "mrs":
        return _decode_mrs(root)
    raise ScaipError(f"root element is <{name[:40]}>, expected <mrq> or <mrs>")


def decode_mrq(data: bytes) -> Mrq:
    """An `<mrq>` (what a receiver accepts); an `<mrs>` or anything else raises `ScaipError`."""
    root = _parse_xml(data)
    if _local(root.tag) != "mrq":
        raise ScaipError(f"root element is <{_local(root.tag)[:40]}>, expected <mrq>", ref=_find_ref(root))
    return _decode_mrq(root)


def decode_mrs(data: bytes) -> Mrs:
    """An `<mrs>` (what a device accepts); anything else raises `ScaipError`."""
    root = _parse_xml(data)
    if _local(root.tag) != "mrs":
        raise ScaipError(f"root element is <{_local(root.tag)[:40]}>, expected <mrs>", ref=_find_ref(root))
    return _decode_mrs(root)


def _decode_mrq(root: Element) -> Mrq:
    ref = _find_ref(root)
    values, extra = _collect(root, MRQ_RULES, ref)
    _missing(values, MRQ_REQUIRED, "mrq", ref)
    kwargs: dict[str, Any] = {"ver": None, "mty": None}
    for f in fields(Mrq):
        if f.name not in values:
            continue
        value = values[f.name]
        if f.name == "mty":
            value = MessageType(value)
        elif f.name in ("sco", "cha", "pri", "ame"):
            value = int(value)
        kwargs[f.name] = value
    return Mrq(**kwargs, extra=tuple(extra))


def _decode_mrs(root: Element) -> Mrs:
    ref = _find_ref(root)
    values, extra = _collect(root, MRS_RULES, ref)
    _missing(values, MRS_REQUIRED, "mrs", ref)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name == "snu":
            kwargs[name] = StatusNumber(int(value))
        elif name == "mre":
            kwargs[name] = MediaReply(int(value))
        elif name == "cre":
            kwargs[name] = CallHandlingReply(int(value))
        elif name == "hbi":
            kwargs[name] = int(value)
        else:
            kwargs[name] = value
    return Mrs(**kwargs, extra=tuple(extra))


def to_json(doc: Mrq | Mrs) -> dict[str, Any]:
    """A plain dict for JSON output (names of known codes added beside them)."""
    out: dict[str, Any] = {"type": "mrq" if isinstance(doc, Mrq) else "mrs"}
    for f in fields(doc):
        value = getattr(doc, f.name)
        if value is None or (f.name == "extra" and not value):
            continue
        if isinstance(value, Geo):
            out[f.name] = {k: getattr(value, k) for k in ("geo", "tim", "gga") if getattr(value, k) is not None}
        elif isinstance(value, StrEnum):
            out[f.name] = value.value
        elif isinstance(value, IntEnum):
            out[f.name] = int(value)
            out[f"{f.name}_name"] = value.name.lower()
        elif f.name == "extra":
            out[f.name] = [list(pair) for pair in value]
        else:
            out[f.name] = value
    if isinstance(doc, Mrq):
        if doc.device_type_name:
            out["dty_name"] = doc.device_type_name
        if doc.status_code_name:
            out["stc_name"] = doc.status_code_name
    return out


__all__ = [
    "CONTENT_TYPE",
    "DEVICE_TYPES",
    "MAX_DOCUMENT_BYTES",
    "STATUS_CODES",
    "CallHandlingReply",
    "Geo",
    "MediaReply",
    "MessageType",
    "Mrq",
    "Mrs",
    "ScaipError",
    "StatusNumber",
    "decode",
    "decode_mrq",
    "decode_mrs",
    "device_type_name",
    "encode",
    "reply_for",
    "status_code_name",
    "to_json",
]
