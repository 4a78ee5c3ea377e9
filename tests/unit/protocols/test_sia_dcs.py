"""SIA DC-03 data as carried in DC-09 SIA-DCS, and its mapping to Contact ID."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.protocols.base import ProtocolError
from harness.protocols.sia_dcs import (
    CID_TO_SIA,
    SiaEvent,
    contact_id_to_sia,
    decode_sia_data,
    encode_sia_data,
    sia_event,
    sia_to_contact_id,
)


@pytest.mark.parametrize(
    ("data", "account", "code", "address", "area"),
    [  # data blocks from pysiaalarm's test frames and fioletoven/dc09's
        ("#123456|Nri1CL0^VX FRONTE ^", "123456", "CL", "0", "1"),
        ("#123456|Nri0KR1^TAST. 001 ^", "123456", "KR", "1", "0"),
        ("|Nri2/JC12", None, "JC", "12", "2"),
        ("Nri1/WA000", None, "WA", "000", "1"),
        ("#1111|Nri1/PA501", "1111", "PA", "501", "1"),
        ("#006969|Nri04/OP001NM", "006969", "OP", "001", "04"),
        ("#12345A|NFA129", "12345A", "FA", "129", None),
        ("#0123|Nti20:50:26RP99", "0123", "RP", "99", None),
    ],
)
def test_published_data_blocks(data: str, account: str | None, code: str, address: str, area: str | None) -> None:
    sia = decode_sia_data(data)
    assert sia.account == account
    assert (sia.first.code, sia.first.address, sia.first.area) == (code, address, area)


def test_names_time_text_and_several_events() -> None:
    sia = decode_sia_data("#1234|Nti12:00/id7/ri2/MA1^Bedroom^/BA5|Ahelp")
    assert [e.code for e in sia.events] == ["MA", "BA"]
    assert sia.first.name == "Bedroom" and sia.first.time == "12:00" and sia.first.user == "7"
    assert sia.events[1].area == "2"  # modifiers stay in force
    assert sia.text == "help"
    assert decode_sia_data("#1234|NRR|Atest").text == "test"


def test_encode_writes_modifiers_in_the_order_pysiaalarm_reads() -> None:
    assert encode_sia_data("1234", [sia_event("BA", 501, area=1)]) == "#1234|Nri1/BA501"
    ev = SiaEvent("MA", "1", area="2", user="3", time="12:34", name="Kitchen")
    text = encode_sia_data(None, [ev], "fall")
    assert text == "Nti12:34/id3/ri2/MA1^Kitchen^|Afall"
    back = decode_sia_data(text)
    assert (
        back.first.code,
        back.first.address,
        back.first.area,
        back.first.user,
        back.first.time,
        back.first.name,
        back.text,
    ) == ("MA", "1", "2", "3", "12:34", "Kitchen", "fall")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "#1234|",
        "#1234|Xri1/BA1",
        "#1234|N",
        "#1234|Nri1",
        "#1234|Nba1",
        "#1234|NBA1^open",
        "#1234|NBA1|Bnot-text",
        "#1234|NBA1\x00",
        "#1234|NMA1é",
        "N" + "MA1/" * 400,
    ],
)
def test_bad_data_raises_protocol_error(bad: str) -> None:
    with pytest.raises(ProtocolError):
        decode_sia_data(bad)


@given(st.text(max_size=60))
def test_random_data_only_ever_raises_protocol_error(text: str) -> None:
    with contextlib.suppress(ProtocolError):
        decode_sia_data(text)


def test_contact_id_mapping_both_ways() -> None:
    assert contact_id_to_sia(1, "100") == "MA" and contact_id_to_sia(3, "100") == "MH"
    assert contact_id_to_sia(1, "101") == "QA"
    assert contact_id_to_sia(1, "120") == "PA"
    assert contact_id_to_sia(1, "302") == "YT" and contact_id_to_sia(3, "302") == "YR"
    assert contact_id_to_sia(6, "110") == "FA"  # still present reads as the alarm
    assert contact_id_to_sia(1, "147") is None and contact_id_to_sia(1, "102") is None
    assert sia_to_contact_id("FA") == (1, "110")
    assert sia_to_contact_id("YK") == (3, "350")
    assert sia_to_contact_id("ZZ") is None
    for cid, (alarm, restore) in CID_TO_SIA.items():
        _q, back = sia_to_contact_id(alarm) or (0, "")
        assert CID_TO_SIA[back][0] == alarm, cid
        assert sia_to_contact_id(restore) is not None
