"""Non-INVITE transactions driven by a fake clock: Timer E's sequence, Timer F, K and J, retransmission
absorption, and the endpoint's answers to what is not a MESSAGE (RFC 3261 17.1.2, 17.2.2, 8.2)."""

from __future__ import annotations

from harness.protocols.sip import (
    ClientTransaction,
    MessageRefused,
    Request,
    RequestReceived,
    Response,
    ResponseReceived,
    ServerTransaction,
    SipEndpoint,
    State,
    Timers,
    TransactionTimedOut,
    Transmit,
    parse_message,
    serialize,
)
from harness.protocols.sip import message as m

MS = 1_000_000
S = 1000 * MS
T0 = 10 * S  # the clock is arbitrary; nothing may assume it starts at zero

REQUEST = parse_message(
    b"MESSAGE sip:scaip@192.0.2.9:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKtxn1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:4711@192.0.2.1:5070>;tag=dev1\r\n"
    b"To: <sip:scaip@192.0.2.9:5060>\r\n"
    b"Call-ID: txn1@192.0.2.1\r\n"
    b"CSeq: 1 MESSAGE\r\n"
    b"Content-Type: application/scaip+xml\r\n"
    b"Content-Length: 0\r\n\r\n"
)
assert isinstance(REQUEST, Request)
PEER = ("192.0.2.9", 5060)


def response(status: int, request: Request = REQUEST) -> Response:
    return m.make_response(request, status, m.REASONS.get(status, "X"), to_tag="rc1")


def run_until(txn: ClientTransaction, end_ns: int) -> list[tuple[int, str]]:
    """Drive the transaction by its own wake-ups until `end_ns`; log (time since T0, what happened)."""
    log: list[tuple[int, str]] = []
    while (wake := txn.wake_at_ns) is not None and wake <= end_ns:
        step = txn.tick(wake)
        for _ in step.transmit:
            log.append((wake - T0, "retransmit"))
        if step.timed_out:
            log.append((wake - T0, "timeout"))
    return log


def test_timer_e_doubles_from_t1_to_t2_and_timer_f_ends_it_over_udp() -> None:
    txn = ClientTransaction(REQUEST, reliable=False)
    first = txn.start(T0)
    assert first.transmit == (serialize(REQUEST),) and first.wake_at_ns == T0 + 500 * MS
    log = run_until(txn, T0 + 40 * S)
    retransmits = [t for t, what in log if what == "retransmit"]
    # RFC 3261 17.1.2.2: 500 ms, 1 s, 2 s, 4 s, then every T2 = 4 s, until Timer F at 64*T1 = 32 s
    assert retransmits == [x * MS for x in (500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500)]
    assert log[-1] == (32 * S, "timeout")
    assert txn.state is State.TERMINATED and txn.wake_at_ns is None


def test_provisional_response_moves_retransmissions_to_t2() -> None:
    txn = ClientTransaction(REQUEST, reliable=False)
    txn.start(T0)
    assert run_until(txn, T0 + 600 * MS) == [(500 * MS, "retransmit")]  # next at 1.5 s
    step = txn.receive(response(100), T0 + 700 * MS)
    assert step.response is not None and step.response.status == 100 and txn.state is State.PROCEEDING
    log = run_until(txn, T0 + 10 * S)
    assert [t for t, _ in log] == [1500 * MS, 5500 * MS, 9500 * MS]  # in Proceeding: every T2


def test_final_response_completes_and_timer_k_absorbs_its_retransmissions() -> None:
    txn = ClientTransaction(REQUEST, reliable=False)
    txn.start(T0)
    step = txn.receive(response(200), T0 + 80 * MS)
    assert step.response is not None and step.response.status == 200
    assert txn.state is State.COMPLETED and step.wake_at_ns == T0 + 80 * MS + 5 * S  # Timer K = T4
    again = txn.receive(response(200), T0 + 90 * MS)
    assert again.response is None and again.transmit == ()  # delivered once only
    assert run_until(txn, T0 + 10 * S) == []
    assert txn.state is State.TERMINATED


def test_no_retransmissions_over_tcp_and_no_timer_k() -> None:
    txn = ClientTransaction(REQUEST, reliable=True)
    step = txn.start(T0)
    assert step.wake_at_ns == T0 + 32 * S  # Timer F only
    assert run_until(txn, T0 + 40 * S) == [(32 * S, "timeout")]
    txn2 = ClientTransaction(REQUEST, reliable=True)
    txn2.start(T0)
    txn2.receive(response(200), T0 + S)
    assert txn2.state is State.TERMINATED and txn2.wake_at_ns is None


def test_shrunk_timers_keep_the_same_shape() -> None:
    txn = ClientTransaction(REQUEST, reliable=False, timers=Timers(t1_ns=10 * MS, t2_ns=40 * MS, t4_ns=50 * MS))
    txn.start(T0)
    log = run_until(txn, T0 + S)
    assert [t for t, what in log if what == "retransmit"] == [x * MS for x in (10, 30, *range(70, 640, 40))]
    assert log[-1] == (640 * MS, "timeout")


