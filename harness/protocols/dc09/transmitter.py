"""The alarm transmitter's side of DC-09, sans-I/O: sequence numbers, frames to send, replies paired back.

A NAK carries the receiver's clock; the transmitter adopts the offset (receiver time minus its own) for every
later timestamp and resends, which is what DC-09 asks of a transmitter whose clock is off.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from harness.protocols.base import ProtocolError
from harness.protocols.dc09.crypto import Padding, check_key
from harness.protocols.dc09.frame import (
    NAK,
    NULL,
    DC09Message,
    DC09Reply,
    decode,
    encode_message,
)

PROTOCOL = "dc09"
CLOCK_MARGIN = timedelta(days=366)
"""A NAK's clock is adopted only if timestamps a year either side of it still exist."""


class SequenceCounter:
    """0001..9999, then 0001 again (0000 is left to replies such as NAK)."""

    def __init__(self, start: int = 1) -> None:
        if not 1 <= start <= 9999:
            raise ValueError("DC-09 sequence starts within 1..9999")
        self._next = start

    def peek(self) -> int:
        return self._next

    def next(self) -> int:
        value = self._next
        self._next = 1 if value >= 9999 else value + 1
        return value


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """A reply paired with the message it answers (None when nothing pending has its sequence)."""

    reply: DC09Reply
    message: DC09Message | None
    clock_offset: timedelta | None = None
    """Set for a NAK: receiver time minus transmitter time, now used for later timestamps."""

    @property
    def retry(self) -> bool:
        """A NAK asks for the same message again, with a corrected timestamp."""
        return self.reply.kind == NAK


class TransmitterState:
    """One account's transmitter: builds frames, remembers what awaits a reply, pairs replies by sequence.

    `R0` and `L0` are sent by default: pysiaalarm requires `L` and, when `R` is missing, echoes the text
    `None` in its reply (`"ACK"0001NoneL0#1234[]`), which no decoder can read.
    """

    def __init__(
        self,
        account: str,
        key: bytes | None = None,
        *,
        receiver: str | None = "0",
        line: str | None = "0",
        padding: Padding = "random",
        rng: random.Random | None = None,
        start_sequence: int = 1,
        account_in_data: bool = True,
    ) -> None:
        self.account = account.upper()
        self.key = check_key(key) if key is not None else None
        self.receiver = receiver
        self.line = line
        self.padding: Padding = padding
        self.rng = rng
        self.sequence = SequenceCounter(start_sequence)
        self.clock_offset = timedelta(0)
        self.account_in_data = account_in_data
        self._pending: dict[int, DC09Message] = {}

    def stamp(self, now: datetime) -> datetime:
        """The timestamp to send: our clock corrected by the last NAK, whole seconds."""
        try:
            return (now + self.clock_offset).replace(microsecond=0)
        except OverflowError:  # an offset adopted near the calendar's end: our own clock is all we have
            self.clock_offset = timedelta(0)
            return now.replace(microsecond=0)

    def message(self, token: str, data: str, now: datetime, extended: tuple[tuple[str, str], ...] = ()) -> DC09Message:
        """A new message with the next sequence number. `data` is without brackets; for SIA-DCS and ADM-CID
        the `#ACCT|` prefix is added when `account_in_data` and the data does not start with `#`."""
        if token != NULL and self.account_in_data and not data.startswith("#"):
            data = f"#{self.account}|{data}"
        msg = DC09Message(
            token,
            self.sequence.next(),
            self.account,
            data,
            self.receiver,
            self.line,
            extended,
            self.stamp(now),
            self.key is not None,
        )
        self._pending[msg.sequence] = msg
        return msg

    def poll(self, now: datetime) -> DC09Message:
        """A NULL link test."""
        return self.message(NULL, "", now)

    def restamp(self, msg: DC09Message, now: datetime) -> DC09Message:
        """The same message (same sequence) with a fresh, corrected timestamp, for a retry."""
        again = replace(msg, timestamp=self.stamp(now))
        self._pending[again.sequence] = again
        return again

    def encode(self, msg: DC09Message) -> bytes:
        return encode_message(msg, self.key, padding=self.padding, rng=self.rng)

    def pending(self) -> list[DC09Message]:
        return list(self._pending.values())

    def forget(self, msg: DC09Message) -> None:
        self._pending.pop(msg.sequence, None)

    def on_reply(self, raw: bytes, now: datetime) -> ReplyResult:
        """Decode one reply frame and pair it. A NAK (sequence 0000) pairs with the oldest pending message
        and sets the clock offset. Raises `ProtocolError` for malformed replies or non-replies."""
        event = decode(raw, self.key)
        if not isinstance(event, DC09Reply):
            raise ProtocolError(PROTOCOL, f"expected a reply, got a {event.token} message")
        if event.kind == NAK:
            if event.timestamp is None:
                raise ProtocolError(PROTOCOL, "NAK without the receiver's timestamp")
            offset = event.timestamp - now.replace(microsecond=0)
            try:  # a receiver's clock at the calendar's edge would make every later timestamp overflow
                now + offset + CLOCK_MARGIN, now + offset - CLOCK_MARGIN
            except OverflowError:
                raise ProtocolError(
                    PROTOCOL, f"NAK timestamp {event.timestamp.isoformat()} is too near the calendar's end to adopt"
                ) from None
            self.clock_offset = offset
            oldest = next(iter(self._pending.values()), None)
            return ReplyResult(event, oldest, self.clock_offset)
        if event.account and event.account.upper() != self.account:
            # an ACK echoes the account it answers: one for another account is not this message's receipt
            raise ProtocolError(
                PROTOCOL, f"{event.kind} for account {event.account}, expected {self.account}: not paired"
            )
        msg = self._pending.pop(event.sequence, None)
        return ReplyResult(event, msg)
