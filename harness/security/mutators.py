"""Seeded generators of malformed and mutated messages for every codec vtlab speaks to a platform's ingress:
the MQTT JSON dialect (wire_json), SIA DC-09 frames and SCAIP `<mrq>` in SIP MESSAGE requests.

Pure (no sockets, no clocks): the same seed and the same inputs give the same bytes, so a crash the fuzzer
provokes can be replayed. Each case names the mutation that made it. A case vtlab's own codec reads as a
valid alarm (or a valid heartbeat) is never produced: a fuzz message must not become an alarm the
scenario could mistake for its own, nor change a device's supervision.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from harness.protocols.base import ProtocolError

MAX_CASE_BYTES = 64 * 1024
"""No fuzz message is longer (a platform may refuse more, and must survive up to this)."""
MAX_SKIPPED = 10_000
"""Valid messages skipped in a row before a generator gives up (its mutations no longer break anything)."""


class _Skips:
    def __init__(self) -> None:
        self.row = 0

    def skip(self) -> None:
        self.row += 1
        if self.row > MAX_SKIPPED:
            raise RuntimeError("the mutator produced only valid messages: a defect in vtlab's fuzzer")

    def sent(self) -> None:
        self.row = 0


@dataclass(frozen=True, slots=True)
class FuzzCase:
    """One message to send: its bytes, the mutation that made it and, for MQTT, the topic name kind."""

    data: bytes
    mutation: str
    topic: str | None = None


# --- byte-level mutations (every codec) -----------------------------------------------------------
def _flip(rng: random.Random, b: bytearray) -> None:
    for _ in range(rng.randint(1, 8)):
        if b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)


def _replace(rng: random.Random, b: bytearray) -> None:
    for _ in range(rng.randint(1, 4)):
        if b:
            b[rng.randrange(len(b))] = rng.choice([0, 0xFF, 0x7F, 0x80, 0x22, 0x5B, 0x5D, 0x0A, 0x0D, 0x3C, 0x3E])


def _insert(rng: random.Random, b: bytearray) -> None:
    at = rng.randint(0, len(b))
    b[at:at] = rng.randbytes(rng.randint(1, 64))


def _delete(rng: random.Random, b: bytearray) -> None:
    if b:
        at = rng.randrange(len(b))
        del b[at : at + rng.randint(1, 32)]


def _truncate(rng: random.Random, b: bytearray) -> None:
    del b[rng.randint(0, max(0, len(b) - 1)) :]


def _repeat(rng: random.Random, b: bytearray) -> None:
    if b:
        at = rng.randrange(len(b))
        chunk = b[at : at + rng.randint(1, 64)]
        b[at:at] = chunk * rng.randint(2, 64)


def _garbage(rng: random.Random, b: bytearray) -> None:
    b[:] = rng.randbytes(rng.randint(0, 512))


BYTE_MUTATIONS: dict[str, Callable[[random.Random, bytearray], None]] = {
    "bit_flip": _flip,
    "byte_replace": _replace,
    "insert": _insert,
    "delete": _delete,
    "truncate": _truncate,
    "repeat": _repeat,
    "garbage": _garbage,
}


def mutate_bytes(rng: random.Random, data: bytes, max_bytes: int) -> tuple[bytes, str]:
    name = rng.choice(sorted(BYTE_MUTATIONS))
    b = bytearray(data)
    BYTE_MUTATIONS[name](rng, b)
    return bytes(b[:max_bytes]), name


# --- wire_json (MQTT) -----------------------------------------------------------------------------
def _json_structural(rng: random.Random, base: dict[str, object], max_bytes: int) -> tuple[bytes, str]:
    doc = dict(base)
    kind = rng.choice(
        [
            "wrong_type",
            "missing_field",
            "huge_text",
            "deep_nesting",
            "bad_version",
            "not_object",
            "bad_utf8",
            "non_finite",
            "extra_fields",
            "empty",
        ]
    )
    if kind == "wrong_type":
        key = rng.choice(sorted(doc))
        doc[key] = rng.choice([None, True, -1, 2**64, 1.5, [], {}, "x" * rng.randint(0, 40), "\u0000"])
    elif kind == "missing_field":
        doc.pop(rng.choice(sorted(doc)), None)
    elif kind == "huge_text":
        doc[rng.choice(["event", "device", "code", "cid", "user"])] = "A" * rng.randint(257, max(258, max_bytes // 2))
    elif kind == "deep_nesting":
        depth = rng.randint(50, 2000)
        return ("[" * depth + "]" * depth).encode()[:max_bytes], kind
    elif kind == "bad_version":
        doc["v"] = rng.choice([0, 2, 99, "1", -1])
    elif kind == "not_object":
        return rng.choice([b"null", b"[]", b"42", b'"event"', b"true"]), kind
    elif kind == "bad_utf8":
        return json.dumps(doc).encode()[:-2] + b'\xff\xfe"}', kind
    elif kind == "non_finite":
        return json.dumps({**doc, "priority": float("nan")}).encode(), kind
    elif kind == "extra_fields":
        for i in range(rng.randint(1, 200)):
            doc[f"x{i}"] = i
    else:
        return b"", kind
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")[:max_bytes], kind


def _is_valid_wire(data: bytes) -> bool:
    from harness.protocols.wire_json import DeviceEvent, Heartbeat, decode

    for kind in (DeviceEvent, Heartbeat):
        try:
            decode(data, kind)
            return True
        except ProtocolError:
            continue
        except Exception:  # the codec must only raise ProtocolError; anything else is not "valid"
            continue
    return False


def wire_json_cases(seed: int, device: str, user: str | None, *, max_bytes: int = 4096) -> Iterator[FuzzCase]:
    """Mutated device events and heartbeats for `device` (cids start `fuzz-`)."""
    rng = random.Random(seed)
    skips = _Skips()
    n = 0
    while True:
        n += 1
        topic = "device_heartbeat" if rng.random() < 0.2 else "device_event"
        if topic == "device_event":
            base: dict[str, object] = {
                "v": 1,
                "cid": f"fuzz-{seed}-{n}",
                "device": device,
                "event": "personal_emergency",
                "code": "101",
                "qualifier": "1",
                "priority": 1,
                "seq": n,
            }
            if user:
                base["user"] = user
        else:
            base = {"v": 1, "device": device, "interval_s": 60, "seq": n}
        if rng.random() < 0.5:
            data, mutation = mutate_bytes(rng, json.dumps(base).encode(), max_bytes)
        else:
            data, mutation = _json_structural(rng, base, max_bytes)
        data = data[:max_bytes]
        if _is_valid_wire(data):
            skips.skip()
            continue
        skips.sent()
        yield FuzzCase(data, f"wire_json:{mutation}", topic)


# --- DC-09 ----------------------------------------------------------------------------------------
def _rebuild(body: bytes) -> bytes:
    """A frame around `body` with a correct CRC and LEN, so the mutation reaches the parser behind them."""
    from harness.protocols.dc09 import crc16_arc

    return b"\n" + f"{crc16_arc(body):04X}{len(body) & 0xFFFF:04X}".encode() + body + b"\r"


def _dc09_is_valid_alarm(frame: bytes, account: str, key: bytes | None, now: datetime) -> bool:
    from harness.protocols.contact_id import ContactIdEvent
    from harness.protocols.dc09 import Account, ReceiverPolicy, ReceiverState

    wide = ReceiverPolicy(window_behind=timedelta(days=3650), window_ahead=timedelta(days=3650))
    try:
        state = ReceiverState([Account(account, key, require_encryption=False)], wide)
        decision = state.receive(frame, now)
    except ProtocolError:
        return False
    except Exception:
        return False
    return decision.accepted and isinstance(decision.content, ContactIdEvent)


def dc09_cases(
    seed: int, account: str, key: bytes | None, *, max_bytes: int = 4096, now: datetime | None = None
) -> Iterator[FuzzCase]:
    """Mutated DC-09 frames: envelope broken (CRC, LEN, framing), body mutated behind a correct envelope,
    unknown accounts, undecryptable payloads, oversize frames. Zone 000 and code 602 in every base frame:
    never what vtlab's own alarms carry. `now` (default 2024-01-01) stamps the frames: the fuzz step passes
    the time it starts (recorded with its evidence), so mutations reach the parts behind the timestamp
    window; the same seed and `now` give the same bytes."""
    from harness.protocols.contact_id import ContactIdEvent, encode_adm_cid
    from harness.protocols.dc09 import ADM_CID, MAX_FRAME_BYTES, NULL, DC09Message, encode_message

    rng = random.Random(seed)
    skips = _Skips()
    stamp = (now or datetime(2024, 1, 1, tzinfo=UTC)).replace(microsecond=0)
    n = 0
    while True:
        n += 1
        acct = account if rng.random() < 0.7 else f"{rng.randrange(16**6):06X}"
        token = ADM_CID if rng.random() < 0.85 else NULL
        data = encode_adm_cid(ContactIdEvent(acct, 1, "602", "01", "000")) if token == ADM_CID else ""
        msg = DC09Message(token, rng.randint(0, 9999), acct, data, "0", "0", timestamp=stamp)
        use_key = key if key is not None and rng.random() < 0.5 else None
        frame = encode_message(msg, use_key, rng=rng)
        choice = rng.random()
        if choice < 0.35:
            out, mutation = mutate_bytes(rng, frame, max_bytes)
        elif choice < 0.75:
            body, mutation = mutate_bytes(rng, frame[9:-1], max_bytes - 10)
            out, mutation = _rebuild(body), f"body_{mutation}"
        elif choice < 0.85:
            out, mutation = frame[:5] + f"{rng.randrange(0x10000):04X}".encode() + frame[9:], "wrong_len"
        elif choice < 0.92:
            size = min(max_bytes, MAX_FRAME_BYTES + rng.randint(1, 2048))
            out, mutation = _rebuild(frame[9:-1] + b"A" * size)[:max_bytes], "oversize"
        else:
            out, mutation = b"\n" * rng.randint(1, 50) + frame[:-1], "no_terminator"
        out = out[:max_bytes]
        if _dc09_is_valid_alarm(out, account, key, stamp):
            skips.skip()
            continue
        skips.sent()
        yield FuzzCase(out, f"dc09:{mutation}")


# --- SCAIP over SIP ---------------------------------------------------------------------------------
def sip_message(target: str, local: str, cid: str, n: int, body: bytes, *, length: int | None = None) -> bytes:
    """A SIP MESSAGE carrying `body` as application/scaip+xml, deterministic for a given `n`."""
    head = (
        f"MESSAGE sip:scaip@{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local};branch=z9hG4bK-vtlab-fuzz-{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{cid}@{local}>;tag=fuzz{n}\r\n"
        f"To: <sip:scaip@{target}>\r\n"
        f"Call-ID: vtlab-fuzz-{n}@{local}\r\n"
        "CSeq: 1 MESSAGE\r\n"
        "Content-Type: application/scaip+xml\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


def _sip_is_valid_mrq(data: bytes) -> bool:
    from harness.protocols import scaip
    from harness.protocols.sip.message import parse_message

    try:
        msg = parse_message(data, datagram=True)
        body = getattr(msg, "body", b"")
        scaip.decode_mrq(body)
        return True
    except ProtocolError:
        return False
    except Exception:
        return False


def scaip_cases(
    seed: int, target: str, local: str, cid: str, did: str | None, *, max_bytes: int = 4096
) -> Iterator[FuzzCase]:
    """Mutated SIP MESSAGE requests with SCAIP bodies: the XML mutated behind a correct SIP envelope, the
    SIP envelope mutated (headers, Content-Length), and raw garbage. Status code 0102 (test transmission)
    in every base `<mrq>`."""
    from harness.protocols.scaip import Mrq

    rng = random.Random(seed)
    skips = _Skips()
    n = 0
    while True:
        n += 1
        fields: dict[str, object] = {"ref": f"fz{seed % 10**6}x{n}"[:16], "cid": cid, "dty": "0003", "stc": "0102"}
        if did:
            fields["did"] = did
        body = Mrq(**fields).encode()  # type: ignore[arg-type]
        choice = rng.random()
        if choice < 0.45:
            mutated, mutation = mutate_bytes(rng, body, max_bytes // 2)
            out, mutation = sip_message(target, local, cid, n, mutated), f"body_{mutation}"
        elif choice < 0.6:
            tag = rng.choice([b"<mrq>", b"<cid>", b"<stc>", b"<ref>"])
            depth = rng.randint(10, 500)
            mutated = body.replace(tag, tag + b"<x>" * depth, 1)
            out, mutation = sip_message(target, local, cid, n, mutated), "xml_nesting"
        elif choice < 0.7:
            out, mutation = (
                sip_message(target, local, cid, n, body, length=rng.choice([0, 1, len(body) + 50, 10**9])),
                "content_length",
            )
        elif choice < 0.9:
            out, mutation = mutate_bytes(rng, sip_message(target, local, cid, n, body), max_bytes)
            mutation = f"sip_{mutation}"
        else:
            out, mutation = rng.randbytes(rng.randint(0, 1024)), "garbage"
        out = out[:max_bytes]
        if _sip_is_valid_mrq(out):
            skips.skip()
            continue
        skips.sent()
        yield FuzzCase(out, f"scaip:{mutation}")
