"""Security checks on the alarm-receiving interfaces: SIA DC-09 (replay, stale and future timestamps, wrong
key, unencrypted where encryption is required), SCAIP over SIP without TLS, and a FHIR push without a token.

DC-09's protection against replay is its timestamp window inside the encrypted part: a recording played
back later carries an old timestamp, and the receiver must answer NAK. A repeat inside the window is ACKed
by the standard (the transmitter's own retry) and must be de-duplicated; the `duplicates` metric covers that.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import socket
import urllib.error
from pathlib import Path
from typing import Any, Literal

from harness.errors import UnreachableError
from harness.protocols.base import ProtocolError
from harness.protocols.contact_id import ContactIdEvent, encode_adm_cid
from harness.protocols.dc09 import ADM_CID, DUH, NAK, DC09Message, FrameSplitter, Junk, encode_message, parse_frame
from harness.security.result import CheckResult, accepted, refused

Dc09Attempt = Literal["replay", "stale_timestamp", "future_timestamp", "wrong_key", "unencrypted", "unknown_account"]

EXPECTED_REPLY: dict[str, str] = {
    "replay": NAK,
    "stale_timestamp": NAK,
    "future_timestamp": NAK,
    "wrong_key": DUH,
    "unencrypted": DUH,
    "unknown_account": DUH,
}
"""What a receiver following DC-09 answers each attempt (PROTOCOLS.md section 2)."""


def dc09_frame(
    attempt: Dc09Attempt,
    account: str,
    key: bytes | None,
    *,
    receiver: str = "0",
    line: str = "0",
    age_s: float = 120.0,
    now: dt.datetime | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """The frame an attacker (or a broken clock) sends: a periodic test report (Contact ID 602, zone 000,
    never a zone vtlab's own alarms use) from `account`. Returns the bytes and what it is (no key)."""
    when = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    stamp = {
        "replay": when - dt.timedelta(seconds=age_s),
        "stale_timestamp": when - dt.timedelta(seconds=age_s),
        "future_timestamp": when + dt.timedelta(seconds=age_s),
    }.get(attempt, when)
    use_key: bytes | None = key
    if attempt == "wrong_key":
        size = len(key) if key else 16
        use_key = secrets.token_hex(size)[:size].encode()
        while key is not None and use_key == key:
            use_key = secrets.token_hex(size)[:size].encode()
    elif attempt in ("unencrypted", "unknown_account"):
        use_key = None  # an account the platform does not know has no key there either
    data = encode_adm_cid(ContactIdEvent(account, 1, "602", "01", "000"))
    msg = DC09Message(ADM_CID, secrets.randbelow(9999) + 1, account, data, receiver, line, timestamp=stamp)
    frame = encode_message(msg, use_key)
    what = {
        "attempt": attempt,
        "account": account,
        "id": ADM_CID,
        "sequence": msg.sequence,
        "timestamp": stamp.isoformat(),
        "encrypted": use_key is not None,
        "key": "a random key of the right length"
        if attempt == "wrong_key"
        else ("the device's key" if use_key is not None else "none"),
        **({"note": "an account the lab file gives no device"} if attempt == "unknown_account" else {}),
    }
    return frame, what


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def send_frame(address: str, frame: bytes, protocol: Literal["tcp", "udp"], timeout_s: float) -> bytes | None:
    """Send one frame and return the first reply frame (None: no reply before the deadline)."""
    host, port = _host_port(address)
    if protocol == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout_s)
            s.connect((host, port))
            s.send(frame)
            try:
                return s.recv(4096)
            except (TimeoutError, ConnectionRefusedError):
                return None
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise UnreachableError(
            f"nothing answers at {address} (DC-09): {exc.strerror or exc}",
            fix="check the DC-09 receiver address in the lab file",
        ) from None
    with sock:
        sock.sendall(frame)
        splitter = FrameSplitter()
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    return None
                for item in splitter.feed(data):
                    if not isinstance(item, Junk):
                        return item
        except (TimeoutError, OSError):
            return None


