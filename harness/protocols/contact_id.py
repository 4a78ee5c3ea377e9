"""Ademco Contact ID (SIA DC-05): the 16-digit `ACCT MT Q XYZ GG CCC S` message and the DC-09 `ADM-CID` data.

Contact ID is what most social-care alarm units send, either as DTMF digits or inside SIA DC-09 (`ADM-CID`,
data like `#1234|1101 00 001`). The checksum makes a DTMF message self-checking: the digit values
(0 counts as 10, B..F as 11..15) plus the checksum digit S add up to a multiple of 15.

Sources: spandsp `src/ademco_contactid.c` (message layout, hex digits B..F, 'A' invalid); pysiaalarm
`utils/regexes.py` (ADM-CID data form); event names from /work/shared/domain/PROTOCOLS.md section 3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from harness.protocols.base import ProtocolError

PROTOCOL = "contact-id"


class Qualifier(IntEnum):
    """Q: what the event reports."""

    NEW = 1  # new event or opening
    RESTORE = 3  # restore or closing
    STILL_PRESENT = 6  # previously reported condition still present (status report)


EVENT_NAMES: Final[dict[str, str]] = {
    "100": "Medical",
    "101": "Personal emergency",
    "102": "Fail to report in",
    "110": "Fire",
    "111": "Smoke",
    "120": "Panic",
    "137": "Tamper",
    "147": "Sensor supervision failure",
    "301": "AC (mains) loss",
    "302": "Low system battery",
    "350": "Communication trouble",
    "354": "Failure to communicate event",
    "356": "Loss of central polling",
    "381": "Loss of RF supervision",
    "384": "RF low battery",
    "601": "Manual test",
    "602": "Periodic test",
}
"""Event codes that matter in social care (PROTOCOLS.md section 3; 120 panic added for the SIA PA mapping)."""

# digit value for the checksum: '0' is 10, 'A' is not a Contact ID digit (spandsp refuses it)
_DIGIT_VALUE: Final[dict[str, int]] = {
    **{str(d): d for d in range(1, 10)},
    "0": 10,
    "B": 11,
    "C": 12,
    "D": 13,
    "E": 14,
    "F": 15,
}
_VALUE_DIGIT: Final[dict[int, str]] = {v: k for k, v in _DIGIT_VALUE.items()}
_CID_DIGITS = "0-9B-F"
_MESSAGE = re.compile(
    rf"(?P<acct>[{_CID_DIGITS}]{{4}})(?P<mt>[{_CID_DIGITS}]{{2}})(?P<q>[{_CID_DIGITS}])(?P<xyz>[{_CID_DIGITS}]{{3}})"
    rf"(?P<gg>[{_CID_DIGITS}]{{2}})(?P<ccc>[{_CID_DIGITS}]{{3}})(?P<s>[{_CID_DIGITS}])"
)
# DC-09 ADM-CID data: optional `#acct|`, then `QXYZ GG CCC` (pysiaalarm regexes.py, dc09_spt dc05_msg.py)
_ADM = re.compile(
    r"(?:#(?P<acct>[0-9A-Fa-f]{3,16}))?\|?(?P<q>\d)(?P<xyz>\d{3}) (?P<gg>[0-9A-F]{2}) (?P<ccc>[0-9A-F]{3})"
)
MAX_ADM_CID_CHARS = 64


@dataclass(frozen=True, slots=True)
class ContactIdEvent:
    """One Contact ID report. Digits are kept as strings: leading zeros and B..F are meaningful."""

    account: str | None
    qualifier: int
    code: str
    partition: str = "00"
    zone: str = "000"
    message_type: str = "18"

    @property
    def name(self) -> str:
        """A readable name for the event code (`"Event 123"` for codes outside the table)."""
        return EVENT_NAMES.get(self.code, f"Event {self.code}")

    @property
    def is_restore(self) -> bool:
        return self.qualifier == Qualifier.RESTORE


def _check_fields(ev: ContactIdEvent, *, dtmf: bool) -> None:
    """Refuse to encode what a receiver could not decode: encoding errors are the caller's bug (ValueError)."""
    if ev.qualifier not in (1, 3, 6):
        raise ValueError(f"Contact ID qualifier must be 1, 3 or 6, not {ev.qualifier!r}")
    if not re.fullmatch(r"\d{3}", ev.code):
        raise ValueError(f"Contact ID event code must be 3 digits, not {ev.code!r}")
    if not re.fullmatch(r"[0-9B-F]{2}", ev.partition) or not re.fullmatch(r"[0-9B-F]{3}", ev.zone):
        raise ValueError(f"Contact ID partition/zone must be 2/3 digits: {ev.partition!r} {ev.zone!r}")
    if dtmf and (ev.account is None or not re.fullmatch(r"[0-9B-F]{4}", ev.account)):
        raise ValueError(f"a 16-digit Contact ID message needs a 4-digit account, not {ev.account!r}")
    if dtmf and not re.fullmatch(r"[0-9B-F]{2}", ev.message_type):
        raise ValueError(f"Contact ID message type must be 2 digits, not {ev.message_type!r}")


