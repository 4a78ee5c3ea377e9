"""Non-INVITE transactions (RFC 3261 17.1.2 and 17.2.2) with timers as data.

A transaction never reads a clock: every call is handed `now_ns` and returns a `Step` saying what to
send, what to deliver, and `wake_at_ns`, the time at which `tick` must be called next (None: no timer
runs). This is what lets the asyncio endpoint, a gevent load user and the unit tests drive the same
retransmission logic, and lets a test check Timer E's 500 ms, 1 s, 2 s, 4 s, 4 s ... sequence exactly.

Over UDP the client retransmits (Timer E from T1 doubling up to T2) until a response or Timer F
(64*T1); over TCP/TLS it does not retransmit at all. The server absorbs retransmitted requests and
resends its last response, and keeps the final response for Timer J (64*T1, zero on streams).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from harness.protocols.sip import _abnf
from harness.protocols.sip.events import Request, Response
from harness.protocols.sip.message import cseq, serialize, top_via

MS = 1_000_000


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 timer values (section 17.1.2.2, table 4); tests shrink them, protocols never need to."""

    t1_ns: int = 500 * MS
    t2_ns: int = 4000 * MS
    t4_ns: int = 5000 * MS

    @property
    def timeout_ns(self) -> int:
        """Timer F / Timer J: 64*T1."""
        return 64 * self.t1_ns


class State(Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class Step:
    """What one call into a transaction produced.

    `transmit`: wire bytes to send now (to the transaction's peer); `response`: a response for the
    transaction user (client side); `timed_out`: Timer F fired; `wake_at_ns`: call `tick` then.
    """

    transmit: tuple[bytes, ...] = ()
    response: Response | None = None
    timed_out: bool = False
    wake_at_ns: int | None = None


def client_key(msg: Request | Response) -> str:
    """RFC 3261 17.1.3: a response matches the client transaction by top Via branch and CSeq method."""
    return f"{top_via(msg).branch}|{cseq(msg).method}"


def server_key(request: Request) -> str:
    """RFC 3261 17.2.3: branch + sent-by + method; pre-3261 peers (no magic cookie) by dialog identifiers."""
    via = top_via(request)
    method = request.method
    branch = via.branch or ""
    if branch.startswith(_abnf.MAGIC_COOKIE):
        return f"{branch}|{via.sent_by.lower()}|{method}"
    cs = cseq(request)
    return "|".join(
        (
            branch,
            via.sent_by.lower(),
            method,
            request.headers.get("Call-ID") or "",
            str(cs.seq),
            request.headers.get("From") or "",
            request.headers.get("To") or "",
        )
    )


class ClientTransaction:
    """A non-INVITE client transaction: send, retransmit (UDP), match the response, time out."""

    def __init__(self, request: Request, *, reliable: bool, timers: Timers | None = None) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers or Timers()
        self.key = client_key(request)
        self.state = State.TRYING
        self.retransmissions = 0
        self._wire = serialize(request)
        self._e_interval = self.timers.t1_ns
        self._e_at: int | None = None
        self._f_at: int | None = None
        self._k_at: int | None = None
        self.started_ns: int | None = None

    @property
    def wake_at_ns(self) -> int | None:
        times = [t for t in (self._e_at, self._f_at, self._k_at) if t is not None]
        return min(times) if times else None

    def _step(
        self, transmit: tuple[bytes, ...] = (), response: Response | None = None, timed_out: bool = False
    ) -> Step:
        return Step(transmit, response, timed_out, self.wake_at_ns)

    def start(self, now_ns: int) -> Step:
        """Send the request: Timer F always, Timer E only over an unreliable transport."""
        if self.started_ns is not None:
            raise RuntimeError("transaction already started")
        self.started_ns = now_ns
        self._f_at = now_ns + self.timers.timeout_ns
        if not self.reliable:
            self._e_at = now_ns + self._e_interval
        return self._step((self._wire,))

    def receive(self, response: Response, now_ns: int) -> Step:
        """A response whose key matched: provisional moves to Proceeding, final completes."""
        if self.state in (State.COMPLETED, State.TERMINATED):
            return self._step()  # a retransmitted final response: already delivered once
        if response.status < 200:
            self.state = State.PROCEEDING
            return self._step(response=response)
        self.state = State.COMPLETED
        self._e_at = self._f_at = None
        if self.reliable:
            self.state = State.TERMINATED
        else:
            self._k_at = now_ns + self.timers.t4_ns
        return self._step(response=response)

    def tick(self, now_ns: int) -> Step:
        """Fire every timer that is due at `now_ns`."""
        if self._k_at is not None and now_ns >= self._k_at:
            self._k_at = None
            self.state = State.TERMINATED
            return self._step()
        if self._f_at is not None and now_ns >= self._f_at:
            self._e_at = self._f_at = None
            self.state = State.TERMINATED
            return self._step(timed_out=True)
        transmit: tuple[bytes, ...] = ()
        if self._e_at is not None and now_ns >= self._e_at:
            if self.state is State.TRYING:
                self._e_interval = min(2 * self._e_interval, self.timers.t2_ns)
            else:
                self._e_interval = self.timers.t2_ns
            self._e_at = now_ns + self._e_interval
            self.retransmissions += 1
            transmit = (self._wire,)
        return self._step(transmit)

    def transport_error(self) -> Step:
        """The transport could not send: the transaction ends as a timeout (RFC 3261 17.1.4)."""
        self._e_at = self._f_at = self._k_at = None
        self.state = State.TERMINATED
        return self._step(timed_out=True)


class ServerTransaction:
    """A non-INVITE server transaction: absorb retransmitted requests, repeat the last response."""

    def __init__(
        self, request: Request, *, reliable: bool, timers: Timers | None = None, now_ns: int | None = None
    ) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers or Timers()
        self.key = server_key(request)
        self.state = State.TRYING
        self.last_response: Response | None = None
        self._last_wire: bytes | None = None
        # Given the arrival time, an unanswered transaction ends after 64*T1 too: a transaction user that
        # never answers must not hold memory forever (RFC 3261 leaves Trying without a timer).
        self._j_at: int | None = None if now_ns is None else now_ns + self.timers.timeout_ns
        self.absorbed = 0

    @property
    def wake_at_ns(self) -> int | None:
        return self._j_at

    def receive_retransmission(self, now_ns: int) -> Step:
        """The same request again: nothing in Trying, the last response in Proceeding/Completed."""
        self.absorbed += 1
        if self.state in (State.PROCEEDING, State.COMPLETED) and self._last_wire is not None:
            return Step((self._last_wire,), wake_at_ns=self.wake_at_ns)
        return Step(wake_at_ns=self.wake_at_ns)

    def respond(self, response: Response, now_ns: int) -> Step:
        """Send the transaction user's response; a final one completes the transaction (Timer J)."""
        if self.state in (State.COMPLETED, State.TERMINATED):
            raise RuntimeError(
                f"server transaction {self.key} already answered {self.last_response and self.last_response.status}"
            )
        self.last_response = response
        self._last_wire = serialize(response)
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            if self.reliable:
                self.state = State.TERMINATED
            else:
                self._j_at = now_ns + self.timers.timeout_ns
        return Step((self._last_wire,), wake_at_ns=self.wake_at_ns)

    def tick(self, now_ns: int) -> Step:
        if self._j_at is not None and now_ns >= self._j_at:
            self._j_at = None
            self.state = State.TERMINATED
        return Step(wake_at_ns=self.wake_at_ns)
