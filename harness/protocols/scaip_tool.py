"""`vtlab send scaip`, `vtlab receive scaip`, `vtlab decode scaip`: SCAIP by hand, JSON out.

    vtlab send scaip --to 127.0.0.1:5060 --cid 4711 --dty 0003 --stc 0010 [--transport udp|tcp|tls]
    vtlab receive scaip --listen 127.0.0.1:5060 [--transport udp|tcp|tls] [--count N]
    vtlab decode scaip HEX-OR-FILE

Each prints one JSON object per line (`receive`: one per message, with ref, cid, dty, stc, arrival
times and the reply sent), so a person can read it and a script can parse it. Secrets never go on the
command line: a digest password comes from `--password-file` or $VTLAB_SIP_PASSWORD, a TLS key's
password from $VTLAB_TLS_KEY_PASSWORD. The CLI calls `add_arguments(parser, verb)` and `run(args)`;
`python -m harness.protocols.scaip_tool VERB ...` does the same without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from harness.errors import InputError, VtlabError
from harness.protocols import scaip
from harness.protocols.base import ProtocolError
from harness.protocols.scaip import Geo, MessageType, Mrq, Mrs, StatusNumber
from harness.protocols.scaip_sip import Credentials
from harness.protocols.sip.events import Peer, Request
from harness.protocols.sip.message import parse_message
from harness.units import parse_duration

VERBS = ("send", "receive", "decode")
PASSWORD_ENV = "VTLAB_SIP_PASSWORD"
KEY_PASSWORD_ENV = "VTLAB_TLS_KEY_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """Add the options of `verb` (send, receive, decode) to `parser`."""
    if verb == "decode":
        parser.add_argument(
            "input",
            metavar="HEX-OR-FILE",
            help="hex bytes, a file, or - for stdin: an mrq/mrs document or a whole SIP message",
        )
        return
    if verb not in VERBS:
        raise ValueError(f"unknown verb {verb!r}")
    parser.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp", help="SIP transport (default udp)")
    tls = parser.add_argument_group("TLS (files only; a key password comes from $" + KEY_PASSWORD_ENV + ")")
    tls.add_argument("--ca", type=Path, help="CA certificate(s) to verify the peer with (PEM)")
    tls.add_argument("--cert", type=Path, help="own certificate (PEM)")
    tls.add_argument("--key", type=Path, help="own private key (PEM)")
    if verb == "send":
        parser.add_argument("--to", required=True, metavar="HOST:PORT", help="the response centre")
        parser.add_argument("--proxy", metavar="HOST:PORT", help="send through this outbound proxy")
        parser.add_argument(
            "--local", metavar="HOST:PORT", default="127.0.0.1:0", help="local address (default 127.0.0.1, any port)"
        )
        parser.add_argument("--cid", default="1", help="controller id, 1-16 digits")
        parser.add_argument("--dty", default="0003", help="device type (default 0003 personal trigger)")
        parser.add_argument("--stc", default="0010", help="status code (default 0010 manual alarm)")
        parser.add_argument("--mty", choices=[m.value for m in MessageType], default="ME", help="message type")
        parser.add_argument("--ref", help="reference (default: a fresh one per message)")
        parser.add_argument("--did", help="device id (at most 8 characters)")
        parser.add_argument("--dco", help="device component")
        parser.add_argument("--lco", help="location code")
        parser.add_argument("--geo", help="WGS84 position 'lat,lon'")
        parser.add_argument("--text", dest="stt", help="status text (at most 32 characters)")
        parser.add_argument("--count", type=int, default=1, help="messages to send (default 1)")
        parser.add_argument("--interval", default="1s", help="between messages (default 1s)")
        parser.add_argument("--timeout", default="40s", help="wait for the SIP final response (default 40s)")
        parser.add_argument("--mrs-timeout", default="10s", help="wait for the <mrs> after it (default 10s)")
        parser.add_argument("--user", help="digest username (password from --password-file or $" + PASSWORD_ENV + ")")
        parser.add_argument("--password-file", type=Path, help="file holding the digest password")
        parser.add_argument("--server-name", help="TLS: the name the centre's certificate must carry")
        parser.add_argument(
            "--insecure", action="store_true", help="TLS: do not verify the centre (say so in any report)"
        )
    else:
        parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="address to serve on (port 0: any)")
        parser.add_argument("--count", type=int, help="exit after this many messages")
        parser.add_argument("--duration", help="exit after this long (e.g. 30s)")
        parser.add_argument(
            "--snu", type=int, choices=range(8), default=0, help="status number to answer (default 0 OK)"
        )
        parser.add_argument("--hbi", type=int, choices=range(5), help="heartbeat interval code to answer with")
        parser.add_argument("--no-reply", action="store_true", help="answer 200 OK but send no <mrs>")
        parser.add_argument("--mrs-in-response", action="store_true", help="carry the <mrs> in the 200 OK body")
        parser.add_argument(
            "--require-client-cert", action="store_true", help="TLS: devices must show a certificate from --ca"
        )


def run(args: argparse.Namespace) -> int:
    """Run the verb named by `args.scaip_verb`, `args.verb` or `args.command` (the first set); 0 ok, 1 the
    peer failed or refused, 2 bad input (raised as `InputError`)."""
    verb = next((v for v in (getattr(args, n, None) for n in ("scaip_verb", "verb", "command")) if v in VERBS), None)
    if verb == "decode":
        return _decode(args)
    if verb == "send":
        return asyncio.run(_send(args))
    if verb == "receive":
        return asyncio.run(_receive(args))
    raise InputError(f"unknown verb {verb!r}", place="command line", fix=f"write one of {', '.join(VERBS)}")


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, sort_keys=False) + "\n")
    sys.stdout.flush()


def _utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(text: str, option: str) -> float:
    return parse_duration(text, place=f"command line {option}") / 1e9


# --- decode --------------------------------------------------------------------------------------


def read_input(text: str) -> bytes:
    """`-` (stdin), an existing file, or hex digits (spaces and colons allowed)."""
    if text == "-":
        return sys.stdin.buffer.read(1 << 20)
    path = Path(text)
    try:
        if path.is_file():
            return path.read_bytes()[: 1 << 20]
    except OSError:
        pass  # a name too long for a file: hex digits, then
    compact = "".join(text.split()).replace(":", "")
    try:
        return bytes.fromhex(compact)
    except ValueError:
        raise InputError(
            f"{text[:40]!r} is neither a file nor hex bytes",
            place="command line",
            fix="give a file name, - for stdin, or the bytes in hex (3c6d72713e...)",
        ) from None


def decode_bytes(data: bytes) -> dict[str, Any]:
    """JSON-ready decoding of a SCAIP document or of a whole SIP message carrying one."""
    out: dict[str, Any] = {}
    body = data
    head = data.lstrip()[:16]
    if not head.startswith(b"<"):
        msg = parse_message(data)
        if isinstance(msg, Request):
            out["sip"] = {"method": msg.method, "uri": msg.uri}
        else:
            out["sip"] = {"status": msg.status, "reason": msg.reason}
        out["sip"]["headers"] = [[n, v] for n, v in msg.headers]
        body = msg.body
    out["scaip"] = scaip.to_json(scaip.decode(body)) if body else None
    return out


def _decode(args: argparse.Namespace) -> int:
    data = read_input(args.input)
    try:
        _emit(decode_bytes(data))
        return 0
    except ProtocolError as exc:
        _emit(
            {
                "error": exc.reason,
                "protocol": exc.protocol,
                "element": getattr(exc, "element", None),
                "snu": int(exc.snu) if isinstance(exc, scaip.ScaipError) else None,
            }
        )
        return 1


# --- send ----------------------------------------------------------------------------------------


def _client_tls(args: argparse.Namespace) -> Any:
    from harness.transports.sip import client_ssl_context

    if args.transport != "tls":
        return None
    return client_ssl_context(
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        verify=not args.insecure,
        key_password=os.environ.get(KEY_PASSWORD_ENV),
    )


def _credentials(args: argparse.Namespace) -> Credentials | None:
    if not args.user:
        return None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise InputError(
                f"cannot read {args.password_file}: {exc.strerror}",
                place="command line --password-file",
                fix="name a readable file that holds the password",
            ) from None
    elif PASSWORD_ENV in os.environ:
        password = os.environ[PASSWORD_ENV]
    else:
        raise InputError(
            "--user given without a password",
            place="command line",
            fix=f"put the password in a file (--password-file) or in ${PASSWORD_ENV}",
        )
    return Credentials(args.user, password)


def _build_mrq(args: argparse.Namespace, ref: str) -> Mrq:
    try:
        return Mrq(
            ref=ref,
            cid=args.cid,
            dty=args.dty,
            mty=MessageType(args.mty),
            stc=None if args.mty == "PI" else args.stc,
            did=args.did,
            dco=args.dco,
            lco=args.lco,
            stt=args.stt,
            lge=Geo(geo=args.geo) if args.geo else None,
        )
    except scaip.ScaipError as exc:
        raise InputError(
            exc.reason,
            place=f"command line --{exc.element or 'mrq'}",
            fix="see `vtlab send scaip --help` for each field's form",
        ) from None


async def _send(args: argparse.Namespace) -> int:
    from harness.transports.sip import ScaipDevice, ScaipSendError, new_ref, parse_hostport

    local_host, local_port = parse_hostport(args.local, args.transport)
    timeout = _seconds(args.timeout, "--timeout")
    mrs_timeout = _seconds(args.mrs_timeout, "--mrs-timeout")
    interval = _seconds(args.interval, "--interval")
    credentials = _credentials(args)
    mrqs = [
        _build_mrq(args, args.ref if args.ref and args.count == 1 else new_ref()) for _ in range(max(args.count, 0))
    ]
    failures = 0
    device = ScaipDevice(
        args.to,
        transport=args.transport,
        cid=args.cid,
        local_host=local_host,
        local_port=local_port,
        proxy=args.proxy,
        ssl_context=_client_tls(args),
        server_hostname=args.server_name,
        credentials=credentials,
    )
    async with device:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for i, mrq in enumerate(mrqs):
            line: dict[str, Any] = {
                "ref": mrq.ref,
                "cid": mrq.cid,
                "dty": mrq.dty,
                "stc": mrq.stc,
                "mty": mrq.mty.value if mrq.mty else None,
                "to": args.to,
                "transport": args.transport,
                "sent_utc": _utc(),
            }
            try:
                result = await device.send(mrq, timeout=timeout, mrs_timeout=mrs_timeout)
            except ScaipSendError as exc:
                failures += 1
                line.update(status=exc.status, error=exc.reason)
            except TimeoutError:
                failures += 1
                line.update(status=None, error=f"no final response within {args.timeout}")
            else:
                line.update(
                    status=result.status,
                    sip_round_trip_ms=result.sip_round_trip_ns / 1e6,
                    authenticated=result.authenticated,
                )
                if result.mrs is None:
                    failures += 1
                    line.update(mrs=None, error=f"no <mrs> within {args.mrs_timeout}")
                else:
                    assert result.mrs_round_trip_ns is not None
                    line.update(
                        mrs=scaip.to_json(result.mrs),
                        mrs_round_trip_ms=result.mrs_round_trip_ns / 1e6,
                        mrs_carrier=result.carrier,
                    )
                    if not result.mrs.ok:
                        failures += 1
            _emit(line)
            if i + 1 < len(mrqs):
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - loop.time()))  # pacing between messages
        for refused in device.refused:
            _emit(
                {
                    "refused": refused.reason,
                    "peer": f"{refused.peer[0]}:{refused.peer[1]}",
                    "raw_hex": refused.raw[:512].hex(),
                }
            )
    return 1 if failures else 0


# --- receive -------------------------------------------------------------------------------------


async def _receive(args: argparse.Namespace) -> int:
    from harness.transports.sip import Arrival, ScaipReceiver, parse_hostport, server_ssl_context

    host, port = parse_hostport(args.listen, args.transport)
    ssl_ctx = None
    if args.transport == "tls":
        if args.cert is None or args.key is None:
            raise InputError(
                "TLS needs a certificate and a key", place="command line", fix="add --cert FILE --key FILE"
            )
        ssl_ctx = server_ssl_context(
            args.cert,
            args.key,
            ca=args.ca,
            require_client_cert=args.require_client_cert,
            key_password=os.environ.get(KEY_PASSWORD_ENV),
        )
    done = asyncio.Event()
    seen = 0

    def decide(mrq: Mrq, arrived_ns: int, peer: Peer) -> Mrs | None:
        if args.no_reply:
            return None
        return scaip.reply_for(mrq, StatusNumber(args.snu), hbi=args.hbi)

    def arrival(a: Arrival) -> None:
        nonlocal seen
        seen += 1
        m = a.mrq
        _emit(
            {
                "ref": m.ref,
                "cid": m.cid,
                "dty": m.dty,
                "dty_name": m.device_type_name,
                "stc": m.stc,
                "stc_name": m.status_code_name,
                "mty": m.mty.value if m.mty else None,
                "did": m.did,
                "peer": f"{a.peer[0]}:{a.peer[1]}",
                "arrived_ns": a.arrived_ns,
                "arrived_utc": _utc(),
                "replied_ns": a.replied_ns,
                "reply": scaip.to_json(a.reply) if a.reply else None,
                "mrq": scaip.to_json(m),
            }
        )
        if args.count is not None and seen >= args.count:
            done.set()

    def refused(raw: bytes, reason: str) -> None:
        _emit({"refused": reason, "raw_hex": raw[:512].hex(), "arrived_utc": _utc()})

    receiver = ScaipReceiver(
        host=host,
        port=port,
        transport=args.transport,
        on_message=decide,
        on_refused=refused,
        on_arrival=arrival,
        ssl_context=ssl_ctx,
        mrs_in_response=args.mrs_in_response,
    )
    async with receiver:
        _emit(
            {
                "listening": f"{host}:{receiver.port}",
                "transport": args.transport,
                "started_utc": _utc(),
                "monotonic_ns": time.monotonic_ns(),
            }
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, done.set)
        timeout = _seconds(args.duration, "--duration") if args.duration else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        replied = sum(1 for a in receiver.arrivals if a.reply is not None)
        with contextlib.suppress(TimeoutError):  # let the devices confirm the last <mrs> before closing
            await receiver.wait_for(lambda r: len(r.delivered) >= replied, 2.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.protocols.scaip_tool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="scaip_verb", required=True)
    for verb in VERBS:
        add_arguments(sub.add_parser(verb, help=f"{verb} SCAIP"), verb)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except VtlabError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
