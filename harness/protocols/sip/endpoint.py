"""A sans-I/O SIP endpoint (the h11 `Connection` of this package): bytes and time in, events out.

It owns the transactions of one transport (UDP, TCP or TLS) and nothing else: the asyncio layer feeds
it datagrams or stream frames with the arrival time and the peer address, sends the `Transmit` events
it returns, and calls `tick` at `wake_at_ns`. Requests other than MESSAGE are answered here (OPTIONS
200, others 405) so the user sees only MESSAGE; malformed input becomes `MessageRefused` (with a 400 or
505 when the request could be read far enough to answer it), never an exception.

Timers are kept in a heap, so the cost of a message does not grow with the transactions still alive:
over UDP a completed transaction lingers for Timer J (32 s) or Timer K (5 s), thousands of them under
load, and a scan of them all on every message cost milliseconds per alarm.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from typing import Any

from harness.protocols.base import ProtocolError
from harness.protocols.sip.events import (
    Event,
    Message,
    MessageRefused,
    Peer,
    Request,
    RequestReceived,
    Response,
    ResponseReceived,
    TransactionTimedOut,
    Transmit,
)
from harness.protocols.sip.message import REASONS, SipParseError, make_response, new_tag, parse_message, serialize
from harness.protocols.sip.transactions import (
    ClientTransaction,
    ServerTransaction,
    State,
    Timers,
    client_key,
    server_key,
)

ALLOWED_METHODS = ("MESSAGE", "OPTIONS")
MAX_TRANSACTIONS = 10_000
"""More live transactions than this means a flood: new requests are answered 503 instead of remembered."""


class SipEndpoint:
    """Transactions of one SIP transport; `reliable` (TCP/TLS) turns retransmissions off."""

    def __init__(self, *, transport: str = "UDP", timers: Timers | None = None, user_agent: str = "vtlab") -> None:
        self.transport = transport.upper()
        self.reliable = self.transport != "UDP"
        self.timers = timers or Timers()
        self.user_agent = user_agent
        self._clients: dict[str, tuple[ClientTransaction, Peer]] = {}
        self._servers: dict[str, tuple[ServerTransaction, Peer]] = {}
        self._wakes: list[tuple[int, int, bool, str]] = []
        """Heap of (wake_at_ns, order, is_client, key); an entry is live while its transaction still wakes
        at that time (entries left behind by a transaction that moved on are dropped when they surface)."""
        self._order = itertools.count()

    # --- input ---------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, peer: Peer, now_ns: int) -> list[Event]:
        """One UDP datagram (= one message)."""
        try:
            msg = parse_message(data, datagram=True)
        except SipParseError as exc:
            return self._refuse(data, exc, peer, now_ns)
        return self.receive_message(msg, peer, now_ns, raw=data)

    def refuse_frame(self, raw: bytes, error: SipParseError, peer: Peer, now_ns: int) -> list[Event]:
        """A stream frame the `StreamReader` could not cut or parse (the caller then closes the stream)."""
        return self._refuse(raw, error, peer, now_ns)

    def receive_message(self, msg: Message, peer: Peer, now_ns: int, *, raw: bytes = b"") -> list[Event]:
        """A parsed message (from a datagram, or cut from a stream)."""
        try:
            if isinstance(msg, Response):
                return self._on_response(msg, peer, now_ns)
            return self._on_request(msg, peer, now_ns)
        except ProtocolError as exc:
            return [MessageRefused(raw, exc.reason, peer, False)]

    def _on_response(self, response: Response, peer: Peer, now_ns: int) -> list[Event]:
        key = client_key(response)
        entry = self._clients.get(key)
        if entry is None:
            return []  # a stray or late retransmitted response: RFC 3261 18.1.2 says discard
        txn, txn_peer = entry
        step = txn.receive(response, now_ns)
        events: list[Event] = [Transmit(data, txn_peer) for data in step.transmit]
        if step.response is not None:
            events.append(ResponseReceived(key, step.response, peer, now_ns))
        self._settle(True, key, txn)
        return events

    def _on_request(self, request: Request, peer: Peer, now_ns: int) -> list[Event]:
        if request.method == "ACK":
            return []  # no INVITE transactions here; an ACK answers nothing of ours
        key = server_key(request)
        entry = self._servers.get(key)
        if entry is not None:
            txn, txn_peer = entry
            step = txn.receive_retransmission(now_ns)
            return [Transmit(data, txn_peer) for data in step.transmit]
        if len(self._servers) >= MAX_TRANSACTIONS:
            return self._stateless(request, 503, peer, extra=(("Retry-After", "5"),))
        txn = ServerTransaction(request, reliable=self.reliable, timers=self.timers, now_ns=now_ns)
        self._servers[key] = (txn, peer)
        self._settle(False, key, txn)
        if request.method == "OPTIONS":
            return self.respond(
                request, self.response(request, 200, extra=(("Allow", ", ".join(ALLOWED_METHODS)),)), now_ns
            )
        if request.method not in ALLOWED_METHODS:
            return self.respond(
                request, self.response(request, 405, extra=(("Allow", ", ".join(ALLOWED_METHODS)),)), now_ns
            )
        mf = request.headers.get("Max-Forwards")
        if mf is not None and int(mf) == 0:
            return self.respond(request, self.response(request, 483), now_ns)
        return [RequestReceived(request, peer, now_ns)]

    def _refuse(self, raw: bytes, error: SipParseError, peer: Peer, now_ns: int) -> list[Event]:
        events: list[Event] = []
        partial = error.partial
        if partial is not None and partial.method != "ACK":
            try:
                response = self.response(partial, error.status, reason=f"{REASONS.get(error.status, 'Bad Request')}")
                wire = serialize(response)
                parse_message(wire)  # the request's broken headers are copied: answer only if that is still SIP
                events.append(Transmit(wire, peer))
            except (ProtocolError, ValueError):
                pass
        events.append(MessageRefused(raw[:4096], error.reason, peer, bool(events)))
        return events

    def _stateless(
        self, request: Request, status: int, peer: Peer, extra: Iterable[tuple[str, str]] = ()
    ) -> list[Event]:
        return [Transmit(serialize(self.response(request, status, extra=extra)), peer)]

    # --- output --------------------------------------------------------------------------------

    def response(
        self,
        request: Request,
        status: int,
        *,
        reason: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """A response to `request` with a To tag of ours and a Server header."""
        return make_response(
            request,
            status,
            reason or REASONS.get(status, "Unknown"),
            to_tag=new_tag(),
            body=body,
            content_type_=content_type,
            extra=(*extra, ("Server", self.user_agent)),
        )

    def respond(self, request: Request, response: Response, now_ns: int) -> list[Event]:
        """Answer a request from `RequestReceived` through its server transaction."""
        entry = self._servers.get(server_key(request))
        if entry is None:
            return []  # the transaction has ended (Timer J): too late to answer
        txn, peer = entry
        step = txn.respond(response, now_ns)
        self._settle(False, txn.key, txn)
        return [Transmit(data, peer) for data in step.transmit]

    def send_request(self, request: Request, peer: Peer, now_ns: int) -> tuple[str, list[Event]]:
        """Start a client transaction for `request` towards `peer`; returns its key and what to send."""
        txn = ClientTransaction(request, reliable=self.reliable, timers=self.timers)
        if txn.key in self._clients:
            raise ValueError(f"a transaction with branch/method {txn.key} is already running")
        self._clients[txn.key] = (txn, peer)
        step = txn.start(now_ns)
        self._settle(True, txn.key, txn)
        return txn.key, [Transmit(data, peer) for data in step.transmit]

    def transport_failed(self, key: str) -> list[Event]:
        """The transport could not deliver the request of client transaction `key`."""
        entry = self._clients.pop(key, None)
        if entry is None:
            return []
        entry[0].transport_error()
        return [TransactionTimedOut(key, entry[0].request, transport_error=True)]

    def peer_failed(self, peer: Peer) -> list[Event]:
        """The transport cannot reach `peer` (connection refused or lost): its client transactions end."""
        events: list[Event] = []
        for key in [k for k, (_, p) in self._clients.items() if p == peer]:
            events.extend(self.transport_failed(key))
        return events

    def tick(self, now_ns: int) -> list[Event]:
        """Fire due timers: retransmissions (Timer E), timeouts (Timer F), ends (Timers K, J)."""
        events: list[Event] = []
        while self._wakes and self._wakes[0][0] <= now_ns:
            at, _, is_client, key = heapq.heappop(self._wakes)
            if is_client:
                centry = self._clients.get(key)
                if centry is None or centry[0].wake_at_ns != at:
                    continue  # the transaction ended or moved its timer since this entry was pushed
                ctxn, peer = centry
                step = ctxn.tick(now_ns)
                events.extend(Transmit(data, peer) for data in step.transmit)
                if step.timed_out:
                    events.append(TransactionTimedOut(key, ctxn.request))
                self._settle(True, key, ctxn)
            else:
                sentry = self._servers.get(key)
                if sentry is None or sentry[0].wake_at_ns != at:
                    continue
                sentry[0].tick(now_ns)
                self._settle(False, key, sentry[0])
        return events

    @property
    def wake_at_ns(self) -> int | None:
        while self._wakes:
            at, _, is_client, key = self._wakes[0]
            entry = (self._clients if is_client else self._servers).get(key)
            if entry is not None and entry[0].wake_at_ns == at:
                return at
            heapq.heappop(self._wakes)
        return None

    @property
    def transactions(self) -> tuple[int, int]:
        """(client, server) transactions alive."""
        return len(self._clients), len(self._servers)

    def _settle(self, is_client: bool, key: str, txn: ClientTransaction | ServerTransaction) -> None:
        """After a call into transaction `key`: forget it once terminated, else queue its next wake-up."""
        table: dict[str, Any] = self._clients if is_client else self._servers
        if txn.state is State.TERMINATED:
            if (entry := table.get(key)) is not None and entry[0] is txn:
                del table[key]
            return
        at = txn.wake_at_ns
        if at is not None:
            heapq.heappush(self._wakes, (at, next(self._order), is_client, key))
        if len(self._wakes) > 64 + 4 * (len(self._clients) + len(self._servers)):
            self._compact()

    def _compact(self) -> None:
        """Rebuild the heap from the live transactions (bounds the entries left behind)."""
        wakes: list[tuple[int, int, bool, str]] = []
        for is_client, table in ((True, self._clients), (False, self._servers)):
            for key, (txn, _) in table.items():
                if (at := txn.wake_at_ns) is not None:
                    wakes.append((at, next(self._order), is_client, key))
        heapq.heapify(wakes)
        self._wakes = wakes
