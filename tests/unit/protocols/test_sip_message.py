"""SIP message syntax from byte strings: RFC 3428's MESSAGE example, RFC 4475 torture tests where they
apply to a MESSAGE endpoint, compact forms, Content-Length framing on streams, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols.base import ProtocolError
from harness.protocols.sip import Request, Response, SipParseError, StreamReader, parse_message, serialize
from harness.protocols.sip import message as m


def crlf(text: str) -> bytes:
    """RFC examples are printed with bare line ends; on the wire each is CRLF."""
    return text.replace("\n", "\r\n").encode("utf-8")


# RFC 3428 section 4, F1: the MESSAGE request and the 200 OK that answers it.
RFC3428_MESSAGE = crlf(
    """MESSAGE sip:user2@domain.com SIP/2.0
Via: SIP/2.0/TCP user1pc.domain.com;branch=z9hG4bK776sgdkse
Max-Forwards: 70
From: sip:user1@domain.com;tag=49583
To: sip:user2@domain.com
Call-ID: asd88asd77a@1.2.3.4
CSeq: 1 MESSAGE
Content-Type: text/plain
Content-Length: 18

Watson, come here."""
)
RFC3428_200 = crlf(
    """SIP/2.0 200 OK
Via: SIP/2.0/TCP proxy.domain.com;branch=z9hG4bK123dsghds
Via: SIP/2.0/TCP user1pc.domain.com;branch=z9hG4bK776sgdkse;received=1.2.3.4
From: sip:user1@domain.com;tag=49394
To: sip:user2@domain.com;tag=ab8asdasd9
Call-ID: asd88asd77a@1.2.3.4
CSeq: 1 MESSAGE
Content-Length: 0

"""
)


def test_rfc3428_message_request() -> None:
    msg = parse_message(RFC3428_MESSAGE, datagram=False)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri, msg.body) == ("MESSAGE", "sip:user2@domain.com", b"Watson, come here.")
    via = m.top_via(msg)
    assert (via.transport, via.host, via.port, via.branch) == ("TCP", "user1pc.domain.com", None, "z9hG4bK776sgdkse")
    assert m.from_(msg).uri == "sip:user1@domain.com" and m.from_(msg).tag == "49583"
    assert m.to(msg).tag is None
    assert m.cseq(msg) == m.CSeq(1, "MESSAGE")
    assert m.call_id(msg) == "asd88asd77a@1.2.3.4"
    assert m.content_type(msg) == "text/plain"


def test_rfc3428_200_ok() -> None:
    msg = parse_message(RFC3428_200)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason, msg.is_final) == (200, "OK", True)
    vias = m.vias(msg)
    assert [v.host for v in vias] == ["proxy.domain.com", "user1pc.domain.com"]
    assert dict(vias[1].params)["received"] == "1.2.3.4"
    assert m.to(msg).tag == "ab8asdasd9"


def test_serialize_then_parse_is_identity_and_fixes_content_length() -> None:
    msg = parse_message(RFC3428_MESSAGE)
    wire = serialize(msg)
    assert wire.endswith(b"\r\n\r\nWatson, come here.")
    assert parse_message(wire) == msg
    lying = Request(msg.method, msg.uri, msg.headers.replace("Content-Length", "999"), msg.body)
    assert b"Content-Length: 18\r\n" in serialize(lying)


# RFC 4475 3.1.1.1 "wsinv": a short tortuous INVITE. Every element must take it as well-formed.
WSINV = crlf(
    """INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
"""
)


def test_rfc4475_wsinv_is_well_formed() -> None:
    msg = parse_message(WSINV)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri) == ("INVITE", "sip:vivekg@chair-dnrc.example.com;unknownparam")
    assert len(msg.body) == 150 and msg.body.startswith(b"v=0\r\n")
    assert m.to(msg).tag == "1918181833n" and m.to(msg).uri == "sip:vivekg@chair-dnrc.example.com"
    frm = m.from_(msg)
    assert (frm.display, frm.uri, frm.tag) == ('J Rosenberg \\"', "sip:jdrosen@example.com", "98asjd8")
    assert msg.headers.get("Max-Forwards") == "0068"
    assert m.cseq(msg) == m.CSeq(9, "INVITE")
    vias = m.vias(msg)
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = m.contacts(msg)
    assert contact.display == 'Quoted string ""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))


def _torture(lines: str) -> bytes:
    return crlf(lines)


INVALID = {
    # 3.1.2.4 scalar02: CSeq and Max-Forwards over their ranges
    "scalar02": _torture(
        """REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 10000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0

