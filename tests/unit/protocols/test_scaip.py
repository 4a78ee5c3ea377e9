"""SCAIP `<mrq>`/`<mrs>` codec: documents written from the schema, every element, the refusals a receiver
must answer with the right status number, and XML attacks refused before anything is expanded."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols import scaip
from harness.protocols.base import ProtocolError
from harness.protocols.scaip import (
    CallHandlingReply,
    Geo,
    MediaReply,
    MessageType,
    Mrq,
    Mrs,
    ScaipError,
    StatusNumber,
)

# An <mrq> with every element of the schema, written by hand in the schema's sequence (the form the
# xsdata serializer of caruhome/scaip-gateway emits: declaration, no whitespace), not by vtlab's encoder.
FULL_MRQ = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b"<mrq><ref>A1b2C3d4E5f6G7h8</ref><ver>01.00</ver><sco>0</sco><cha>1</cha><mty>ME</mty><hbo>1</hbo>"
    b"<cid>4711000000000001</cid><dty>0005</dty><did>FALL0001</did><dco>002</dco><dte>Fall detector</dte>"
    b"<crd>sip:4711@alarm.example.org</crd><stc>0009</stc><stt>Fall detected</stt><pri>0</pri>"
    b"<lco>012</lco><lva>2</lva><lge><geo>59.9139,10.7522</geo><tim>2024-05-06T12:34:56+02</tim>"
    b"<gga>$GPGGA,123456.00,5954.834,N,01045.132,E,1,08,0.9,10.0,M,39.0,M,,*6A</gga></lge>"
    b"<lte>Bedroom</lte><ico>001</ico><ite>Battery 80%</ite><ame>1</ame></mrq>"
)
FULL_MRS = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b"<mrs><ref>A1b2C3d4E5f6G7h8</ref><snu>0</snu><ste>OK</ste><cve>01.00</cve><mre>1</mre><cre>62</cre>"
    b"<tnu>sip:+4712345678@pstn.example.org</tnu><hbi>2</hbi></mrs>"
)


def test_every_mrq_element_decodes_typed() -> None:
    m = scaip.decode(FULL_MRQ)
    assert isinstance(m, Mrq)
    assert (m.ref, m.ver, m.sco, m.cha, m.mty, m.hbo) == ("A1b2C3d4E5f6G7h8", "01.00", 0, 1, MessageType.MESSAGE, "1")
    assert (m.cid, m.dty, m.did, m.dco, m.dte) == ("4711000000000001", "0005", "FALL0001", "002", "Fall detector")
    assert (m.crd, m.stc, m.stt, m.pri) == ("sip:4711@alarm.example.org", "0009", "Fall detected", 0)
    assert (m.lco, m.lva, m.lte, m.ico, m.ite, m.ame) == ("012", "2", "Bedroom", "001", "Battery 80%", 1)
    assert m.lge == Geo(
        geo="59.9139,10.7522",
        tim="2024-05-06T12:34:56+02",
        gga="$GPGGA,123456.00,5954.834,N,01045.132,E,1,08,0.9,10.0,M,39.0,M,,*6A",
    )
    assert m.device_type_name == "fall detector"
    assert m.status_code_name == "automatic alarm"


def test_every_mrs_element_decodes_typed() -> None:
    r = scaip.decode(FULL_MRS)
    assert isinstance(r, Mrs)
    assert r.snu is StatusNumber.OK and r.ok
    assert (r.ste, r.cve, r.mre, r.cre, r.tnu, r.hbi) == (
        "OK",
        "01.00",
        MediaReply.DUPLEX,
        CallHandlingReply.TRANSFERRED_NUMBER,
        "sip:+4712345678@pstn.example.org",
        2,
    )


def test_encoder_writes_the_schema_sequence_byte_for_byte() -> None:
    """Encoding what was decoded gives the hand-written document back: same order, same text."""
    assert scaip.encode(scaip.decode(FULL_MRQ)) == FULL_MRQ
    assert scaip.encode(scaip.decode(FULL_MRS)) == FULL_MRS


def test_decoder_accepts_pretty_printed_any_order_and_a_namespace() -> None:
    doc = b"""<?xml version="1.0"?>
    <mrq xmlns="urn:example:scaip">
      <cid> 12 </cid>
      <dty>3</dty>
      <ref>r1</ref>
      <stc>10</stc>
    </mrq>"""
    m = scaip.decode_mrq(doc)
    assert (m.ref, m.cid, m.dty, m.stc, m.ver, m.mty) == ("r1", "12", "3", "10", None, None)
    assert m.device_type_name == "personal trigger" and m.status_code_name == "manual alarm"


def test_unknown_elements_are_kept_not_refused() -> None:
    m = scaip.decode_mrq(b"<mrq><ref>r</ref><cid>1</cid><dty>0003</dty><xyz>new in 02.00</xyz></mrq>")
    assert m.extra == (("xyz", "new in 02.00"),)
    assert b"xyz" not in m.encode()


@pytest.mark.parametrize(
    ("dty", "name"),
    [
        ("0003", "personal trigger"),
        ("0004", "fixed trigger"),
        ("0005", "fall detector"),
        ("0011", "pill dispenser"),
        ("0012", "bed monitor"),
        ("0013", "mat sensor"),
        ("0014", "door sensor"),
        ("0015", "wandering sensor"),
        ("0023", "smoke detector"),
        ("0030", "man-down detector"),
        ("0051", "tracking device"),
    ],
)
def test_device_type_table(dty: str, name: str) -> None:
    assert scaip.device_type_name(dty) == name
    assert scaip.device_type_name(dty.lstrip("0")) == name


@pytest.mark.parametrize(
    ("stc", "name"),
    [
        ("0009", "automatic alarm"),
        ("0010", "manual alarm"),
        ("0014", "battery failure"),
        ("0016", "battery low"),
        ("0023", "IP connection failure"),
        ("0081", "pill not taken"),
        ("0082", "pill reminder"),
        ("0083", "pill taken"),
        ("0085", "power failure"),
        ("0086", "power restored"),
        ("0093", "manual reset"),
        ("0094", "restoral"),
        ("0102", "test transmission primary"),
        ("0103", "test transmission redundant"),
        ("0110", "assistance"),
        ("0111", "intervention complete"),
    ],
)
def test_status_code_table(stc: str, name: str) -> None:
    assert scaip.status_code_name(stc) == name


def test_unknown_codes_are_accepted_without_a_name() -> None:
    m = scaip.decode_mrq(b"<mrq><ref>r</ref><cid>1</cid><dty>9999</dty><stc>0999</stc></mrq>")
    assert m.device_type_name is None and m.status_code_name is None


def test_message_types() -> None:
    for mty in MessageType:
        m = Mrq(ref="r", cid="1", dty="0003", mty=mty)
        assert scaip.decode_mrq(m.encode()).mty is mty
    assert Mrq(ref="r", cid="1", dty="3", mty=MessageType.HEARTBEAT).is_heartbeat


def test_reply_for_echoes_ref_and_version() -> None:
    m = Mrq(ref="abc", cid="1", dty="0003")
    r = scaip.reply_for(m, StatusNumber.BUSY, hbi=4)
    assert scaip.decode_mrs(r.encode()) == Mrs(ref="abc", snu=StatusNumber.BUSY, cve="01.00", hbi=4)


def test_text_is_escaped() -> None:
    m = Mrq(ref="r", cid="1", dty="3", stt="<&>'\"")
    assert b"&lt;&amp;&gt;" in m.encode()
    assert scaip.decode_mrq(m.encode()).stt == "<&>'\""


# --- refusals: element named, status number as a receiver answers ------------------------------


@pytest.mark.parametrize(
    ("doc", "element", "snu"),
    [
        (b"<mrq><cid>1</cid><dty>3</dty></mrq>", "ref", StatusNumber.MANDATORY_TAG_MISSING),
        (b"<mrq><ref>r</ref><dty>3</dty></mrq>", "cid", StatusNumber.MANDATORY_TAG_MISSING),
        (b"<mrq><ref>r</ref><cid>1</cid></mrq>", "dty", StatusNumber.MANDATORY_TAG_MISSING),
        (b"<mrq><ref>r</ref><cid>1</cid><dty></dty></mrq>", "dty", StatusNumber.INVALID_FORMAT),
        (b"<mrq><ref>12345678901234567</ref><cid>1</cid><dty>3</dty></mrq>", "ref", StatusNumber.INVALID_FORMAT),
        (b"<mrq><ref>a-b</ref><cid>1</cid><dty>3</dty></mrq>", "ref", StatusNumber.INVALID_FORMAT),
        (b"<mrq><ref>r</ref><cid>12345678901234567</cid><dty>3</dty></mrq>", "cid", StatusNumber.INVALID_FORMAT),
        (b"<mrq><ref>r</ref><cid>12a</cid><dty>3</dty></mrq>", "cid", StatusNumber.INVALID_FORMAT),
        (b"<mrq><ref>r</ref><cid>1</cid><dty>00003</dty></mrq>", "dty", StatusNumber.INVALID_FORMAT),
        (b"<mrq><ref>r</ref><cid>1</cid><dty>3</dty><did>123456789</did></mrq>", "did", StatusNumber.INVALID_FORMAT),
        (b"<mrq><ref>r</ref><cid>1</cid><dty>3</dty><mty>XX</mty></mrq>", "mty", StatusNumber.WRONG_DATA_CONTENT),
        (b"<mrq><ref>r</ref><cid>1</cid><dty>3</dty><ame>2</ame></mrq>", "ame", StatusNumber.WRONG_DATA_CONTENT),
        (b"<mrq><ref>r</ref><cid>1</cid><dty>3</dty><ver>1.0</ver></mrq>", "ver", StatusNumber.INVALID_FORMAT),
        (
            b"<mrq><ref>r</ref><cid>1</cid><dty>3</dty><lge><geo>north</geo></lge></mrq>",
            "lge/geo",
            StatusNumber.INVALID_FORMAT,
        ),
        (
            b"<mrq><ref>r</ref><cid>1</cid><dty>3</dty><lge><alt>3</alt></lge></mrq>",
            "lge/alt",
            StatusNumber.INVALID_FORMAT,
        ),
        (b"<mrq><ref>r</ref><cid>1</cid><cid>2</cid><dty>3</dty></mrq>", "cid", StatusNumber.INVALID_FORMAT),
        (b"<mrq><ref>r</ref><cid><x>1</x></cid><dty>3</dty></mrq>", "cid", StatusNumber.INVALID_FORMAT),
        (b"<mrs><snu>0</snu></mrs>", "ref", StatusNumber.MANDATORY_TAG_MISSING),
        (b"<mrs><ref>r</ref></mrs>", "snu", StatusNumber.MANDATORY_TAG_MISSING),
        (b"<mrs><ref>r</ref><snu>8</snu></mrs>", "snu", StatusNumber.WRONG_DATA_CONTENT),
        (b"<mrs><ref>r</ref><snu>0</snu><mre>4</mre></mrs>", "mre", StatusNumber.WRONG_DATA_CONTENT),
        (b"<mrs><ref>r</ref><snu>0</snu><cre>63</cre></mrs>", "cre", StatusNumber.WRONG_DATA_CONTENT),
        (b"<mrs><ref>r</ref><snu>0</snu><hbi>5</hbi></mrs>", "hbi", StatusNumber.WRONG_DATA_CONTENT),
    ],
)
def test_refusal_names_the_element(doc: bytes, element: str, snu: StatusNumber) -> None:
    with pytest.raises(ScaipError) as info:
        scaip.decode(doc)
    assert info.value.element == element
    assert info.value.snu is snu
    assert element.split("/")[-1] in str(info.value)


def test_refusal_carries_the_ref_so_the_receiver_can_answer() -> None:
    with pytest.raises(ScaipError) as info:
        scaip.decode_mrq(b"<mrq><ref>abc</ref><cid>x</cid><dty>3</dty></mrq>")
    assert info.value.ref == "abc"
    with pytest.raises(ScaipError) as info:
        scaip.decode_mrq(b"<mrq><ref>a-b</ref><cid>x</cid><dty>3</dty></mrq>")
    assert info.value.ref is None


@pytest.mark.parametrize(
    "doc",
    [
        b"",
        b"   ",
        b"<mrq>",
        b"not xml",
        b"<mrq><ref>r</ref></mrq><mrq/>",
        b"<other/>",
        b"<mrq>text<ref>r</ref><cid>1</cid><dty>3</dty></mrq>",
        b"<mrq><ref>r</ref>tail<cid>1</cid><dty>3</dty></mrq>",
        b"<?xml version='1.0' encoding='klingon'?><mrq/>",
        b"\xff\xfe<\x00m\x00",
        b"<mrq><ref>r\x00</ref></mrq>",
    ],
)
def test_malformed_documents_raise_protocol_error(doc: bytes) -> None:
    with pytest.raises(ProtocolError):
        scaip.decode(doc)


def test_decode_mrq_refuses_an_mrs_and_vice_versa() -> None:
    with pytest.raises(ScaipError, match="expected <mrq>"):
        scaip.decode_mrq(FULL_MRS)
    with pytest.raises(ScaipError, match="expected <mrs>"):
        scaip.decode_mrs(FULL_MRQ)


def test_constructing_an_invalid_document_is_refused_too() -> None:
    with pytest.raises(ScaipError) as info:
        Mrq(ref="r", cid="12x", dty="3")
    assert info.value.element == "cid"
    with pytest.raises(ScaipError):
        Mrs(ref="toolongreference17", snu=StatusNumber.OK)


# --- XML attacks ------------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<mrq><ref>r</ref><cid>1</cid><dty>3</dty><stt>&lol9;</stt></mrq>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE mrq [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<mrq><ref>r</ref><cid>1</cid><dty>3</dty><stt>&xxe;</stt></mrq>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE mrq SYSTEM "http://127.0.0.1:9/scaip.dtd">
<mrq><ref>r</ref><cid>1</cid><dty>3</dty></mrq>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE mrq [<!ENTITY % ext SYSTEM "file:///etc/hostname"> %ext;]>
<mrq><ref>r</ref><cid>1</cid><dty>3</dty></mrq>"""


