"""Command-line verbs for SIA DC-09: send a message, run a receiver, decode frames. JSON out, one line each.

For `vtlab send dc09 ...`, `vtlab receive dc09 ...` and `vtlab decode dc09|cid ...`: the CLI calls
`add_arguments(parser, verb)` on the parser after the protocol word (for decode: after `decode`) and
`run(args)`. Usable before that as `python -m harness.protocols.dc09_tool send|receive|decode ...`.

Keys never go on the command line (they would end up in shell history and process lists): `--key-file PATH`
or `--key-env NAME`. The key is the AES key text itself, 16, 24 or 32 characters, as pysiaalarm and
dc09-spt take it.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import Any, Literal

from harness.protocols.base import ProtocolError
from harness.protocols.contact_id import ContactIdEvent, decode_adm_cid, decode_contact_id, encode_adm_cid
from harness.protocols.dc09 import (
    ADM_CID,
    KEY_SIZES,
    NULL,
    SIA_DCS,
    Account,
    DC09Message,
    DC09Reply,
    Decision,
    FrameSplitter,
    Junk,
    ReceiverPolicy,
    TransmitterState,
    decode,
)
from harness.protocols.sia_dcs import (
    SiaData,
    contact_id_to_sia,
    decode_sia_data,
    encode_sia_data,
    sia_event,
    sia_to_contact_id,
)

VERBS = ("send", "receive", "decode")


class ToolError(Exception):
    """A usage problem: the message says what to write instead."""


def add_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    if verb == "send":
        parser.add_argument("--to", required=True, metavar="HOST:PORT", help="the receiver (primary path)")
        parser.add_argument("--backup", metavar="HOST:PORT", help="backup path, tried when the primary fails")
        parser.add_argument("--udp", action="store_true", help="send over UDP (default TCP)")
        parser.add_argument("--account", required=True, help="account number, 3-16 hex digits")
        what = parser.add_mutually_exclusive_group(required=True)
        what.add_argument("--sia", metavar="CODE", help="SIA-DCS event code, e.g. MA, PA, FA, YT")
        what.add_argument("--cid", metavar="QXYZ", help="ADM-CID qualifier and event, e.g. 1101 (new, 101)")
        what.add_argument("--null", action="store_true", help="a NULL link test")
        parser.add_argument("--zone", default=None, help="zone (SIA address / Contact ID CCC)")
        parser.add_argument("--area", default=None, help="area / partition")
        parser.add_argument("--receiver", default="0", help="R field (hex), default 0")
        parser.add_argument("--line", default="0", help="L field (hex), default 0")
        parser.add_argument("--count", type=int, default=1, help="send the message this many times")
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply")
        parser.add_argument("--retries", type=int, default=2, help="resends per path after a timeout")
        parser.add_argument("--padding", choices=("random", "zeros"), default="random")
        _key_arguments(parser)
    elif verb == "receive":
        parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to listen on (TCP+UDP)")
        parser.add_argument("--account", action="append", default=[], help="an account served (repeatable)")
        parser.add_argument("--any-account", action="store_true", help="also accept unencrypted unknown accounts")
        parser.add_argument("--tcp-only", action="store_true")
        parser.add_argument("--udp-only", action="store_true")
        parser.add_argument("--count", type=int, default=0, help="stop after this many messages (0: run on)")
        parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run on)")
        parser.add_argument("--window-behind", type=float, default=40.0, help="seconds a timestamp may lag")
        parser.add_argument("--window-ahead", type=float, default=20.0, help="seconds a timestamp may lead")
        _key_arguments(parser)
    elif verb == "decode":
        parser.add_argument("kind", choices=("dc09", "cid"), help="dc09 frames or 16-digit Contact ID messages")
        parser.add_argument("input", help="hex of the bytes, the text itself, or a file holding either")
        _key_arguments(parser)
    else:
        raise ValueError(f"verb must be one of {VERBS}, not {verb!r}")
    parser.set_defaults(dc09_verb=verb)


def _key_arguments(parser: argparse.ArgumentParser) -> None:
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--key-file", metavar="PATH", help="file holding the AES key (16, 24 or 32 characters)")
    keys.add_argument("--key-env", metavar="NAME", help="environment variable holding the AES key")


def load_key(args: argparse.Namespace) -> bytes | None:
    text: str | None = None
    if getattr(args, "key_file", None):
        try:
            text = FsPath(args.key_file).read_text(encoding="ascii").strip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ToolError(f"--key-file {args.key_file}: cannot read an ASCII key ({exc})") from None
    elif getattr(args, "key_env", None):
        text = os.environ.get(args.key_env)
        if text is None:
            raise ToolError(f"--key-env {args.key_env}: the environment variable is not set")
    if text is None:
        return None
    key = text.encode("ascii", errors="replace")
    if len(key) not in KEY_SIZES:
        raise ToolError(f"the key has {len(key)} characters; DC-09 AES keys have 16, 24 or 32")
    return key


def _hostport(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ToolError(f"{flag} {text!r}: write HOST:PORT, e.g. 127.0.0.1:12128")
    return host or "127.0.0.1", int(port)


def content_json(content: SiaData | ContactIdEvent | None) -> dict[str, Any] | None:
    if isinstance(content, SiaData):
        ev = content.first
        mapped = sia_to_contact_id(ev.code)
        return {
            "sia": ev.code,
            "name": ev.description,
            "zone": ev.address,
            "area": ev.area,
            "user": ev.user,
            "account": content.account,
            "text": content.text,
            "contact_id": None if mapped is None else {"qualifier": mapped[0], "code": mapped[1]},
            "events": len(content.events),
        }
    if isinstance(content, ContactIdEvent):
        return {
            "contact_id": content.code,
            "qualifier": content.qualifier,
            "name": content.name,
            "partition": content.partition,
            "zone": content.zone,
            "account": content.account,
            "sia": contact_id_to_sia(content.qualifier, content.code),
        }
    return None


def event_json(event: DC09Message | DC09Reply) -> dict[str, Any]:
    token = event.token if isinstance(event, DC09Message) else event.kind
    out: dict[str, Any] = {
        "id": token,
        "sequence": event.sequence,
        "account": event.account,
        "receiver": event.receiver,
        "line": event.line,
        "data": event.data,
        "extended": [list(x) for x in event.extended],
        "timestamp": event.timestamp.isoformat() if event.timestamp else None,
        "encrypted": event.encrypted,
    }
    if isinstance(event, DC09Message) and event.data:
        try:
            if event.token == SIA_DCS:
                out["event"] = content_json(decode_sia_data(event.data))
            elif event.token == ADM_CID:
                out["event"] = content_json(decode_adm_cid(event.data))
        except ProtocolError as exc:
            out["event_error"] = exc.reason
    return out


def _text(raw: bytes) -> str:
    return raw.decode("ascii", errors="backslashreplace").replace("\n", "\\n").replace("\r", "\\r")


def decision_json(decision: Decision, arrived_ns: int, peer: tuple[str, int], sent: bytes) -> dict[str, Any]:
    msg = decision.message
    return {
        "arrived_utc": datetime.now(UTC).isoformat(),
        "arrived_ns": arrived_ns,
        "peer": f"{peer[0]}:{peer[1]}",
        "outcome": str(decision.outcome),
        "duplicate": decision.duplicate,
        "reason": decision.reason or None,
        "id": msg.token if msg else None,
        "account": msg.account if msg else None,
        "sequence": msg.sequence if msg else None,
        "timestamp": msg.timestamp.isoformat() if msg and msg.timestamp else None,
        "encrypted": msg.encrypted if msg else None,
        "event": content_json(decision.content),
        "reply": decision.reply.kind,
        "reply_sent": _text(sent),
    }


def _print(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=True), flush=True)


def _read_input(text: str, *, hex_allowed: bool = True) -> bytes:
    path = FsPath(text)
    if len(text) < 4096 and path.is_file():
        data = path.read_bytes()
        if not hex_allowed:
            return data
        stripped = data.strip()
        try:
            return binascii.unhexlify(b"".join(stripped.split()))
        except (binascii.Error, ValueError):
            return data
    compact = "".join(text.split())
    if not hex_allowed:
        return text.encode("utf-8", errors="replace")
    try:
        return binascii.unhexlify(compact)
    except (binascii.Error, ValueError):
        return text.encode("utf-8", errors="replace")


def run_decode(args: argparse.Namespace) -> int:
    data = _read_input(args.input, hex_allowed=args.kind == "dc09")
    bad = 0
    if args.kind == "cid":
        for line in data.decode("ascii", errors="replace").splitlines() or [""]:
            if not line.strip():
                continue
            try:
                ev = decode_contact_id(line)
            except ProtocolError as exc:
                bad += 1
                _print({"input": line, "error": exc.reason})
                continue
            _print(
                {
                    "input": line.strip(),
                    "account": ev.account,
                    "message_type": ev.message_type,
                    **(content_json(ev) or {}),
                }
            )
        return 1 if bad else 0
    key = load_key(args)
    if b"\n" not in data:
        data = b"\n" + data.strip(b"\r") + b"\r"  # a frame given without its LF and CR
    splitter = FrameSplitter()
    items: list[bytes | Junk] = splitter.feed(data)
    items.extend(splitter.close())
    for item in items:
        if isinstance(item, Junk):
            bad += 1
            _print({"raw": _text(item.raw), "error": item.reason})
            continue
        try:
            _print({"raw": _text(item), **event_json(decode(item, key))})
        except ProtocolError as exc:
            bad += 1
            _print({"raw": _text(item), "error": exc.reason, "offset": exc.offset})
    return 1 if bad else 0


async def _send(args: argparse.Namespace) -> int:
    from harness.transports.dc09 import DC09Transmitter, Path

    key = load_key(args)
    proto: Literal["tcp", "udp"] = "udp" if args.udp else "tcp"
    host, port = _hostport(args.to, "--to")
    backup = None
    if args.backup:
        bhost, bport = _hostport(args.backup, "--backup")
        backup = Path(bhost, bport, proto)
    try:
        state = TransmitterState(args.account, key, receiver=args.receiver, line=args.line, padding=args.padding)
        if args.null:
            token, data = NULL, ""
        elif args.sia:
            token = SIA_DCS
            data = encode_sia_data(None, [sia_event(args.sia.upper(), args.zone, area=args.area)])
        else:
            cid = args.cid
            if len(cid) != 4 or not cid.isdigit():
                raise ToolError(f"--cid {cid!r}: write the qualifier and event as 4 digits, e.g. 1101")
            token = ADM_CID
            data = encode_adm_cid(
                ContactIdEvent(None, int(cid[0]), cid[1:], f"{int(args.area or 0):02d}", f"{int(args.zone or 0):03d}")
            )
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    failures = 0
    async with DC09Transmitter(
        state, Path(host, port, proto), backup, timeout_s=args.timeout, retries=args.retries
    ) as tx:
        for _ in range(args.count):
            result = await tx.send(token, data)
            failures += 0 if result.acked else 1
            _print(
                {
                    "account": state.account,
                    "id": token,
                    "sequence": result.message.sequence,
                    "timestamp": result.message.timestamp.isoformat() if result.message.timestamp else None,
                    "encrypted": key is not None,
                    "reply": result.reply.kind if result.reply else None,
                    "round_trip_ms": None if result.round_trip_ns is None else result.round_trip_ns / 1e6,
                    "attempts": result.attempts,
                    "naks": result.naks,
                    "path": str(result.path) if result.path else None,
                    "error": result.error or None,
                }
            )
    return 1 if failures else 0


async def _receive(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from harness.transports.dc09 import DC09Receiver

    key = load_key(args)
    host, port = _hostport(args.listen, "--listen")
    if not args.account and not args.any_account:
        raise ToolError("name the accounts served with --account ACCT (or accept any with --any-account)")
    accounts = [Account(a, key) for a in args.account]
    policy = ReceiverPolicy(
        timedelta(seconds=args.window_behind),
        timedelta(seconds=args.window_ahead),
        accept_unknown_accounts=args.any_account,
    )
    done = asyncio.Event()
    seen = 0

    def on_message(decision: Decision, arrived_ns: int, peer: tuple[str, int], sent: bytes) -> None:
        nonlocal seen
        seen += 1
        _print(decision_json(decision, arrived_ns, peer, sent))
        if args.count and seen >= args.count:
            done.set()

    def on_refused(raw: bytes, reason: str) -> None:
        _print({"arrived_utc": datetime.now(UTC).isoformat(), "refused": reason, "raw": _text(raw[:512])})

    receiver = DC09Receiver(
        accounts,
        on_message,
        on_refused,
        host=host,
        port=port,
        policy=policy,
        tcp=not args.udp_only,
        udp=not args.tcp_only,
    )
    async with receiver:
        print(
            json.dumps(
                {"listening": f"{receiver.host}:{receiver.port}", "tcp": not args.udp_only, "udp": not args.tcp_only}
            ),
            file=sys.stderr,
            flush=True,
        )
        try:
            if args.duration:
                await asyncio.wait_for(done.wait(), args.duration)
            else:
                await done.wait()
        except TimeoutError:
            pass
    return 0


def run(args: argparse.Namespace) -> int:
    verb = getattr(args, "dc09_verb", None)
    try:
        if verb == "decode":
            return run_decode(args)
        if verb == "send":
            return asyncio.run(_send(args))
        if verb == "receive":
            return asyncio.run(_receive(args))
    except ToolError as exc:
        print(f"vtlab dc09: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    raise ValueError(f"unknown DC-09 verb {verb!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.protocols.dc09_tool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    for verb in VERBS:
        add_arguments(sub.add_parser(verb), verb)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
