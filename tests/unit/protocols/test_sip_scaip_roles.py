"""SCAIP over SIP without sockets: a device and a response centre wired through an in-memory network that
can lose datagrams, and the centre fed random and mutated SIP and XML (it must answer, never raise, and
keep answering valid requests afterwards)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.protocols import scaip
from harness.protocols.scaip import MessageType, Mrq, StatusNumber
from harness.protocols.scaip_sip import (
    Credentials,
    Local,
    MrqAnswered,
    MrqArrived,
    MrqFailed,
    MrsArrived,
    MrsDelivered,
    Output,
    Refused,
    ScaipCaller,
    ScaipResponder,
)
from harness.protocols.sip import Response, Transmit, parse_message, serialize
from harness.protocols.sip import message as m

MS = 1_000_000
DEV = ("127.0.0.1", 5070)
RC = ("127.0.0.1", 5080)
RC_URI = "sip:scaip@127.0.0.1:5080"


class Net:
    """Delivers Transmit outputs between the two cores; `drop(n)` loses the next n datagrams."""

    def __init__(
        self, dev: ScaipCaller, rc: ScaipResponder, reply: Callable[[MrqArrived], scaip.Mrs | None] | None = None
    ) -> None:
        self.dev, self.rc, self.now = dev, rc, 1_000 * MS
        self.reply = reply or (lambda a: scaip.reply_for(a.mrq))
        self.seen: list[Output] = []
        self.to_drop = 0
        self.wire: list[bytes] = []

    def drop(self, n: int) -> None:
        self.to_drop = n

    def run(self, outputs: list[Output]) -> None:
        queue = list(outputs)
        while queue:
            out = queue.pop(0)
            if not isinstance(out, Transmit):
                self.seen.append(out)
                if isinstance(out, MrqArrived):
                    mrs = self.reply(out)
                    if mrs is not None:
                        queue += self.rc.reply(out, mrs, self.now)
                continue
            self.wire.append(out.data)
            if self.to_drop:
                self.to_drop -= 1
                continue
            if out.peer == RC:
                queue += self.rc.receive_datagram(out.data, DEV, self.now)
            else:
                queue += self.dev.receive_datagram(out.data, RC, self.now)

    def advance(self, ns: int) -> None:
        """Move the clock, firing each core's timers at the times they asked for."""
        end = self.now + ns
        while True:
            wakes = [w for w in (self.dev.wake_at_ns, self.rc.wake_at_ns) if w is not None and w <= end]
            if not wakes:
                break
            self.now = min(wakes)
            self.run(self.dev.tick(self.now) + self.rc.tick(self.now))
        self.now = end

    def of(self, kind: type) -> list[object]:
        return [o for o in self.seen if isinstance(o, kind)]


def pair(**rc_kwargs: object) -> tuple[ScaipCaller, ScaipResponder]:
    dev = ScaipCaller(Local("127.0.0.1", 5070, "UDP", "4711"), credentials=rc_kwargs.pop("credentials", None))  # type: ignore[arg-type]
    rc = ScaipResponder(Local("127.0.0.1", 5080, "UDP", "scaip"), **rc_kwargs)  # type: ignore[arg-type]
    return dev, rc


MRQ = Mrq(ref="ref1", cid="4711", dty="0003", stc="0010")


def test_exchange_mrq_200_then_mrs_message() -> None:
    dev, rc = pair()
    net = Net(dev, rc)
    net.run(dev.send_mrq(MRQ, RC_URI, RC, net.now))
    (arrived,) = net.of(MrqArrived)
    assert arrived.mrq == MRQ and arrived.peer == DEV  # type: ignore[attr-defined]
    (answered,) = net.of(MrqAnswered)
    assert answered.ref == "ref1" and answered.status == 200  # type: ignore[attr-defined]
    (mrs,) = net.of(MrsArrived)
    assert mrs.mrs.ref == "ref1" and mrs.mrs.snu is StatusNumber.OK and mrs.carrier == "MESSAGE"  # type: ignore[attr-defined]
    assert net.of(MrsDelivered) == [MrsDelivered("ref1", 200)]
    # the <mrs> MESSAGE went to the device's From URI, as a new request of the centre's own
    mrs_request = parse_message(net.wire[2])
    assert mrs_request.uri == "sip:4711@127.0.0.1:5070"  # type: ignore[union-attr]
    assert m.content_type(mrs_request) == scaip.CONTENT_TYPE


