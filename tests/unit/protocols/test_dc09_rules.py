"""DC-09 receiver and transmitter rules (sans-I/O), and the TCP frame splitter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols.base import ProtocolError
from harness.protocols.contact_id import ContactIdEvent
from harness.protocols.dc09 import (
    Account,
    DC09Message,
    FrameSplitter,
    Junk,
    Outcome,
    ReceiverPolicy,
    ReceiverState,
    SequenceCounter,
    TransmitterState,
    decode,
    encode_message,
)
from harness.protocols.sia_dcs import SiaData

NOW = datetime(2024, 3, 5, 12, 0, 0, tzinfo=UTC)
KEY = b"0123456789abcdef"


def receiver(**policy: object) -> ReceiverState:
    return ReceiverState([Account("1234"), Account("CAFE", KEY)], ReceiverPolicy(**policy))  # type: ignore[arg-type]


def sia(tx: TransmitterState, data: str = "Nri1/MA1", at: datetime = NOW) -> bytes:
    return tx.encode(tx.message("SIA-DCS", data, at))


def test_ack_echoes_sequence_receiver_line_account_and_carries_the_content() -> None:
    d = receiver().receive(sia(TransmitterState("1234", receiver="12", line="3", start_sequence=77)), NOW)
    assert d.outcome is Outcome.ACCEPTED and d.reply.kind == "ACK" and not d.duplicate
    assert d.reply_bytes.decode().endswith('"ACK"0077R12L3#1234[]\r')
    assert isinstance(d.content, SiaData) and d.content.first.code == "MA"


def test_adm_cid_content_is_decoded() -> None:
    tx = TransmitterState("1234")
    d = receiver().receive(tx.encode(tx.message("ADM-CID", "1101 00 004", NOW)), NOW)
    assert isinstance(d.content, ContactIdEvent) and (d.content.code, d.content.zone) == ("101", "004")


@pytest.mark.parametrize(
    ("offset_s", "outcome"),
    [
        (-40, Outcome.ACCEPTED),
        (-41, Outcome.TIMESTAMP_OUTSIDE_WINDOW),
        (20, Outcome.ACCEPTED),
        (21, Outcome.TIMESTAMP_OUTSIDE_WINDOW),
        (0, Outcome.ACCEPTED),
        (-3600, Outcome.TIMESTAMP_OUTSIDE_WINDOW),
    ],
)
def test_timestamp_window_default_minus_40_plus_20(offset_s: int, outcome: Outcome) -> None:
    tx = TransmitterState("1234")
    d = receiver().receive(sia(tx, at=NOW + timedelta(seconds=offset_s)), NOW)
    assert d.outcome is outcome
    if outcome is Outcome.TIMESTAMP_OUTSIDE_WINDOW:
        assert (
            d.reply.kind == "NAK"
            and d.reply.timestamp == NOW
            and b'"NAK"0000R0L0A0[]_12:00:00,03-05-2024' in d.reply_bytes
        )


def test_window_is_configurable_and_missing_timestamp_can_be_required() -> None:
    tx = TransmitterState("1234")
    assert (
        receiver(window_behind=timedelta(seconds=5)).receive(sia(tx, at=NOW - timedelta(seconds=6)), NOW).outcome
        is Outcome.TIMESTAMP_OUTSIDE_WINDOW
    )
    plain = encode_message(DC09Message("SIA-DCS", 5, "1234", "#1234|Nri1/MA1", "0", "0"))
    assert receiver().receive(plain, NOW).outcome is Outcome.ACCEPTED
    d = receiver(require_timestamp=True).receive(plain, NOW)
    assert d.outcome is Outcome.TIMESTAMP_MISSING and d.reply.kind == "NAK"


def test_duh_for_unknown_account_undecryptable_unencrypted_unsupported_and_bad_data() -> None:
    rx = receiver()
    assert rx.receive(sia(TransmitterState("9999")), NOW).outcome is Outcome.UNKNOWN_ACCOUNT
    assert rx.receive(sia(TransmitterState("CAFE", b"f" * 16)), NOW).outcome is Outcome.UNDECRYPTABLE
    assert rx.receive(sia(TransmitterState("1234", KEY)), NOW).outcome is Outcome.UNDECRYPTABLE  # no key there
    assert rx.receive(sia(TransmitterState("CAFE")), NOW).outcome is Outcome.UNENCRYPTED_REFUSED
    tx = TransmitterState("1234")
    assert rx.receive(tx.encode(tx.message("SIA-XYZ", "Nri1/MA1", NOW)), NOW).outcome is Outcome.UNSUPPORTED_ID
    assert rx.receive(sia(tx, "Nri1"), NOW).outcome is Outcome.BAD_DATA
    d = rx.receive(tx.encode(tx.message("ADM-CID", "9101 00 001", NOW)), NOW)
    assert d.outcome is Outcome.BAD_DATA and d.reply.kind == "DUH"
    assert d.reply_bytes.startswith(b"\n") and b'"DUH"' in d.reply_bytes and b"*" not in d.reply_bytes


def test_unknown_accounts_can_be_accepted_when_unencrypted() -> None:
    rx = receiver(accept_unknown_accounts=True)
    assert rx.receive(sia(TransmitterState("9999")), NOW).outcome is Outcome.ACCEPTED
    assert rx.receive(sia(TransmitterState("9999", KEY)), NOW).outcome is Outcome.UNKNOWN_ACCOUNT


def test_encrypted_message_gets_encrypted_ack_with_time() -> None:
    tx = TransmitterState("CAFE", KEY)
    d = receiver().receive(sia(tx), NOW)
    assert d.outcome is Outcome.ACCEPTED and b'"*ACK"0001R0L0#CAFE[' in d.reply_bytes
    result = tx.on_reply(d.reply_bytes, NOW)
    assert result.reply.kind == "ACK" and result.reply.encrypted and result.reply.timestamp == NOW
    assert result.message is not None and result.message.sequence == 1


def test_duplicate_by_account_and_sequence_is_acked_again_and_flagged() -> None:
    rx = receiver()
    tx = TransmitterState("1234")
    msg = tx.message("SIA-DCS", "Nri1/MA1", NOW)
    first = rx.receive(tx.encode(msg), NOW)
    again = rx.receive(tx.encode(tx.restamp(msg, NOW + timedelta(seconds=2))), NOW + timedelta(seconds=2))
    assert not first.duplicate and again.duplicate and again.reply.kind == "ACK"
    assert again.outcome is Outcome.DUPLICATE and again.accepted
    other = rx.receive(sia(TransmitterState("1234", start_sequence=1), "Nri1/FA2"), NOW)
    assert not other.duplicate  # same sequence, other content: a new message (after a wrap)


def test_duplicate_memory_is_bounded() -> None:
    rx = receiver(duplicate_memory=10)
    tx = TransmitterState("1234")
    for _ in range(50):
        rx.receive(sia(tx), NOW)
    assert len(rx._seen) == 10


def test_sequence_wraps_9999_to_0001() -> None:
    seq = SequenceCounter(9998)
    assert [seq.next() for _ in range(4)] == [9998, 9999, 1, 2]
    tx = TransmitterState("1234", start_sequence=9999)
    assert tx.message("NULL", "", NOW).sequence == 9999
    m = tx.message("NULL", "", NOW)
    assert m.sequence == 1 and b'"NULL"0001' in tx.encode(m)


def test_nak_sets_the_clock_offset_and_the_retry_is_accepted() -> None:
    rx = receiver()
    tx = TransmitterState("1234")
    late = NOW - timedelta(minutes=5)  # the transmitter's clock is 5 minutes behind
    msg = tx.message("SIA-DCS", "Nri1/MA1", late)
    d = rx.receive(tx.encode(msg), NOW)
    result = tx.on_reply(d.reply_bytes, late)
    assert result.retry and result.message == msg and result.clock_offset == timedelta(minutes=5)
    again = tx.restamp(msg, late)
    assert again.sequence == msg.sequence and again.timestamp == NOW
    assert rx.receive(tx.encode(again), NOW).outcome is Outcome.ACCEPTED


def test_replies_pair_by_sequence() -> None:
    rx = receiver()
    tx = TransmitterState("1234")
    a, b = tx.message("NULL", "", NOW), tx.message("SIA-DCS", "Nri1/MA1", NOW)
    rb = rx.receive(tx.encode(b), NOW).reply_bytes
    ra = rx.receive(tx.encode(a), NOW).reply_bytes
    assert tx.on_reply(rb, NOW).message == b and tx.on_reply(ra, NOW).message == a
    assert tx.on_reply(ra, NOW).message is None  # already answered
    with pytest.raises(ProtocolError):
        tx.on_reply(tx.encode(tx.message("NULL", "", NOW)), NOW)  # a message, not a reply


def test_an_ack_for_another_account_is_not_this_messages_receipt() -> None:
    """The platform acknowledges sequence 1 of account 5678 on the line of account 1234: that alarm of
    1234 has no receipt yet (it stays pending and is retried or reported unanswered)."""
    rx = ReceiverState([Account("1234"), Account("5678")], ReceiverPolicy())
    mine, other = TransmitterState("1234"), TransmitterState("5678")
    msg = mine.message("SIA-DCS", "Nri1/MA1", NOW)
    wrong = rx.receive(other.encode(other.message("SIA-DCS", "Nri1/MA1", NOW)), NOW).reply_bytes
    right = rx.receive(mine.encode(msg), NOW).reply_bytes
    assert decode(wrong).sequence == msg.sequence  # same sequence number, another account
    with pytest.raises(ProtocolError, match="account 5678"):
        mine.on_reply(wrong, NOW)
    assert mine.pending() == [msg]
    assert mine.on_reply(right, NOW).message == msg


MUTATION = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["plain", "aes"]), MUTATION, st.binary(max_size=80))
def test_mutated_and_random_frames_never_break_the_receiver(
    kind: str, edits: list[tuple[int, int]], noise: bytes
) -> None:
    rx = receiver()
    tx = TransmitterState("CAFE", KEY) if kind == "aes" else TransmitterState("1234")
    raw = bytearray(sia(tx))
    for where, value in edits:
        if where < len(raw):
            raw[where] = value
    for candidate in (bytes(raw), noise, b"\n" + noise + b"\r"):
        try:
            d = rx.receive(candidate, NOW)
        except ProtocolError:
            continue
        assert d.reply_bytes.startswith(b"\n") and d.reply_bytes.endswith(b"\r")
        assert decode(d.reply_bytes, KEY).sequence in (0, d.reply.sequence)
    assert rx.receive(sia(tx, "Nri1/FA9"), NOW).outcome is Outcome.ACCEPTED  # still answers valid frames


def test_splitter_splits_joins_and_resyncs() -> None:
    tx = TransmitterState("1234")
    a, b = sia(tx), sia(tx)
    sp = FrameSplitter()
    assert sp.feed(a[:5]) == [] and sp.feed(a[5:] + b[:3]) == [a]
    assert sp.feed(b[3:]) == [b]
    out = sp.feed(b"garbage" + a[:20] + a)
    assert isinstance(out[0], Junk) and "outside" in out[0].reason
    assert isinstance(out[1], Junk) and "cut short" in out[1].reason
    assert out[2] == a
    assert sp.feed(a[:10]) == [] and [j.reason for j in sp.close()] == ["stream ended inside a frame"]


def test_splitter_bounds_what_it_holds() -> None:
    sp = FrameSplitter(max_frame_bytes=64)
    out = sp.feed(b"\n" + b"x" * 1000)
    assert out == [] and sp.buffered <= 64
    out = sp.feed(b"y" * 1000 + b"\r")
    assert len(out) == 1 and isinstance(out[0], Junk) and "longer than 64" in out[0].reason
    frame_ = sia(TransmitterState("1234"))
    assert FrameSplitter(max_frame_bytes=len(frame_)).feed(frame_) == [frame_]


@given(st.lists(st.binary(max_size=50), max_size=10))
def test_splitter_never_holds_more_than_its_bound(chunks: list[bytes]) -> None:
    sp = FrameSplitter(max_frame_bytes=32)
    for chunk in chunks:
        for item in sp.feed(chunk):
            assert len(item.raw if isinstance(item, Junk) else item) <= 32
        assert sp.buffered <= 32
