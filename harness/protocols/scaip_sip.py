"""SCAIP over SIP MESSAGE, sans-I/O: what a device and a response centre do with each SIP event.

The device (`ScaipCaller`) sends its `<mrq>` in a MESSAGE, answers 401/407 challenges with digest
credentials, and takes the centre's `<mrs>` from a MESSAGE of the centre's own (matched by `ref`) or from
the body of the 200 OK. The response centre (`ScaipResponder`) answers each MESSAGE's transaction, hands
a valid `<mrq>` to its user, and sends the `<mrs>` the user decides in a new MESSAGE to the device (to the
request's Contact, else its From URI, through the hop the request came from, so a proxy in between sees
the answer too). A body it cannot accept is answered, never raised: 415 for a foreign Content-Type,
400 when not even the `ref` can be read, and otherwise 200 OK followed by an `<mrs>` with snu 2, 3 or 7.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harness.protocols import scaip
from harness.protocols.base import ProtocolError
from harness.protocols.scaip import Mrq, Mrs, ScaipError, StatusNumber
from harness.protocols.sip import digest
from harness.protocols.sip.endpoint import SipEndpoint
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
from harness.protocols.sip.message import (
    NameAddr,
    SipParseError,
    Via,
    contacts,
    content_type,
    from_,
    make_request,
    new_branch,
    new_call_id,
    new_tag,
    parse_name_addr,
)


@dataclass(frozen=True, slots=True)
class Local:
    """Who this endpoint is on its transport: the Via sent-by, the From URI, the user part."""

    host: str
    port: int
    transport: str = "UDP"
    user: str = "vtlab"

    @property
    def uri(self) -> str:
        t = self.transport.lower()
        suffix = "" if t == "udp" else f";transport={t}"
        return f"sip:{self.user}@{_host(self.host)}:{self.port}{suffix}"

    def via(self) -> Via:
        return Via(self.transport.upper(), _host(self.host), self.port, (("branch", new_branch()), ("rport", None)))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True, slots=True)
class Credentials:
    """Digest credentials a device answers a 401/407 with (read from a file or environment, never argv)."""

    username: str
    password: str = field(repr=False)


# --- outputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MrqArrived:
    """A valid `<mrq>` reached the response centre (its SIP transaction is already answered 200)."""

    mrq: Mrq
    request: Request
    peer: Peer
    arrived_ns: int


@dataclass(frozen=True, slots=True)
class Refused:
    """Something the endpoint would not take: `status` is the SIP answer (None: none possible),
    `snu` the SCAIP status number sent back in an `<mrs>` (None: no `<mrs>` went back)."""

    raw: bytes
    reason: str
    peer: Peer
    status: int | None
    snu: StatusNumber | None = None
    arrived_ns: int = 0


@dataclass(frozen=True, slots=True)
class MrsArrived:
    """An `<mrs>` reached the device, in a MESSAGE of the centre (`carrier="MESSAGE"`) or a 2xx body."""

    mrs: Mrs
    peer: Peer
    arrived_ns: int
    carrier: str


@dataclass(frozen=True, slots=True)
class MrqAnswered:
    """The final 2xx to the device's MESSAGE carrying `<mrq>` `ref`."""

    ref: str
    status: int
    arrived_ns: int
    authenticated: bool = False


@dataclass(frozen=True, slots=True)
class MrqFailed:
    """The device's MESSAGE for `ref` got a final error (`status`) or none at all (`status` None)."""

    ref: str
    status: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class MrsDelivered:
    """The centre's MESSAGE carrying `<mrs>` `ref` was answered (`status`; None: timed out)."""

    ref: str
    status: int | None


Output = Transmit | MrqArrived | Refused | MrsArrived | MrqAnswered | MrqFailed | MrsDelivered


