"""Typed SIP messages and the events the sans-I/O endpoint hands to its user (frozen, slotted).

A `Request` or `Response` is both what the parser returns and what the serializer takes, as h11's
events are. Header names are stored in their canonical long form (`v` becomes `Via`); values are kept
as received (after line unfolding), so a finding can quote them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "u": "Allow-Events",
}
CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Max-Forwards",
        "Contact",
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Route",
        "Record-Route",
        "Subject",
        "Supported",
        "User-Agent",
        "Server",
        "Allow",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authorization",
        "Proxy-Authorization",
        "Expires",
        "Date",
        "Accept",
        "Reason",
        "Warning",
        "Require",
        "Unsupported",
        "Event",
        "Allow-Events",
        "Refer-To",
        "Authentication-Info",
        "Retry-After",
        "Timestamp",
    )
}
LIST_HEADERS = frozenset({"Via", "Contact", "Route", "Record-Route", "Allow", "Supported", "Require", "Accept"})
"""Headers whose value is a comma-separated list (RFC 3261 7.3.1): one line may carry several entries."""

Peer = tuple[str, int]
"""A transport address: host and port (for TCP/TLS, the remote end of the connection)."""


def canonical_name(name: str) -> str:
    """`v` -> `Via`, `call-id` -> `Call-ID`; unknown names are kept as written."""
    if len(name) == 1:
        long = COMPACT_FORMS.get(name.lower())
        if long:
            return long
    return CANONICAL.get(name.lower(), name)


@dataclass(frozen=True, slots=True)
class Headers:
    """An ordered, immutable header list with case-insensitive lookup."""

    items: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        return cls(tuple((canonical_name(n), v) for n, v in pairs))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, name: str) -> str | None:
        """The first value of `name` (None when absent)."""
        name = canonical_name(name)
        for n, v in self.items:
            if n == name:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every line's value of `name`, in order (list headers are not split here)."""
        name = canonical_name(name)
        return [v for n, v in self.items if n == name]

    def replace(self, name: str, value: str | None) -> Headers:
        """A copy with every `name` removed and, unless value is None, one `name: value` where the first was."""
        name = canonical_name(name)
        out: list[tuple[str, str]] = []
        placed = value is None
        for n, v in self.items:
            if n == name:
                if not placed:
                    out.append((name, value))  # type: ignore[arg-type]
                    placed = True
                continue
            out.append((n, v))
        if not placed:
            out.append((name, value))  # type: ignore[arg-type]
        return Headers(tuple(out))

    def add(self, name: str, value: str, *, first: bool = False) -> Headers:
        pair = (canonical_name(name), value)
        return Headers((pair, *self.items) if first else (*self.items, pair))


@dataclass(frozen=True, slots=True)
class Request:
    """A SIP request (vtlab sends and answers MESSAGE; other methods are parsed and refused politely)."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Response:
    """A SIP response."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def is_final(self) -> bool:
        return self.status >= 200


Message = Request | Response


# --- what the endpoint hands its user ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send these bytes to `peer` now (one datagram, or a write on the stream to that peer)."""

    data: bytes
    peer: Peer


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (retransmissions are absorbed by its server transaction); answer it with `respond`."""

    request: Request
    peer: Peer
    arrived_ns: int


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response that matched one of our client transactions (`key`)."""

    key: str
    response: Response
    peer: Peer
    arrived_ns: int


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer F fired: no final response to the request of client transaction `key` within 64*T1."""

    key: str
    request: Request
    transport_error: bool = False


@dataclass(frozen=True, slots=True)
class MessageRefused:
    """Bytes from `peer` that are not a SIP message we can take; `answered` says whether a 4xx went back."""

    raw: bytes
    reason: str
    peer: Peer
    answered: bool


Event = Transmit | RequestReceived | ResponseReceived | TransactionTimedOut | MessageRefused
