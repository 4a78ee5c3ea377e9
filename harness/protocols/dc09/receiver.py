"""The receiving centre's side of DC-09 as a sans-I/O state machine: frame + `now` in, decided reply out.

Rules (PROTOCOLS.md section 2; pysiaalarm's receiver for the window default):
- envelope broken (size, ASCII, LEN, CRC, header): `ProtocolError`, no reply; the transmitter's timeout and
  retry is the recovery, as with pysiaalarm, which does not answer a CRC mismatch;
- unknown account, encrypted without a key, undecryptable, unencrypted where the account requires
  encryption, an ID this receiver does not know, or data it cannot read: `DUH` (never encrypted);
- timestamp outside the window (default 40 s behind to 20 s ahead of `now`): `NAK` with the receiver's time;
- otherwise `ACK` (encrypted `*ACK` with timestamp when the message was encrypted). A repeat of a message
  already accepted (same account, sequence, ID and data) is ACKed again and flagged `duplicate`.
"""

from __future__ import annotations

import random
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from harness.protocols.base import ProtocolError
from harness.protocols.contact_id import ContactIdEvent, decode_adm_cid
from harness.protocols.dc09.crypto import Padding, check_key
from harness.protocols.dc09.frame import (
    ACK,
    ADM_CID,
    DUH,
    MESSAGE_IDS,
    REPLY_KINDS,
    SIA_DCS,
    DC09Message,
    DC09Reply,
    encode_reply,
    nak,
    open_frame,
    parse_frame,
)
from harness.protocols.sia_dcs import SiaData, decode_sia_data


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    TIMESTAMP_OUTSIDE_WINDOW = "timestamp_outside_window"
    TIMESTAMP_MISSING = "timestamp_missing"
    UNKNOWN_ACCOUNT = "unknown_account"
    UNDECRYPTABLE = "undecryptable"
    UNENCRYPTED_REFUSED = "unencrypted_refused"
    UNSUPPORTED_ID = "unsupported_id"
    BAD_DATA = "bad_data"


@dataclass(frozen=True, slots=True)
class Account:
    """An account the receiver serves. With a key, unencrypted messages are refused unless told otherwise."""

    account: str
    key: bytes | None = None
    require_encryption: bool | None = None

    def __post_init__(self) -> None:
        if self.key is not None:
            check_key(self.key)

    @property
    def encryption_required(self) -> bool:
        return self.key is not None if self.require_encryption is None else self.require_encryption


@dataclass(frozen=True, slots=True)
class ReceiverPolicy:
    window_behind: timedelta = timedelta(seconds=40)
    window_ahead: timedelta = timedelta(seconds=20)
    accept_unknown_accounts: bool = False
    require_timestamp: bool = False
    """Unencrypted messages may leave out the timestamp; encrypted ones never can."""
    duplicate_memory: int = 4096
    padding: Padding = "random"


@dataclass(frozen=True, slots=True)
class Decision:
    """What the receiver made of one frame and what it answers."""

    outcome: Outcome
    reply: DC09Reply
    reply_bytes: bytes
    message: DC09Message | None = None
    content: SiaData | ContactIdEvent | None = None
    duplicate: bool = False
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE)


_DATA_ACCOUNT = re.compile(r"#([0-9A-Fa-f]{3,16})\|")