class _ScaipEndpoint:
    """What both roles share: feeding bytes into the SIP endpoint and turning its events into outputs."""

    def __init__(self, local: Local, *, endpoint: SipEndpoint | None = None) -> None:
        self.local = local
        self.sip = endpoint or SipEndpoint(transport=local.transport)
        self._cseq = 0

    def receive_datagram(self, data: bytes, peer: Peer, now_ns: int) -> list[Output]:
        return self._dispatch(self.sip.receive_datagram(data, peer, now_ns), now_ns)

    def receive_message(self, msg: Message, peer: Peer, now_ns: int, raw: bytes = b"") -> list[Output]:
        return self._dispatch(self.sip.receive_message(msg, peer, now_ns, raw=raw), now_ns)

    def refuse_frame(self, raw: bytes, error: SipParseError, peer: Peer, now_ns: int) -> list[Output]:
        return self._dispatch(self.sip.refuse_frame(raw, error, peer, now_ns), now_ns)

    def tick(self, now_ns: int) -> list[Output]:
        return self._dispatch(self.sip.tick(now_ns), now_ns)

    def peer_failed(self, peer: Peer, now_ns: int) -> list[Output]:
        """The transport could not reach `peer`: requests in flight to it fail now, not after Timer F."""
        return self._dispatch(self.sip.peer_failed(peer), now_ns)

    @property
    def wake_at_ns(self) -> int | None:
        return self.sip.wake_at_ns

    def _dispatch(self, events: list[Event], now_ns: int) -> list[Output]:
        out: list[Output] = []
        for ev in events:
            if isinstance(ev, Transmit):
                out.append(ev)
            elif isinstance(ev, MessageRefused):
                out.append(Refused(ev.raw, ev.reason, ev.peer, 400 if ev.answered else None, arrived_ns=now_ns))
            elif isinstance(ev, RequestReceived):
                out.extend(self._on_request(ev, now_ns))
            elif isinstance(ev, ResponseReceived):
                out.extend(self._on_response(ev, now_ns))
            elif isinstance(ev, TransactionTimedOut):
                out.extend(self._on_timeout(ev, now_ns))
        return out

    def _on_request(self, ev: RequestReceived, now_ns: int) -> list[Output]:
        raise NotImplementedError

    def _on_response(self, ev: ResponseReceived, now_ns: int) -> list[Output]:
        raise NotImplementedError

    def _on_timeout(self, ev: TransactionTimedOut, now_ns: int) -> list[Output]:
        raise NotImplementedError

    def _answer(
        self, request: Request, status: int, now_ns: int, *, body: bytes = b"", extra: tuple[tuple[str, str], ...] = ()
    ) -> list[Output]:
        ctype = scaip.CONTENT_TYPE if body else None
        response = self.sip.response(request, status, body=body, content_type=ctype, extra=extra)
        return self._dispatch(self.sip.respond(request, response, now_ns), now_ns)

    def _message(self, uri: str, to_addr: NameAddr, body: bytes, extra: tuple[tuple[str, str], ...] = ()) -> Request:
        self._cseq += 1
        return make_request(
            "MESSAGE",
            uri,
            via=self.local.via(),
            from_addr=NameAddr(self.local.uri, None, (("tag", new_tag()),)),
            to_addr=to_addr,
            call_id_=new_call_id(_host(self.local.host)),
            cseq_=self._cseq,
            body=body,
            content_type_=scaip.CONTENT_TYPE,
            extra=(("User-Agent", self.sip.user_agent), *extra),
        )


def _body_refusal(request: Request) -> tuple[int, str] | None:
    ctype = content_type(request)
    if ctype != scaip.CONTENT_TYPE:
        return 415, f"Content-Type {ctype or '(none)'} is not {scaip.CONTENT_TYPE}"
    if len(request.body) > scaip.MAX_DOCUMENT_BYTES:
        return 413, f"body of {len(request.body)} bytes is over the {scaip.MAX_DOCUMENT_BYTES}-byte bound"
    return None