@pytest.mark.parametrize(
    "doc", [BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD, PARAMETER_ENTITY], ids=["laughs", "xxe", "dtd", "pe"]
)
def test_dtds_and_entities_are_refused_not_expanded(doc: bytes) -> None:
    started = time.process_time()
    with pytest.raises(ScaipError) as info:
        scaip.decode(doc)
    assert "DTD" in info.value.reason or "entit" in info.value.reason.lower()
    assert "root:" not in str(info.value)  # nothing of /etc/passwd leaked into the message
    assert time.process_time() - started < 1.0  # refused up front, never expanded (a generous bound)


def test_oversized_document_is_refused_unread() -> None:
    doc = b"<mrq><ref>r</ref><cid>1</cid><dty>3</dty><stt>" + b"x" * scaip.MAX_DOCUMENT_BYTES + b"</stt></mrq>"
    with pytest.raises(ScaipError) as info:
        scaip.decode(doc)
    assert info.value.snu is StatusNumber.TOO_LONG


def test_deep_nesting_within_the_size_bound_is_refused() -> None:
    depth = 1000
    doc = b"<mrq><ref>r</ref><cid>1</cid><dty>3</dty><lge>" + b"<a>" * depth + b"</a>" * depth + b"</lge></mrq>"
    assert len(doc) <= scaip.MAX_DOCUMENT_BYTES
    with pytest.raises(ScaipError) as info:
        scaip.decode(doc)
    assert info.value.element == "lge/a"


