"""Sans-I/O SIP for SCAIP: the MESSAGE subset of RFC 3261 with RFC 3428, in the shape of h11.

`_abnf` holds the grammar, `events` the typed messages and endpoint events, `message` parsing and
serializing (datagram and Content-Length stream framing), `transactions` the non-INVITE client and
server state machines with timers as data, `digest` RFC 2617/7616 authentication, and `endpoint` ties
them together for one transport. No sockets, no clocks: see `harness.transports.sip` for the I/O.
"""

from harness.protocols.sip.endpoint import SipEndpoint
from harness.protocols.sip.events import (
    Event,
    Headers,
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
    MAX_HEADERS,
    MAX_MESSAGE_BYTES,
    CSeq,
    NameAddr,
    SipParseError,
    SipUri,
    StreamReader,
    Via,
    make_request,
    make_response,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    serialize,
)
from harness.protocols.sip.transactions import ClientTransaction, ServerTransaction, State, Step, Timers

__all__ = [
    "MAX_HEADERS",
    "MAX_MESSAGE_BYTES",
    "CSeq",
    "ClientTransaction",
    "Event",
    "Headers",
    "Message",
    "MessageRefused",
    "NameAddr",
    "Peer",
    "Request",
    "RequestReceived",
    "Response",
    "ResponseReceived",
    "ServerTransaction",
    "SipEndpoint",
    "SipParseError",
    "SipUri",
    "State",
    "Step",
    "StreamReader",
    "Timers",
    "TransactionTimedOut",
    "Transmit",
    "Via",
    "make_request",
    "make_response",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "serialize",
]
