"""SIA DC-09 ("SIA over IP"), sans-I/O: frames, encryption, stream splitting, receiver and transmitter rules.

Shaped like h11: `frame` holds the grammar and the typed events, `crypto` the AES part, `stream` turns a TCP
byte stream into frames, `receiver` and `transmitter` hold each side's rules. Payloads are decoded by
`harness.protocols.sia_dcs` (SIA-DCS) and `harness.protocols.contact_id` (ADM-CID).
"""

from harness.protocols.dc09.crypto import KEY_SIZES, Padding
from harness.protocols.dc09.frame import (
    ACK,
    ADM_CID,
    DUH,
    MAX_FRAME_BYTES,
    NAK,
    NULL,
    RSP,
    SIA_DCS,
    DC09Message,
    DC09Reply,
    Frame,
    crc16_arc,
    decode,
    decode_datagram,
    encode_message,
    encode_reply,
    format_timestamp,
    nak,
    open_frame,
    parse_frame,
    parse_timestamp,
)
from harness.protocols.dc09.receiver import Account, Decision, Outcome, ReceiverPolicy, ReceiverState
from harness.protocols.dc09.stream import FrameSplitter, Junk
from harness.protocols.dc09.transmitter import ReplyResult, SequenceCounter, TransmitterState

__all__ = [
    "ACK",
    "ADM_CID",
    "DUH",
    "KEY_SIZES",
    "MAX_FRAME_BYTES",
    "NAK",
    "NULL",
    "RSP",
    "SIA_DCS",
    "Account",
    "DC09Message",
    "DC09Reply",
    "Decision",
    "Frame",
    "FrameSplitter",
    "Junk",
    "Outcome",
    "Padding",
    "ReceiverPolicy",
    "ReceiverState",
    "ReplyResult",
    "SequenceCounter",
    "TransmitterState",
    "crc16_arc",
    "decode",
    "decode_datagram",
    "encode_message",
    "encode_reply",
    "format_timestamp",
    "nak",
    "open_frame",
    "parse_frame",
    "parse_timestamp",
]