"""
    ),
    # 3.1.2.7 ncl: negative Content-Length
    "ncl": _torture(
        """INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

v=0
"""
    ),
    # 3.3.9 mcl01: two different Content-Length values
    "mcl01": _torture(
        """OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain

There's no way to know how many octets are supposed to be here.
"""
    ),
    # 3.1.2.17 mismatch01: request method and CSeq method differ
    "mismatch01": _torture(
        """OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
l: 0

"""
    ),
    # 3.3.3 insuf-like: Call-ID, From and To missing
    "insuf": _torture(
        """INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: 0

"""
    ),
    # a body shorter than its Content-Length in one datagram (RFC 3261 18.3)
    "clshort": _torture(
        """MESSAGE sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKshort
To: sip:user@example.com
From: sip:other@example.net;tag=1
Call-ID: short@192.0.2.1
CSeq: 1 MESSAGE
Content-Length: 50

only this much
"""
    ),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_rfc4475_invalid_messages_are_refused_with_400(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(INVALID[name])
    assert info.value.status == 400


def test_scalar02_is_refused_but_answerable() -> None:
    """A server answers 400 to scalar02: the parts a response needs were readable."""
    with pytest.raises(SipParseError) as info:
        parse_message(INVALID["scalar02"])
    assert info.value.partial is not None and info.value.partial.method == "REGISTER"


BADVERS = crlf(
    """OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0

"""
)


def test_rfc4475_badvers_is_refused_with_505() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(BADVERS)
    assert info.value.status == 505


def test_compact_forms_are_canonical() -> None:
    raw = crlf(
        """MESSAGE sip:a@b SIP/2.0
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc1
f: <sip:x@y>;tag=1
t: <sip:a@b>
i: compact@10.0.0.1
CSeq: 7 MESSAGE
c: application/scaip+xml
l: 4

