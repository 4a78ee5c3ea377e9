"""Contact ID: checksum rule, 16-digit messages, DC-09 ADM-CID data."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.protocols.base import ProtocolError
from harness.protocols.contact_id import (
    EVENT_NAMES,
    ContactIdEvent,
    checksum_digit,
    decode_adm_cid,
    decode_contact_id,
    encode_adm_cid,
    encode_contact_id,
)

CID_DIGIT = st.sampled_from("0123456789BCDEF")


def test_checksum_of_a_published_example() -> None:
    # "1234 18 1 131 01 015": 1+2+3+4+1+8+1+1+3+1+10+1+10+1+5 = 52, next multiple of 15 is 60 -> S = 8
    assert checksum_digit("123418113101015") == "8"
    ev = decode_contact_id("1234 18 1 131 01 015 8")
    assert (ev.account, ev.message_type, ev.qualifier, ev.code, ev.partition, ev.zone) == (
        "1234",
        "18",
        1,
        "131",
        "01",
        "015",
    )


def test_checksum_digit_is_F_when_the_sum_is_already_a_multiple_of_15() -> None:
    assert checksum_digit("555") == "F"  # 15 -> S must add 15, not 0 (0 counts as 10)
    assert checksum_digit("5") == "0"  # 5 + 10 == 15


@pytest.mark.parametrize(
    ("acct", "mt", "q", "xyz", "gg", "ccc"),
    [  # spandsp tests/ademco_contactid_tests.c reports[]
        ("1234", "18", 1, "131", "01", "015"),
        ("1234", "18", 3, "131", "01", "015"),
        ("1234", "18", 1, "401", "02", "003"),
        ("1234", "18", 3, "401", "03", "005"),
    ],
)
def test_spandsp_reports_round_trip(acct: str, mt: str, q: int, xyz: str, gg: str, ccc: str) -> None:
    ev = ContactIdEvent(acct, q, xyz, gg, ccc, mt)
    text = encode_contact_id(ev)
    assert len(text) == 16
    assert decode_contact_id(text) == ev


def test_hex_A_is_not_a_contact_id_digit() -> None:
    # spandsp's sixth report ("89A") must be refused
    with pytest.raises(ValueError):
        checksum_digit("89A")
    with pytest.raises(ProtocolError):
        decode_contact_id("123456789A" + "BCDEF0")


@pytest.mark.parametrize(
    "bad", ["", "123418113101015", "12341811310101589", "1234181131010157", "1234185131010154", b"\xff" * 16, "x" * 100]
)
def test_malformed_messages_raise_protocol_error(bad: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_contact_id(bad)


@given(st.text(CID_DIGIT, min_size=15, max_size=15), st.integers(0, 15), CID_DIGIT)
def test_any_single_digit_change_breaks_the_checksum(body: str, where: int, new: str) -> None:
    msg = body + checksum_digit(body)
    mutated = msg[:where] + new + msg[where + 1 :]
    if mutated == msg:
        return
    try:
        decode_contact_id(mutated)
    except ProtocolError as exc:
        assert "checksum" in exc.reason or "qualifier" in exc.reason
    else:
        raise AssertionError(f"{mutated} passed the checksum")


@given(st.text(max_size=40))
def test_random_text_only_ever_raises_protocol_error(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        decode_contact_id(text)
    with contextlib.suppress(ProtocolError):
        decode_adm_cid(text)


def test_adm_cid_data_as_pysiaalarm_and_the_dc09_draft_write_it() -> None:
    ev = decode_adm_cid("#12345A|1110 00 129")
    assert (ev.account, ev.qualifier, ev.code, ev.partition, ev.zone) == ("12345A", 1, "110", "00", "129")
    assert ev.name == "Fire"
    assert decode_adm_cid("|1602 00 000").code == "602"
    assert decode_adm_cid("3401 01 057").is_restore
    assert encode_adm_cid(ContactIdEvent("1234", 1, "101", "00", "001")) == "#1234|1101 00 001"


@pytest.mark.parametrize("bad", ["#1234|2101 00 001", "#1234|1101 00 01", "#1234|110100001", "#1234|1101 00 001]"])
def test_adm_cid_refuses_bad_data(bad: str) -> None:
    with pytest.raises(ProtocolError):
        decode_adm_cid(bad)


def test_qualifiers_1_3_6_and_the_social_care_table() -> None:
    for q in (1, 3, 6):
        assert decode_contact_id(encode_contact_id(ContactIdEvent("1234", q, "101"))).qualifier == q
    with pytest.raises(ValueError):
        encode_contact_id(ContactIdEvent("1234", 2, "101"))
    for code in (
        "100",
        "101",
        "102",
        "110",
        "111",
        "137",
        "147",
        "301",
        "302",
        "350",
        "354",
        "356",
        "381",
        "384",
        "601",
        "602",
    ):
        assert code in EVENT_NAMES
    assert ContactIdEvent("1234", 1, "356").name == "Loss of central polling"