# --- property: anything in, a document or a ProtocolError out ---------------------------------------


def _mutations() -> st.SearchStrategy[bytes]:
    def mutate(doc: bytes, pos: int, op: int, byte: int) -> bytes:
        pos %= len(doc) + 1
        if op == 0:
            return doc[:pos] + bytes([byte]) + doc[pos:]
        if op == 1:
            return doc[:pos] + doc[pos + 1 :]
        return doc[:pos] + bytes([byte]) + doc[pos + 1 :]

    base = st.sampled_from([FULL_MRQ, FULL_MRS, Mrq(ref="r", cid="1", dty="3").encode()])
    return st.builds(mutate, base, st.integers(0, 2000), st.integers(0, 2), st.integers(0, 255))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600), _mutations()))
def test_random_and_mutated_bytes_never_escape_as_other_errors(data: bytes) -> None:
    try:
        doc = scaip.decode(data)
    except ProtocolError:
        return
    assert isinstance(doc, Mrq | Mrs)
    assert scaip.decode(doc.encode()) == doc


@settings(max_examples=150, deadline=None)
@given(
    ref=st.from_regex(r"[0-9a-zA-Z]{1,16}", fullmatch=True),
    cid=st.from_regex(r"[0-9]{1,16}", fullmatch=True),
    dty=st.from_regex(r"[0-9]{1,4}", fullmatch=True),
    stt=st.none()
    | st.text(
        st.characters(min_codepoint=32, max_codepoint=0xFFFF, exclude_categories=("Cs",)), min_size=1, max_size=32
    ).filter(lambda s: s == s.strip()),
)
def test_valid_documents_round_trip(ref: str, cid: str, dty: str, stt: str | None) -> None:
    m = Mrq(ref=ref, cid=cid, dty=dty, stt=stt)
    assert scaip.decode_mrq(m.encode()) == m