<a/>"""
    )
    msg = parse_message(raw)
    assert [n for n, _ in msg.headers] == ["Via", "From", "To", "Call-ID", "CSeq", "Content-Type", "Content-Length"]
    assert m.content_type(msg) == "application/scaip+xml" and msg.body == b"<a/>"


def test_datagram_longer_than_content_length_is_cut() -> None:
    msg = parse_message(RFC3428_MESSAGE + b"trailing junk")
    assert msg.body == b"Watson, come here."


def test_stream_requires_content_length() -> None:
    raw = RFC3428_MESSAGE.replace(b"Content-Length: 18\r\n", b"")
    assert parse_message(raw, datagram=True).body == b"Watson, come here."
    with pytest.raises(SipParseError, match="Content-Length is required"):
        parse_message(raw, datagram=False)
    reader = StreamReader()
    reader.feed(raw)
    with pytest.raises(SipParseError):
        reader.next_message()


def test_stream_frames_by_content_length_across_and_within_reads() -> None:
    reader = StreamReader()
    stream = b"\r\n\r\n" + RFC3428_MESSAGE + RFC3428_200 + RFC3428_MESSAGE
    got: list[object] = []
    for i in range(len(stream)):  # one byte at a time: the worst a TCP peer can do
        reader.feed(stream[i : i + 1])
        while (msg := reader.next_message()) is not None:
            got.append(msg)
    assert [type(x).__name__ for x in got] == ["Request", "Response", "Request"]
    assert reader.buffered == 0
    reader.feed(stream)
    assert [type(reader.next_message()).__name__ for _ in range(3)] == ["Request", "Response", "Request"]
    assert reader.next_message() is None


def test_bounds_headers_count_and_sizes() -> None:
    many = RFC3428_MESSAGE.replace(
        b"CSeq: 1 MESSAGE\r\n", b"CSeq: 1 MESSAGE\r\n" + b"X-Pad: 1\r\n" * (m.MAX_HEADERS + 1)
    )
    with pytest.raises(SipParseError, match="header lines") as info:
        parse_message(many)
    assert info.value.status == 413
    with pytest.raises(SipParseError):
        parse_message(b"MESSAGE sip:a@b SIP/2.0\r\n" + b"X: " + b"y" * (m.MAX_HEADER_BYTES + 10))
    huge = RFC3428_MESSAGE.replace(b"Content-Length: 18", b"Content-Length: 99999999")
    with pytest.raises(SipParseError) as info:
        parse_message(huge)
    assert info.value.status == 413
    reader = StreamReader()
    reader.feed(b"MESSAGE sip:a@b SIP/2.0\r\nX: " + b"y" * (m.MAX_HEADER_BYTES + 10))
    with pytest.raises(SipParseError):
        reader.next_message()


REST = b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"garbage\r\n\r\n",
        b"MESSAGE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP x\r\n\r\n",
        b"SIP/2.0 999 Nope\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\n\r\n",
        b"SIP/2.0 4294967301 better not break the receiver\r\n\r\n",
        b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP \xff\xfe;branch=z9hG4bK1\r\n\r\n",
        b"MESSAGE not-a-uri SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n" + REST,
        b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h:99999;branch=z9hG4bK1\r\n" + REST,
        b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n" + REST.replace(b"<sip:a@b>", b"<sip:a@b"),
    ],
)
def test_malformed_raises_sip_parse_error(raw: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(raw)


def test_make_response_copies_vias_and_tags_to() -> None:
    req = parse_message(RFC3428_MESSAGE)
    assert isinstance(req, Request)
    resp = m.make_response(req, 200, "OK", to_tag="abc")
    parsed = parse_message(serialize(resp))
    assert isinstance(parsed, Response)
    assert m.to(parsed).tag == "abc" and m.from_(parsed).tag == "49583"
    assert m.top_via(parsed).branch == "z9hG4bK776sgdkse"
    assert m.cseq(parsed) == m.CSeq(1, "MESSAGE") and m.call_id(parsed) == "asd88asd77a@1.2.3.4"


def test_uri_and_name_addr_helpers() -> None:
    uri = m.parse_uri("sip:4711@127.0.0.1:5070;transport=tcp")
    assert (uri.user, uri.host, uri.port, uri.transport) == ("4711", "127.0.0.1", 5070, "tcp")
    assert str(uri) == "sip:4711@127.0.0.1:5070;transport=tcp"
    na = m.parse_name_addr('"Ragnhild, 87" <sip:r@x>;tag=9')
    assert (na.display, na.uri, na.tag) == ("Ragnhild, 87", "sip:r@x", "9")
    assert m.parse_name_addr(str(na)) == na
    with pytest.raises(ProtocolError):
        m.parse_uri("tel:+4712345678")


# --- property: random and mutated bytes -------------------------------------------------------------


def _mutate(doc: bytes, pos: int, op: int, chunk: bytes) -> bytes:
    pos %= len(doc) + 1
    if op == 0:
        return doc[:pos] + chunk + doc[pos:]
    if op == 1:
        return doc[:pos] + doc[pos + len(chunk) :]
    return doc[:pos] + chunk + doc[pos + len(chunk) :]


MUTATED = st.builds(
    _mutate,
    st.sampled_from([RFC3428_MESSAGE, RFC3428_200, WSINV, BADVERS, *INVALID.values()]),
    st.integers(0, 1000),
    st.integers(0, 2),
    st.binary(min_size=1, max_size=8) | st.sampled_from([b"\r\n", b":", b";", b",", b"<", b'"', b"\\", b" ", b"\x00"]),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=400), MUTATED))
def test_any_bytes_parse_or_raise_sip_parse_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    # what parses must survive its own serializer (the endpoint answers from it)
    again = parse_message(serialize(msg))
    assert type(again) is type(msg) and again.body == msg.body


@settings(max_examples=200, deadline=None)
@given(MUTATED, st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_stream_reader_any_chunking_only_raises_sip_parse_error(data: bytes, cuts: list[int]) -> None:
    reader = StreamReader()
    pos = 0
    try:
        for size in cuts:
            reader.feed(data[pos : pos + size])
            pos += size
            while reader.next_message() is not None:
                pass
    except SipParseError:
        pass