def test_mrs_in_the_200_body() -> None:
    dev, rc = pair(mrs_in_response=True)
    net = Net(dev, rc, reply=lambda a: scaip.reply_for(a.mrq, StatusNumber.HOLD))
    net.run(dev.send_mrq(MRQ, RC_URI, RC, net.now))
    (mrs,) = net.of(MrsArrived)
    assert mrs.carrier == "200" and mrs.mrs.snu is StatusNumber.HOLD  # type: ignore[attr-defined]
    assert len(net.wire) == 2  # MESSAGE and 200 OK, nothing else


def test_lost_datagrams_are_retransmitted_and_delivered_once() -> None:
    dev, rc = pair()
    net = Net(dev, rc)
    net.drop(2)  # the MESSAGE and its first retransmission
    net.run(dev.send_mrq(MRQ, RC_URI, RC, net.now))
    assert net.of(MrqArrived) == []
    net.advance(1600 * MS)  # retransmissions at +500 ms and +1.5 s
    assert len(net.of(MrqArrived)) == 1 and len(net.of(MrqAnswered)) == 1
    net.advance(40_000 * MS)
    assert len(net.of(MrqArrived)) == 1 and len(net.of(MrsArrived)) == 1
    assert dev.sip.transactions == (0, 0) and rc.sip.transactions == (0, 0)


def test_lost_200_makes_the_centre_repeat_it_without_a_second_arrival() -> None:
    dev, rc = pair()
    net = Net(dev, rc, reply=lambda a: None)
    out = dev.send_mrq(MRQ, RC_URI, RC, net.now)
    net.run(out)  # delivers the MESSAGE; the 200 comes back
    assert len(net.of(MrqAnswered)) == 1
    dev2, rc2 = pair()
    net2 = Net(dev2, rc2, reply=lambda a: None)
    first = dev2.send_mrq(MRQ, RC_URI, RC, net2.now)
    net2.run(first)
    assert len(net2.of(MrqArrived)) == 1
    retransmit = net2.wire[0]
    again = rc2.receive_datagram(retransmit, DEV, net2.now + 500 * MS)
    assert [type(o) for o in again] == [Transmit]  # the stored 200, not a new arrival
    assert parse_message(again[0].data).status == 200  # type: ignore[union-attr, attr-defined]


def test_no_answer_fails_after_timer_f() -> None:
    dev, rc = pair()
    net = Net(dev, rc)
    net.drop(1000)
    net.run(dev.send_mrq(MRQ, RC_URI, RC, net.now))
    net.advance(31_999 * MS)
    assert net.of(MrqFailed) == []
    net.advance(2 * MS)
    (failed,) = net.of(MrqFailed)
    assert failed.status is None and "Timer F" in failed.reason  # type: ignore[attr-defined]
    assert len(net.wire) == 11  # the MESSAGE and 10 retransmissions


def test_digest_challenge_then_success() -> None:
    nonces = (f"n{i}" for i in itertools.count())
    dev, rc = pair(auth=("lab", {"4711": "pw"}.get, lambda: next(nonces)), credentials=Credentials("4711", "pw"))
    net = Net(dev, rc)
    net.run(dev.send_mrq(MRQ, RC_URI, RC, net.now))
    assert parse_message(net.wire[1]).status == 401  # type: ignore[union-attr]
    (answered,) = net.of(MrqAnswered)
    assert answered.authenticated  # type: ignore[attr-defined]
    assert len(net.of(MrqArrived)) == 1