class ReceiverState:
    """Accounts, policy and the memory of accepted (account, sequence) pairs for duplicate detection."""

    def __init__(
        self, accounts: Iterable[Account] = (), policy: ReceiverPolicy | None = None, rng: random.Random | None = None
    ) -> None:
        self.accounts: dict[str, Account] = {a.account.upper(): a for a in accounts}
        self.policy = policy or ReceiverPolicy()
        self.rng = rng
        self._seen: OrderedDict[tuple[str, int], tuple[str, str, tuple[tuple[str, str], ...]]] = OrderedDict()

    def receive(self, raw: bytes, now: datetime) -> Decision:
        """Decide the reply to one frame. `now` is the receiver's UTC time. Raises only `ProtocolError`."""
        frame = parse_frame(raw)
        account_id = frame.account
        if account_id is None and not frame.encrypted:
            m = _DATA_ACCOUNT.match(frame.payload)
            account_id = m.group(1) if m else None

        def duh(outcome: Outcome, reason: str, message: DC09Message | None = None) -> Decision:
            reply = DC09Reply(DUH, frame.sequence, frame.account, "", frame.receiver, frame.line)
            return Decision(outcome, reply, encode_reply(reply), message, reason=reason)

        if frame.token in REPLY_KINDS:
            return duh(Outcome.UNSUPPORTED_ID, f"a {frame.token} reply sent to a receiver")
        account = self.accounts.get(account_id.upper()) if account_id else None
        if account is None:
            if not self.policy.accept_unknown_accounts or frame.encrypted:
                return duh(Outcome.UNKNOWN_ACCOUNT, f"account {account_id!r} is not served here")
            account = Account(account_id or "")
        if frame.encrypted:
            if account.key is None:
                return duh(Outcome.UNDECRYPTABLE, "encrypted message for an account without a key")
            try:
                opened = open_frame(frame, account.key)
            except ProtocolError as exc:
                return duh(Outcome.UNDECRYPTABLE, exc.reason)
        else:
            if account.encryption_required:
                return duh(Outcome.UNENCRYPTED_REFUSED, f"account {account.account} requires encryption")
            try:
                opened = open_frame(frame)
            except ProtocolError as exc:
                return duh(Outcome.BAD_DATA, exc.reason)
        assert isinstance(opened, DC09Message)
        msg = opened
        if msg.timestamp is None:
            if self.policy.require_timestamp:
                reply = nak(now)
                return Decision(Outcome.TIMESTAMP_MISSING, reply, encode_reply(reply), msg, reason="no timestamp")
        elif not now - self.policy.window_behind <= msg.timestamp <= now + self.policy.window_ahead:
            reply = nak(now)
            skew = (msg.timestamp - now).total_seconds()
            return Decision(
                Outcome.TIMESTAMP_OUTSIDE_WINDOW,
                reply,
                encode_reply(reply),
                msg,
                reason=f"timestamp {skew:+.0f} s from the receiver's clock",
            )
        if msg.token not in MESSAGE_IDS:
            return duh(Outcome.UNSUPPORTED_ID, f"message ID {msg.token!r} is not SIA-DCS, ADM-CID or NULL", msg)
        content: SiaData | ContactIdEvent | None = None
        try:
            if msg.token == SIA_DCS:
                content = decode_sia_data(msg.data)
            elif msg.token == ADM_CID:
                content = decode_adm_cid(msg.data)
        except ProtocolError as exc:
            return duh(Outcome.BAD_DATA, exc.reason, msg)
        duplicate = self._remember(account.account.upper(), msg)
        key = account.key if msg.encrypted else None
        reply = DC09Reply(
            ACK,
            msg.sequence,
            frame.account,
            "",
            frame.receiver,
            frame.line,
            timestamp=now.replace(microsecond=0) if key else None,
            encrypted=key is not None,
        )
        reply_bytes = encode_reply(reply, key, padding=self.policy.padding, rng=self.rng)
        outcome = Outcome.DUPLICATE if duplicate else Outcome.ACCEPTED
        return Decision(outcome, reply, reply_bytes, msg, content, duplicate)

    def _remember(self, account: str, msg: DC09Message) -> bool:
        key = (account, msg.sequence)
        fingerprint = (msg.token, msg.data, msg.extended)
        seen = self._seen.get(key)
        if seen == fingerprint:
            self._seen.move_to_end(key)
            return True
        self._seen[key] = fingerprint
        self._seen.move_to_end(key)
        while len(self._seen) > self.policy.duplicate_memory:
            self._seen.popitem(last=False)
        return False