class ScaipResponder(_ScaipEndpoint):
    """The response centre's side, sans-I/O.

    With `mrs_in_response` the 200 OK waits for `reply` and carries the `<mrs>` in its body (some
    centres do that); by default the 200 goes at once and the `<mrs>` follows in a MESSAGE.
    """

    def __init__(
        self,
        local: Local,
        *,
        endpoint: SipEndpoint | None = None,
        mrs_in_response: bool = False,
        auth: tuple[str, Callable[[str], str | None], Callable[[], str]] | None = None,
    ) -> None:
        super().__init__(local, endpoint=endpoint)
        self.mrs_in_response = mrs_in_response
        self.auth = auth
        """(realm, password_for(username), new_nonce()) to demand digest credentials (401) first."""
        self._nonces: set[str] = set()
        self._replies: dict[str, str] = {}  # client transaction key -> ref of the mrs it carries

    def _on_request(self, ev: RequestReceived, now_ns: int) -> list[Output]:
        request = ev.request
        if self.auth is not None and not self._authorised(request):
            realm, _, new_nonce = self.auth
            nonce = new_nonce()
            self._nonces.add(nonce)
            challenge = digest.make_challenge(realm, nonce, algorithm="MD5")
            return self._answer(request, 401, now_ns, extra=(("WWW-Authenticate", challenge),))
        refusal = _body_refusal(request)
        if refusal is not None:
            status, reason = refusal
            extra = (("Accept", scaip.CONTENT_TYPE),) if status == 415 else ()
            return [
                *self._answer(request, status, now_ns, extra=extra),
                Refused(request.body, reason, ev.peer, status, arrived_ns=ev.arrived_ns),
            ]
        try:
            mrq = scaip.decode_mrq(request.body)
        except ScaipError as exc:
            return self._refuse_document(ev, exc, now_ns)
        out: list[Output] = []
        if not self.mrs_in_response:
            out.extend(self._answer(request, 200, now_ns))
        out.append(MrqArrived(mrq, request, ev.peer, ev.arrived_ns))
        return out

    def _authorised(self, request: Request) -> bool:
        assert self.auth is not None
        realm, password_for, _ = self.auth
        value = request.headers.get("Authorization")
        if value is None:
            return False
        user = digest.verify(
            value,
            method=request.method,
            realm=realm,
            password_for=password_for,
            nonce_ok=self._nonces.__contains__,
            body=request.body,
        )
        return user is not None

    def _refuse_document(self, ev: RequestReceived, exc: ScaipError, now_ns: int) -> list[Output]:
        request = ev.request
        if exc.ref is None:
            out = self._answer(request, 400, now_ns)
            return [*out, Refused(request.body, exc.reason, ev.peer, 400, arrived_ns=ev.arrived_ns)]
        mrs = Mrs(ref=exc.ref, snu=exc.snu, ste=exc.reason[:128], cve=scaip.VERSION)
        if self.mrs_in_response:
            out = self._answer(request, 200, now_ns, body=mrs.encode())
        else:
            out = [*self._answer(request, 200, now_ns), *self._send_mrs(request, ev.peer, mrs, now_ns)]
        return [*out, Refused(request.body, exc.reason, ev.peer, 200, exc.snu, arrived_ns=ev.arrived_ns)]

    def reply(self, arrived: MrqArrived, mrs: Mrs, now_ns: int) -> list[Output]:
        """Send the user's `<mrs>` for `arrived` (in the 200 OK, or in a MESSAGE to the device)."""
        if mrs.ref != arrived.mrq.ref:
            raise ValueError(f"mrs ref {mrs.ref} does not answer mrq ref {arrived.mrq.ref}")
        if self.mrs_in_response:
            return self._answer(arrived.request, 200, now_ns, body=mrs.encode())
        return self._send_mrs(arrived.request, arrived.peer, mrs, now_ns)

    def _send_mrs(self, request: Request, peer: Peer, mrs: Mrs, now_ns: int) -> list[Output]:
        try:
            found = contacts(request)
            device = from_(request)
        except ProtocolError:
            return []
        target = found[0].uri if found else device.uri
        message = self._message(target, NameAddr(device.uri, device.display), mrs.encode())
        key, events = self.sip.send_request(message, peer, now_ns)
        self._replies[key] = mrs.ref
        return self._dispatch(events, now_ns)

    def _on_response(self, ev: ResponseReceived, now_ns: int) -> list[Output]:
        if ev.response.status < 200:
            return []
        ref = self._replies.pop(ev.key, None)
        return [MrsDelivered(ref, ev.response.status)] if ref is not None else []

    def _on_timeout(self, ev: TransactionTimedOut, now_ns: int) -> list[Output]:
        ref = self._replies.pop(ev.key, None)
        return [MrsDelivered(ref, None)] if ref is not None else []


@dataclass(slots=True)
class _Pending:
    ref: str
    request: Request
    peer: Peer
    attempts: int = 0