def dc09_check(
    address: str,
    attempt: Dc09Attempt,
    account: str,
    key: bytes | None,
    *,
    protocol: Literal["tcp", "udp"] = "tcp",
    receiver: str = "0",
    line: str = "0",
    age_s: float = 120.0,
    timeout_s: float = 3.0,
) -> CheckResult:
    """Send the attempt's frame; ACK is a finding, NAK/DUH (or silence) a refusal. The reply kind the
    standard prescribes is named beside the one seen."""
    frame, request = dc09_frame(attempt, account, key, receiver=receiver, line=line, age_s=age_s)
    request["address"] = f"{protocol}://{address}"
    reply = send_frame(address, frame, protocol, timeout_s)
    expected = EXPECTED_REPLY[attempt]
    if reply is None:
        return refused(
            f"no DC-09 reply within {timeout_s:g}s (expected {expected})",
            request,
            {"dc09_reply": None, "expected": expected},
        )
    try:
        head = parse_frame(reply)
        kind, raw = head.token, reply[:120].decode("ascii", "backslashreplace")
    except ProtocolError as exc:
        return refused(
            f"an unreadable reply ({exc.reason}); expected {expected}",
            request,
            {"dc09_reply": "unreadable", "expected": expected},
        )
    answer = {"dc09_reply": ("*" if head.encrypted else "") + kind, "expected": expected, "raw": raw}
    if kind == "ACK":
        return accepted(f"the receiver ACKed a {attempt.replace('_', ' ')} frame", request, answer)
    detail = f"{attempt.replace('_', ' ')} refused with {kind}"
    return refused(detail if kind == expected else f"{detail} (DC-09 prescribes {expected})", request, answer)


async def scaip_plain_check(address: str, cid: str, did: str | None, *, timeout_s: float = 3.0) -> CheckResult:
    """Send a SCAIP `<mrq>` in a plain SIP MESSAGE (TCP, then UDP) to an interface that must require TLS.
    A 2xx on either is a finding; no answer, a closed connection or a non-2xx status is a refusal."""
    from harness.transports.sip import ScaipDevice, ScaipSendError

    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise UnreachableError(
            f"nothing answers at {address} (SCAIP/SIP over TCP): {exc.strerror or exc}",
            fix="check the SCAIP address in the lab file",
        ) from None
    answers: dict[str, Any] = {}
    request: dict[str, Any] = {"address": address, "cid": cid, "did": did, "transports": ["tcp", "udp"], "stc": "0102"}
    for transport in ("tcp", "udp"):
        device = ScaipDevice(address, transport=transport, cid=cid)
        try:
            await asyncio.wait_for(device.start(), timeout_s)
            mrq = device.mrq(stc="0102", did=did) if did else device.mrq(stc="0102")
            result = await device.send(mrq, timeout=timeout_s, mrs_timeout=None)
            answers[transport] = {"sip_status": result.status}
            if 200 <= result.status < 300:
                return accepted(
                    f"the platform answered a plain SIP MESSAGE over {transport.upper()} with {result.status}",
                    request,
                    answers,
                )
        except ScaipSendError as exc:
            answers[transport] = {"sip_status": exc.status, "reason": exc.reason}
        except (TimeoutError, OSError, ConnectionError) as exc:
            answers[transport] = {"sip_status": None, "reason": type(exc).__name__}
        finally:
            await device.close()
    seen = ", ".join(f"{t}: {a.get('sip_status') or a.get('reason')}" for t, a in answers.items())
    return refused(f"plain SIP refused ({seen})", request, answers)