def checksum_digit(digits: str) -> str:
    """The S digit that makes the sum of all digit values (0 as 10, B..F as 11..15) a multiple of 15."""
    total = 0
    for ch in digits:
        value = _DIGIT_VALUE.get(ch)
        if value is None:
            raise ValueError(f"{ch!r} is not a Contact ID digit")
        total += value
    return _VALUE_DIGIT[15 - total % 15]


def encode_contact_id(ev: ContactIdEvent) -> str:
    """The 16-digit message `ACCT MT Q XYZ GG CCC S` without spaces (as DTMF would carry it)."""
    _check_fields(ev, dtmf=True)
    assert ev.account is not None
    body = f"{ev.account}{ev.message_type}{ev.qualifier}{ev.code}{ev.partition}{ev.zone}"
    return body + checksum_digit(body)


def decode_contact_id(text: str | bytes) -> ContactIdEvent:
    """Parse a 16-digit message (spaces allowed between the fields) and verify its checksum."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ProtocolError(PROTOCOL, "non-ASCII byte in message", offset=exc.start) from None
    if len(text) > MAX_ADM_CID_CHARS:
        raise ProtocolError(PROTOCOL, f"message of {len(text)} characters is too long")
    compact = text.strip().replace(" ", "").upper()
    m = _MESSAGE.fullmatch(compact)
    if m is None:
        raise ProtocolError(PROTOCOL, f"not 16 Contact ID digits (0-9, B-F): {text!r}")
    total = sum(_DIGIT_VALUE[ch] for ch in compact)
    if total % 15 != 0:
        raise ProtocolError(PROTOCOL, f"checksum: digit sum {total} is not a multiple of 15")
    q = m["q"]
    if q not in ("1", "3", "6"):
        raise ProtocolError(PROTOCOL, f"qualifier {q!r} is not 1 (new), 3 (restore) or 6 (still present)")
    return ContactIdEvent(m["acct"], int(q), m["xyz"], m["gg"], m["ccc"], m["mt"])


def encode_adm_cid(ev: ContactIdEvent) -> str:
    """DC-09 `ADM-CID` data without brackets: `#ACCT|QXYZ GG CCC` (account part left out when None)."""
    _check_fields(ev, dtmf=False)
    prefix = f"#{ev.account}|" if ev.account is not None else ""
    return f"{prefix}{ev.qualifier}{ev.code} {ev.partition} {ev.zone}"


def decode_adm_cid(data: str) -> ContactIdEvent:
    """Parse DC-09 `ADM-CID` data (`#1234|1101 00 001`, or without the `#acct|` part)."""
    if len(data) > MAX_ADM_CID_CHARS:
        raise ProtocolError(PROTOCOL, f"ADM-CID data of {len(data)} characters is too long")
    m = _ADM.fullmatch(data)
    if m is None:
        raise ProtocolError(PROTOCOL, f"ADM-CID data is not '#ACCT|QXYZ GG CCC': {data!r}")
    q = m["q"]
    if q not in ("1", "3", "6"):
        raise ProtocolError(PROTOCOL, f"qualifier {q!r} is not 1 (new), 3 (restore) or 6 (still present)")
    return ContactIdEvent(m["acct"], int(q), m["xyz"], m["gg"], m["ccc"])


__all__ = [
    "EVENT_NAMES",
    "ContactIdEvent",
    "Qualifier",
    "checksum_digit",
    "decode_adm_cid",
    "decode_contact_id",
    "encode_adm_cid",
    "encode_contact_id",
]