class ScaipCaller(_ScaipEndpoint):
    """The device's side, sans-I/O: send `<mrq>` MESSAGEs, take `<mrs>` back, answer digest challenges."""

    def __init__(
        self,
        local: Local,
        *,
        endpoint: SipEndpoint | None = None,
        credentials: Credentials | None = None,
        new_cnonce: Callable[[], str] = digest.new_cnonce,
        contact: bool = False,
    ) -> None:
        super().__init__(local, endpoint=endpoint)
        self.credentials = credentials
        self.new_cnonce = new_cnonce
        self.contact = contact
        """Put a Contact header in the MESSAGE (RFC 3428 does not need one; some centres route the
        `<mrs>` by it)."""
        self._pending: dict[str, _Pending] = {}  # client transaction key -> pending mrq

    def send_mrq(self, mrq: Mrq, target_uri: str, peer: Peer, now_ns: int) -> list[Output]:
        """A MESSAGE carrying `mrq` to `target_uri`, sent to `peer` (the centre or an outbound proxy)."""
        extra = (("Contact", f"<{self.local.uri}>"),) if self.contact else ()
        request = self._message(target_uri, parse_name_addr(f"<{target_uri}>"), mrq.encode(), extra)
        key, events = self.sip.send_request(request, peer, now_ns)
        self._pending[key] = _Pending(mrq.ref, request, peer)
        return self._dispatch(events, now_ns)

    def _on_request(self, ev: RequestReceived, now_ns: int) -> list[Output]:
        request = ev.request
        refusal = _body_refusal(request)
        if refusal is not None:
            status, reason = refusal
            return [
                *self._answer(request, status, now_ns),
                Refused(request.body, reason, ev.peer, status, arrived_ns=ev.arrived_ns),
            ]
        try:
            mrs = scaip.decode_mrs(request.body)
        except ScaipError as exc:
            return [
                *self._answer(request, 400, now_ns),
                Refused(request.body, exc.reason, ev.peer, 400, arrived_ns=ev.arrived_ns),
            ]
        return [*self._answer(request, 200, now_ns), MrsArrived(mrs, ev.peer, ev.arrived_ns, "MESSAGE")]

    def _on_response(self, ev: ResponseReceived, now_ns: int) -> list[Output]:
        response = ev.response
        if response.status < 200:
            return []
        pending = self._pending.pop(ev.key, None)
        if pending is None:
            return []
        if 200 <= response.status < 300:
            out: list[Output] = [MrqAnswered(pending.ref, response.status, ev.arrived_ns, pending.attempts > 0)]
            mrs = _mrs_in_body(response)
            if mrs is not None:
                out.append(MrsArrived(mrs, ev.peer, ev.arrived_ns, str(response.status)))
            return out
        if response.status in (401, 407) and self.credentials is not None and pending.attempts < 2:
            return self._retry_with_credentials(pending, response, now_ns)
        return [MrqFailed(pending.ref, response.status, f"{response.status} {response.reason}")]

    def _retry_with_credentials(self, pending: _Pending, response: Response, now_ns: int) -> list[Output]:
        assert self.credentials is not None
        offered = digest.challenges(response)
        if not offered:
            return [MrqFailed(pending.ref, response.status, "challenge with no supported Digest algorithm")]
        try:
            request = digest.authorize(
                pending.request,
                offered[0],
                username=self.credentials.username,
                password=self.credentials.password,
                cnonce=self.new_cnonce(),
                branch=new_branch(),
            )
        except ProtocolError as exc:
            return [MrqFailed(pending.ref, response.status, exc.reason)]
        key, events = self.sip.send_request(request, pending.peer, now_ns)
        self._pending[key] = _Pending(pending.ref, request, pending.peer, pending.attempts + 1)
        return self._dispatch(events, now_ns)

    def _on_timeout(self, ev: TransactionTimedOut, now_ns: int) -> list[Output]:
        pending = self._pending.pop(ev.key, None)
        if pending is None:
            return []
        reason = "transport error" if ev.transport_error else "no final response within 64*T1 (Timer F)"
        return [MrqFailed(pending.ref, None, reason)]


def _mrs_in_body(response: Response) -> Mrs | None:
    if not response.body or content_type(response) != scaip.CONTENT_TYPE:
        return None
    try:
        return scaip.decode_mrs(response.body)
    except ScaipError:
        return None
