"""SIA DC-03 data as carried in SIA DC-09 `SIA-DCS` messages, e.g. `#1234|Nri1/BA501`.

The data is an optional `#account|`, a block that starts with the function letter `N` (new event) or `O`
(old event), then tokens: lower-case modifiers with a value (`ri` area, `id` user, `ti` time, ...), upper-case
two-letter event codes followed by their address (zone, user or area number, depending on the code) and
optional `^names^`; `/` separates groups, and a later `|A...` block carries free text. Modifiers stay in force
for the events after them in the block.

Encoding writes modifiers in the order `ti`, `id`, `ri`, each followed by `/`, because pysiaalarm (the
receiver Home Assistant uses) reads them only in that order before the first code.

The mapping to and from Contact ID comes from pysiaalarm `data/adm_mapping.py` (its ADM-CID -> SIA table),
restricted to the social-care codes of PROTOCOLS.md section 3; 384 RF low battery -> XT/XR is added from
the SIA code definitions ("Transmitter Battery Trouble: low battery in wireless transmitter", pysiaalarm
`data/sia_codes.py`). 102 (fail to report in) and 147 (sensor supervision) have no obvious SIA code and
are left unmapped on purpose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from harness.protocols.base import ProtocolError

PROTOCOL = "sia-dcs"
MAX_SIA_DATA_CHARS = 1024

SIA_CODE_NAMES: Final[dict[str, str]] = {
    "MA": "Medical Alarm",
    "MH": "Medical Alarm Restore",
    "QA": "Emergency Alarm",
    "QH": "Emergency Alarm Restore",
    "FA": "Fire Alarm",
    "FH": "Fire Alarm Restore",
    "PA": "Panic Alarm",
    "PH": "Panic Alarm Restore",
    "TA": "Tamper Alarm",
    "TR": "Tamper Restoral",
    "AT": "AC Trouble",
    "AR": "AC Restoral",
    "YT": "System Battery Trouble",
    "YR": "System Battery Restoral",
    "YC": "Communications Fail",
    "YK": "Communications Restoral",
    "XT": "Transmitter Battery Trouble",
    "XR": "Transmitter Battery Restoral",
    "RX": "Manual Test",
    "RP": "Automatic Test",
    "BA": "Burglary Alarm",
    "OP": "Opening Report",
    "CL": "Closing Report",
}
"""Names (as in pysiaalarm `data/sia_codes.py`) of the codes vtlab maps or its tests use."""

# Contact ID event -> (SIA code for qualifier 1/6, SIA code for qualifier 3); pysiaalarm adm_mapping.py
CID_TO_SIA: Final[dict[str, tuple[str, str]]] = {
    "100": ("MA", "MH"),
    "101": ("QA", "QH"),
    "110": ("FA", "FH"),
    "111": ("FA", "FH"),
    "120": ("PA", "PH"),
    "137": ("TA", "TR"),
    "301": ("AT", "AR"),
    "302": ("YT", "YR"),
    "350": ("YC", "YK"),
    "354": ("YC", "YK"),
    "356": ("YC", "YK"),
    "381": ("YC", "YK"),
    "384": ("XT", "XR"),  # from the SIA code definitions, not in pysiaalarm's table
    "601": ("RX", "RX"),
    "602": ("RP", "RP"),
}

# SIA code -> (qualifier, Contact ID event); where several CID codes map to one SIA code the first is chosen
SIA_TO_CID: Final[dict[str, tuple[int, str]]] = {}
for _cid, (_alarm, _restore) in CID_TO_SIA.items():
    SIA_TO_CID.setdefault(_alarm, (1, _cid))
    SIA_TO_CID.setdefault(_restore, (3, _cid))


@dataclass(frozen=True, slots=True)
class SiaEvent:
    """One event code with its address and the modifiers in force where it stands."""

    code: str
    address: str | None = None
    area: str | None = None
    user: str | None = None
    time: str | None = None
    name: str | None = None
    modifiers: tuple[tuple[str, str], ...] = ()

    @property
    def description(self) -> str:
        return SIA_CODE_NAMES.get(self.code, f"SIA {self.code}")


@dataclass(frozen=True, slots=True)
class SiaData:
    """A decoded `SIA-DCS` data block."""

    account: str | None
    events: tuple[SiaEvent, ...]
    text: str | None = None
    old: bool = False

    @property
    def first(self) -> SiaEvent:
        return self.events[0]


_ACCOUNT = re.compile(r"#(?P<acct>[0-9A-Za-z]{1,16})")
_MODIFIER_VALUE = re.compile(r"[0-9:\-.,]*")
_ADDRESS = re.compile(r"[0-9]*")


def _err(reason: str, offset: int | None = None) -> ProtocolError:
    return ProtocolError(PROTOCOL, reason, offset=offset)


def decode_sia_data(data: str) -> SiaData:
    """Parse SIA-DCS data (the text between DC-09's first `[` and `]`)."""
    if len(data) > MAX_SIA_DATA_CHARS:
        raise _err(f"data of {len(data)} characters is too long")
    if any(not (" " <= ch <= "~") for ch in data):
        raise _err("data holds a character outside printable ASCII")
    pos = 0
    account = None
    m = _ACCOUNT.match(data)
    if m:
        account = m["acct"]
        pos = m.end()
    if data.startswith("|", pos):
        pos += 1
    blocks = data[pos:].split("|")
    head = blocks[0]
    if not head or head[0] not in "NO":
        raise _err(f"event block must start with N (new) or O (old): {data!r}", pos)
    text = None
    for extra in blocks[1:]:
        if not extra.startswith("A"):
            raise _err(f"block after '|' must be an A (text) block: {extra!r}")
        text = extra[1:] if text is None else f"{text}|{extra[1:]}"
    events = _parse_events(head[1:], pos + 1)
    if not events:
        raise _err(f"no event code in {data!r}")
    return SiaData(account, tuple(events), text, old=head[0] == "O")


def _parse_events(body: str, base: int) -> list[SiaEvent]:
    events: list[SiaEvent] = []
    mods: dict[str, str] = {}
    last_was_event = False
    i = 0
    n = len(body)
    while i < n:
        ch = body[i]
        if ch == "/":
            i += 1
            continue
        if ch == "^":
            end = body.find("^", i + 1)
            if end < 0:
                raise _err("unterminated ^name^", base + i)
            name = body[i + 1 : end]
            if last_was_event and events:
                ev = events[-1]
                events[-1] = SiaEvent(ev.code, ev.address, ev.area, ev.user, ev.time, name, ev.modifiers)
            else:
                mods[f"{_last_key(mods)}^"] = name
            i = end + 1
            continue
        pair = body[i : i + 2]
        if len(pair) == 2 and pair.islower() and pair.isalpha():
            vm = _MODIFIER_VALUE.match(body, i + 2)
            assert vm is not None
            mods[pair] = vm.group()
            i = vm.end()
            last_was_event = False
            continue
        if len(pair) == 2 and pair.isupper() and pair.isalpha():
            am = _ADDRESS.match(body, i + 2)
            assert am is not None
            address = am.group() or None
            events.append(
                SiaEvent(pair, address, mods.get("ri"), mods.get("id"), mods.get("ti"), None, tuple(mods.items()))
            )
            i = am.end()
            last_was_event = True
            continue
        raise _err(f"unexpected {ch!r} in event block", base + i)
    return events


def _last_key(mods: dict[str, str]) -> str:
    return next(reversed(mods)) if mods else ""


def encode_sia_data(account: str | None, events: list[SiaEvent] | tuple[SiaEvent, ...], text: str | None = None) -> str:
    """Build SIA-DCS data without brackets, e.g. `#1234|Nri1/BA501`."""
    if not events:
        raise ValueError("SIA-DCS data needs at least one event")
    parts: list[str] = []
    current: dict[str, str | None] = {"ti": None, "id": None, "ri": None}
    for ev in events:
        if not re.fullmatch(r"[A-Z]{2}", ev.code):
            raise ValueError(f"SIA event code must be two capital letters, not {ev.code!r}")
        if ev.address is not None and not re.fullmatch(r"\d{1,5}", ev.address):
            raise ValueError(f"SIA address must be 1-5 digits, not {ev.address!r}")
        piece = ""
        for key, value in (("ti", ev.time), ("id", ev.user), ("ri", ev.area)):
            if value is not None and value != current[key]:
                if not _MODIFIER_VALUE.fullmatch(value):
                    raise ValueError(f"SIA modifier {key} value {value!r} is not digits or a time")
                piece += f"{key}{value}/"
                current[key] = value
        piece += ev.code + (ev.address or "")
        if ev.name is not None:
            if any(c in ev.name for c in "^[]|"):
                raise ValueError(f"SIA name {ev.name!r} may not hold ^ [ ] |")
            piece += f"^{ev.name}^"
        parts.append(piece)
    out = ("" if account is None else f"#{account}|") + "N" + "/".join(parts)
    if text is not None:
        if any(c in text for c in "[]|") or any(not (" " <= c <= "~") for c in text):
            raise ValueError(f"SIA text {text!r} must be printable ASCII without [ ] |")
        out += f"|A{text}"
    return out


def sia_event(
    code: str, zone: int | str | None = None, *, area: int | str | None = None, user: int | str | None = None
) -> SiaEvent:
    """Convenience: `sia_event("BA", 501, area=1)` -> BA at zone 501 in area 1."""
    return SiaEvent(
        code,
        None if zone is None else str(zone),
        None if area is None else str(area),
        None if user is None else str(user),
    )


def contact_id_to_sia(qualifier: int, code: str) -> str | None:
    """The SIA code for a Contact ID event (qualifier 3 gives the restore code); None where none is obvious."""
    pair = CID_TO_SIA.get(code)
    if pair is None:
        return None
    return pair[1] if qualifier == 3 else pair[0]


def sia_to_contact_id(code: str) -> tuple[int, str] | None:
    """(qualifier, Contact ID event code) for a SIA code; None where none is obvious."""
    return SIA_TO_CID.get(code)


__all__ = [
    "CID_TO_SIA",
    "SIA_CODE_NAMES",
    "SIA_TO_CID",
    "SiaData",
    "SiaEvent",
    "contact_id_to_sia",
    "decode_sia_data",
    "encode_sia_data",
    "sia_event",
    "sia_to_contact_id",
]
