"""The SIP endpoint's timers with many transactions alive: each ends at its own Timer J/K/F, wake_at_ns is the
earliest of them, and the cost of one message does not grow with the transactions still lingering (over UDP
a completed transaction stays 32 s for Timer J, so a lab under load holds thousands of them)."""

from __future__ import annotations

import time

from harness.protocols.sip import (
    Request,
    RequestReceived,
    ResponseReceived,
    SipEndpoint,
    Timers,
    Transmit,
    parse_message,
    serialize,
)
from harness.protocols.sip import message as m

MS = 1_000_000
S = 1000 * MS
T0 = 10 * S
PEER = ("192.0.2.1", 5070)
J = Timers().timeout_ns  # 64*T1 = 32 s
K = Timers().t4_ns  # 5 s


def request(n: int) -> bytes:
    return (
        f"MESSAGE sip:scaip@192.0.2.9:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK{n:08d}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:4711@192.0.2.1:5070>;tag=dev{n}\r\n"
        f"To: <sip:scaip@192.0.2.9:5060>\r\n"
        f"Call-ID: c{n}@192.0.2.1\r\n"
        f"CSeq: {n + 1} MESSAGE\r\n"
        f"Content-Type: application/scaip+xml\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def exchange(endpoint: SipEndpoint, n: int, now_ns: int) -> None:
    """One MESSAGE in and its 200 OK out, as the lab's SCAIP receiver does per alarm."""
    (got,) = endpoint.receive_datagram(request(n), PEER, now_ns)
    assert isinstance(got, RequestReceived)
    (sent,) = endpoint.respond(got.request, endpoint.response(got.request, 200), now_ns)
    assert isinstance(sent, Transmit)
    assert endpoint.wake_at_ns is not None


def test_each_server_transaction_ends_at_its_own_timer_j() -> None:
    endpoint = SipEndpoint(transport="UDP")
    for n in range(50):
        exchange(endpoint, n, T0 + n * MS)
    assert endpoint.transactions == (0, 50)
    assert endpoint.wake_at_ns == T0 + J
    endpoint.tick(T0 + J + 9 * MS)  # the first ten are due
    assert endpoint.transactions == (0, 40)
    assert endpoint.wake_at_ns == T0 + J + 10 * MS
    endpoint.tick(T0 + J + 48 * MS)
    assert endpoint.transactions == (0, 1)
    endpoint.tick(T0 + J + 49 * MS)
    assert endpoint.transactions == (0, 0) and endpoint.wake_at_ns is None


def test_a_request_retransmitted_after_timer_j_starts_a_new_transaction_with_its_own_timer() -> None:
    endpoint = SipEndpoint(transport="UDP")
    exchange(endpoint, 1, T0)
    endpoint.tick(T0 + J)
    assert endpoint.transactions == (0, 0)
    exchange(endpoint, 1, T0 + J + S)  # same branch: a new transaction, delivered again (RFC 3261 17.2.3)
    assert endpoint.wake_at_ns == T0 + 2 * J + S
    endpoint.tick(T0 + 2 * J + S)
    assert endpoint.transactions == (0, 0)


def test_client_transactions_retransmit_and_end_independently() -> None:
    endpoint = SipEndpoint(transport="UDP")
    keys = []
    for n in range(3):
        req = parse_message(request(n))
        assert isinstance(req, Request)
        key, _ = endpoint.send_request(req, PEER, T0 + n * 100 * MS)
        keys.append((key, req))
    # the middle one is answered at once; the others go on retransmitting (Timer E)
    ok = m.make_response(keys[1][1], 200, "OK", to_tag="rc")
    (got,) = endpoint.receive_datagram(serialize(ok), PEER, T0 + 150 * MS)
    assert isinstance(got, ResponseReceived) and got.key == keys[1][0]
    sent = endpoint.tick(T0 + 500 * MS)  # Timer E of the first only
    assert [e.data for e in sent if isinstance(e, Transmit)] == [serialize(keys[0][1])]
    sent = endpoint.tick(T0 + 700 * MS)  # now the third's (sent at 200 ms)
    assert [e.data for e in sent if isinstance(e, Transmit)] == [serialize(keys[2][1])]
    assert endpoint.transactions == (3, 0)
    endpoint.tick(T0 + 150 * MS + K)  # Timer K ends the answered one; the others still run
    assert endpoint.transactions == (2, 0)


def _per_message_ns(endpoint: SipEndpoint, first: int, now_ns: int, count: int = 200) -> float:
    best = float("inf")
    for batch in range(5):
        start = time.perf_counter_ns()
        for i in range(count):
            exchange(endpoint, first + batch * count + i, now_ns)
        best = min(best, (time.perf_counter_ns() - start) / count)
    return best


def test_the_cost_of_a_message_does_not_grow_with_transactions_lingering_for_timer_j() -> None:
    quiet = SipEndpoint(transport="UDP")
    alone = _per_message_ns(quiet, 0, T0)
    busy = SipEndpoint(transport="UDP")
    for n in range(8000):  # 8000 alarms answered in the last 32 s: all still in Completed
        exchange(busy, 100_000 + n, T0 + n * MS)
    crowded = _per_message_ns(busy, 0, T0 + 8 * S)
    # a scan of every transaction per message made this ratio 10-50 here; a heap keeps it near 1
    assert crowded < 3 * alone, (crowded, alone)