def test_server_absorbs_retransmissions_and_repeats_the_final_response() -> None:
    txn = ServerTransaction(REQUEST, reliable=False)
    assert txn.receive_retransmission(T0).transmit == ()  # Trying: the TU has not answered yet
    ok = response(200)
    step = txn.respond(ok, T0 + 5 * MS)
    assert step.transmit == (serialize(ok),) and txn.state is State.COMPLETED
    assert step.wake_at_ns == T0 + 5 * MS + 32 * S  # Timer J = 64*T1
    assert txn.receive_retransmission(T0 + S).transmit == (serialize(ok),)
    txn.tick(T0 + 5 * MS + 32 * S)
    assert txn.state is State.TERMINATED


def test_server_over_tcp_ends_at_once() -> None:
    txn = ServerTransaction(REQUEST, reliable=True)
    txn.respond(response(200), T0)
    assert txn.state is State.TERMINATED and txn.wake_at_ns is None


def test_server_that_never_answers_is_forgotten_after_64_t1() -> None:
    endpoint = SipEndpoint(transport="UDP")
    events = endpoint.receive_datagram(serialize(REQUEST), PEER, T0)
    assert [type(e) for e in events] == [RequestReceived]
    assert endpoint.transactions == (0, 1)
    endpoint.tick(T0 + 32 * S)
    assert endpoint.transactions == (0, 0)


# --- the endpoint ---------------------------------------------------------------------------------


def test_endpoint_delivers_a_message_once_and_answers_its_retransmission() -> None:
    endpoint = SipEndpoint(transport="UDP")
    wire = serialize(REQUEST)
    (received,) = endpoint.receive_datagram(wire, PEER, T0)
    assert isinstance(received, RequestReceived) and received.arrived_ns == T0 and received.peer == PEER
    assert endpoint.receive_datagram(wire, PEER, T0 + 500 * MS) == []  # absorbed
    ok = endpoint.response(received.request, 200)
    (sent,) = endpoint.respond(received.request, ok, T0 + 600 * MS)
    assert isinstance(sent, Transmit) and sent.peer == PEER
    assert endpoint.receive_datagram(wire, PEER, T0 + S) == [Transmit(sent.data, PEER)]


def test_endpoint_client_side_matches_by_branch_and_method() -> None:
    endpoint = SipEndpoint(transport="UDP")
    key, (first,) = endpoint.send_request(REQUEST, PEER, T0)
    assert isinstance(first, Transmit) and first.data == serialize(REQUEST)
    other = parse_message(serialize(response(200)).replace(b"z9hG4bKtxn1", b"z9hG4bKother"))
    assert endpoint.receive_datagram(serialize(other), PEER, T0 + MS) == []  # no such transaction
    (got,) = endpoint.receive_datagram(serialize(response(200)), PEER, T0 + 2 * MS)
    assert isinstance(got, ResponseReceived) and got.key == key and got.response.status == 200


def test_endpoint_reports_timeout() -> None:
    endpoint = SipEndpoint(transport="TCP")
    key, _ = endpoint.send_request(REQUEST, PEER, T0)
    assert endpoint.wake_at_ns == T0 + 32 * S
    assert endpoint.tick(T0 + 32 * S) == [TransactionTimedOut(key, REQUEST)]
    assert endpoint.transactions == (0, 0)


def _request(method: str, **replace: str) -> bytes:
    raw = serialize(REQUEST).replace(b"MESSAGE", method.encode())
    for old, new in replace.items():
        raw = raw.replace(old.encode(), new.encode())
    return raw


def _answers(events: list[object]) -> list[int]:
    out = []
    for e in events:
        if isinstance(e, Transmit):
            msg = parse_message(e.data)
            assert isinstance(msg, Response)
            out.append(msg.status)
    return out


def test_endpoint_answers_options_and_refuses_other_methods() -> None:
    endpoint = SipEndpoint()
    ok = endpoint.receive_datagram(_request("OPTIONS"), PEER, T0)
    assert _answers(ok) == [200]
    allow = parse_message(ok[0].data).headers.get("Allow")  # type: ignore[union-attr]
    assert allow is not None and "MESSAGE" in allow
    assert _answers(endpoint.receive_datagram(_request("INVITE", txn1="txn2"), PEER, T0)) == [405]
    assert endpoint.receive_datagram(_request("ACK", txn1="txn3"), PEER, T0) == []


def test_endpoint_refuses_too_many_hops() -> None:
    endpoint = SipEndpoint()
    raw = serialize(REQUEST).replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert _answers(endpoint.receive_datagram(raw, PEER, T0)) == [483]


def test_endpoint_answers_malformed_requests_it_can_answer_and_drops_the_rest() -> None:
    endpoint = SipEndpoint()
    bad_cseq = serialize(REQUEST).replace(b"CSeq: 1 MESSAGE", b"CSeq: 1 INVITE")
    events = endpoint.receive_datagram(bad_cseq, PEER, T0)
    assert _answers(events) == [400]
    assert isinstance(events[-1], MessageRefused) and events[-1].answered and "CSeq" in events[-1].reason
    badvers = serialize(REQUEST).replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1)
    assert _answers(endpoint.receive_datagram(badvers, PEER, T0)) == [505]
    (refused,) = endpoint.receive_datagram(b"\x16\x03\x01 not SIP at all\r\n\r\n", PEER, T0)
    assert isinstance(refused, MessageRefused) and not refused.answered
    assert endpoint.transactions == (0, 0)