def test_wrong_password_fails_with_401() -> None:
    nonces = (f"n{i}" for i in itertools.count())
    dev, rc = pair(auth=("lab", {"4711": "pw"}.get, lambda: next(nonces)), credentials=Credentials("4711", "wrong"))
    net = Net(dev, rc)
    net.run(dev.send_mrq(MRQ, RC_URI, RC, net.now))
    (failed,) = net.of(MrqFailed)
    assert failed.status == 401 and net.of(MrqArrived) == []  # type: ignore[attr-defined]


def _message(body: bytes, content_type: str = scaip.CONTENT_TYPE, branch: str = "z9hG4bKraw1") -> bytes:
    return (
        f"MESSAGE {RC_URI} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\nMax-Forwards: 70\r\n"
        f"From: <sip:4711@127.0.0.1:5070>;tag=t1\r\nTo: <{RC_URI}>\r\nCall-ID: {branch}@127.0.0.1\r\n"
        f"CSeq: 1 MESSAGE\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _statuses(outputs: list[Output]) -> list[int]:
    out = []
    for o in outputs:
        if isinstance(o, Transmit):
            msg = parse_message(o.data)
            if isinstance(msg, Response):
                out.append(msg.status)
    return out


def _mrs_sent(outputs: list[Output]) -> list[scaip.Mrs]:
    out = []
    for o in outputs:
        if isinstance(o, Transmit):
            msg = parse_message(o.data)
            if not isinstance(msg, Response):
                out.append(scaip.decode_mrs(msg.body))
    return out


def test_centre_answers_bad_bodies_as_scaip_says() -> None:
    _, rc = pair()
    cases = [
        (b"<mrq><ref>r1</ref><dty>3</dty></mrq>", 200, StatusNumber.MANDATORY_TAG_MISSING),
        (b"<mrq><ref>r2</ref><cid>1</cid><dty>3</dty><mty>ZZ</mty></mrq>", 200, StatusNumber.WRONG_DATA_CONTENT),
        (b"<mrq><ref>r3</ref><cid>x</cid><dty>3</dty></mrq>", 200, StatusNumber.INVALID_FORMAT),
        (b"<mrq><cid>1</cid></mrq>", 400, None),
        (b"<mrq", 400, None),
        (b'<!DOCTYPE m [<!ENTITY a "b">]><mrq><ref>r4</ref></mrq>', 400, None),
        (b"<mrs><ref>r5</ref><snu>0</snu></mrs>", 200, StatusNumber.INVALID_FORMAT),
    ]
    for i, (body, status, snu) in enumerate(cases):
        out = rc.receive_datagram(_message(body, branch=f"z9hG4bKcase{i}"), DEV, 1)
        assert _statuses(out) == [status], body
        (refused,) = [o for o in out if isinstance(o, Refused)]
        assert refused.status == status and refused.snu is snu, body
        sent = _mrs_sent(out)
        assert [s.snu for s in sent] == ([snu] if snu is not None else []), body
    wrong_type = rc.receive_datagram(_message(b"hello", "text/plain", "z9hG4bKtype"), DEV, 1)
    assert _statuses(wrong_type) == [415]
    big = rc.receive_datagram(
        _message(b"<mrq>" + b" " * scaip.MAX_DOCUMENT_BYTES + b"</mrq>", branch="z9hG4bKbig"), DEV, 1
    )
    assert _statuses(big) == [413]


# --- property: the centre survives anything and keeps answering ----------------------------------------

VALID = _message(Mrq(ref="ok1", cid="4711", dty="0003", stc="0010").encode(), branch="z9hG4bKvalid")


def _mutate(doc: bytes, pos: int, op: int, chunk: bytes) -> bytes:
    pos %= len(doc) + 1
    if op == 0:
        return doc[:pos] + chunk + doc[pos:]
    if op == 1:
        return doc[:pos] + doc[pos + len(chunk) :]
    return doc[:pos] + chunk + doc[pos + len(chunk) :]


XML_BODIES = st.sampled_from(
    [
        b"<mrq/>",
        b'<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><mrq><ref>x</ref><stt>&b;</stt></mrq>',
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><mrq><ref>x</ref><stt>&e;</stt></mrq>',
        Mrq(ref="m1", cid="1", dty="3", mty=MessageType.HEARTBEAT).encode(),
        scaip.Mrs(ref="m2").encode(),
    ]
)
RANDOM_INPUT = st.one_of(
    st.binary(max_size=300),
    st.builds(_mutate, st.just(VALID), st.integers(0, 600), st.integers(0, 2), st.binary(min_size=1, max_size=6)),
    st.builds(
        lambda body, i: _message(_mutate(body, i, 2, b"<"), branch=f"z9hG4bKx{i}"), XML_BODIES, st.integers(0, 200)
    ),
    st.builds(lambda body: _message(body, branch="z9hG4bKxml"), XML_BODIES | st.binary(max_size=200)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RANDOM_INPUT, min_size=1, max_size=5))
def test_centre_never_raises_and_keeps_answering_valid_requests(junk: list[bytes]) -> None:
    _, rc = pair()
    now = 1_000 * MS
    for i, data in enumerate(junk):
        outputs = rc.receive_datagram(data, ("127.0.0.1", 6000 + i), now)
        for o in outputs:
            assert isinstance(o, Transmit | Refused | MrqArrived)
            if isinstance(o, Transmit):
                parse_message(o.data)  # whatever the centre sends is valid SIP
        now += MS
    outputs = rc.receive_datagram(VALID.replace(b"z9hG4bKvalid", b"z9hG4bKfinal"), DEV, now)
    assert _statuses(outputs) == [200]
    assert [o.mrq.ref for o in outputs if isinstance(o, MrqArrived)] == ["ok1"]


def test_202_accepted_counts_as_answered_and_an_early_mrs_is_kept() -> None:
    """A centre may answer 202 (RFC 3428 allows it) and its <mrs> MESSAGE may overtake the response."""
    dev, _ = pair()
    (sent,) = dev.send_mrq(MRQ, RC_URI, RC, 0)
    request = parse_message(sent.data)  # type: ignore[union-attr]
    assert isinstance(request, m.Request)
    mrs_message = m.make_request(
        "MESSAGE", "sip:4711@127.0.0.1:5070", via=m.parse_via("SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKrc1")[0],
        from_addr=m.parse_name_addr(f"<{RC_URI}>;tag=rc"), to_addr=m.parse_name_addr("<sip:4711@127.0.0.1:5070>"),
        call_id_="rc1@127.0.0.1", cseq_=1, body=scaip.reply_for(MRQ).encode(), content_type_=scaip.CONTENT_TYPE,
    )  # fmt: skip
    first = dev.receive_datagram(serialize(mrs_message), RC, 5 * MS)
    assert _statuses(first) == [200]
    (early,) = [o for o in first if isinstance(o, MrsArrived)]
    assert early.mrs.ref == MRQ.ref and early.carrier == "MESSAGE"
    accepted = m.make_response(request, 202, "Accepted", to_tag="rc")
    (answered,) = dev.receive_datagram(serialize(accepted), RC, 6 * MS)
    assert answered == MrqAnswered(MRQ.ref, 202, 6 * MS)


def test_device_refuses_a_foreign_or_broken_mrs_message() -> None:
    dev, _ = pair()
    broken = _message(b"<mrs><ref>x</ref><snu>9</snu></mrs>").replace(RC_URI.encode(), b"sip:4711@127.0.0.1:5070", 1)
    out = dev.receive_datagram(broken, RC, 1)
    assert _statuses(out) == [400] and [type(o) for o in out if not isinstance(o, Transmit)] == [Refused]