async def scaip_unknown_device_check(
    address: str, transport: str, cid: str, *, ssl_context: Any = None, timeout_s: float = 3.0
) -> CheckResult:
    """Send an alarm `<mrq>` from a SCAIP controller the platform does not know. An `<mrs>` with snu 0 (OK)
    is a finding (the platform took an alarm it cannot route); any other status number, a SIP error or no
    answer is a refusal. SS 91100 names snu 3 (wrong data content) for it."""
    from harness.transports.sip import ScaipDevice, ScaipSendError

    request: dict[str, Any] = {"address": f"{transport}://{address}", "cid": cid, "stc": "0010",
                               "note": "a controller id the lab file gives no device"}
    device = ScaipDevice(address, transport=transport, cid=cid, ssl_context=ssl_context)
    try:
        await asyncio.wait_for(device.start(), timeout_s)
        result = await device.send(device.mrq(stc="0010", did="1", dco="000"), timeout=timeout_s,
                                   mrs_timeout=timeout_s)
    except ScaipSendError as exc:
        return refused(f"unknown SCAIP device refused with SIP {exc.status}", request,
                       {"sip_status": exc.status, "reason": exc.reason, "expected": "snu 3"})
    except (TimeoutError, OSError, ConnectionError) as exc:
        return refused(f"no answer to an unknown SCAIP device ({type(exc).__name__})", request,
                       {"sip_status": None, "expected": "snu 3"})
    finally:
        await device.close()
    snu = int(result.mrs.snu) if result.mrs is not None and result.mrs.snu is not None else None
    answer = {"sip_status": result.status, "snu": snu, "expected": "snu 3"}
    if snu == 0:
        return accepted("the platform answered an unknown SCAIP device's alarm with snu 0 (OK)", request, answer)
    detail = f"unknown SCAIP device refused with snu {snu}" if snu is not None else "unknown SCAIP device: no <mrs>"
    return refused(detail if snu == 3 else f"{detail} (SS 91100 names snu 3)", request, answer)


def fhir_without_token_check(
    base_url: str,
    ca: Path | str | None,
    *,
    bundle: dict[str, Any] | None = None,
    timeout_s: float = 5.0,
    search: str = "DetectedIssue?_count=1",
) -> CheckResult:
    """Write and read without a token: POST a valid Bundle and GET a search (`search`, relative to
    `base_url`), neither with an Authorization header. 401 (or 403) is the refusal a FHIR server owes; a 2xx
    to either is a finding (anyone may record, or read the records); any other status is a refusal for
    another reason and says so (a read-only API answers a write with 405, a push-only one a search with
    404: only the other attempt then shows the protection)."""
    from harness.probes.epj import fhir_get, push_bundle
    from harness.protocols import vkp

    if bundle is None:
        patient = vkp.Ident(vkp.FNR_SYSTEM, "13896999876", "Syntetisk testbruker")
        device = vkp.Ident(vkp.DEVICE_SYSTEM, "vtlab-security-check")
        bundle = vkp.low_battery(patient, device, dt.datetime.now(dt.UTC))
    search_url = f"{base_url.rstrip('/')}/{search}"
    request = {
        "url": base_url,
        "attempts": ["POST Bundle (transaction)", f"GET {search}"],
        "authorization": "none",
    }
    try:
        push = push_bundle(base_url, bundle, None, ca, timeout_s=timeout_s)
        read = fhir_get(search_url, None, ca, timeout_s=timeout_s)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UnreachableError(
            f"nothing answers at {base_url}: {reason}", fix="check the platform's FHIR address in the lab file"
        ) from None
    opened = [(what, r) for what, r in (("push", push), ("search", read)) if 200 <= r.status < 300]
    decisive = opened[0][1] if opened else push
    answer: dict[str, Any] = {
        "http_status": decisive.status,
        "push_status": push.status,
        "search_status": read.status,
        "www_authenticate": next((v for k, v in decisive.headers.items() if k.lower() == "www-authenticate"), None),
        "diagnostics": (push.diagnostics + read.diagnostics)[:3],
    }
    if opened:
        what = " and ".join(w for w, _ in opened)
        return accepted(f"the FHIR API answered a {what} without a token with {decisive.status}", request, answer)
    statuses = {push.status, read.status}
    if statuses & {401, 403}:
        return refused(f"without a token: push {push.status}, search {read.status}", request, answer)
    return refused(
        f"without a token: push {push.status}, search {read.status} (a FHIR server owes 401)", request, answer
    )
