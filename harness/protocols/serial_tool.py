"""`vtlab decode serial` / `vtlab encode serial`: read a capture (or write a frame) with a serial profile.

For a tester with a capture from a device's serial line and the vendor's documentation: write a profile,
then check it against the capture before any test runs.

    vtlab decode serial --profile fixtures/profiles/contact_id_printer.yaml capture.bin
    vtlab decode serial --profile P.yaml "24 4D 44 2C ... 0D 0A"      # hex, spaces allowed
    vtlab decode serial --profile P.yaml --text '$MD,DSP00042,0001,DUE,03,087*3D\\r\\n'
    vtlab encode serial --profile P.yaml dose_taken --field slot=03

Decode prints JSON: {"profile", "events": [...], "refused": [...]}; exit 0 when every frame decoded,
1 when any was refused (a finding), 2 for bad input (the profile or the argument).
"""

from __future__ import annotations

import argparse
import codecs
import json
import re
import sys
from pathlib import Path

from harness.errors import InputError, VtlabError
from harness.protocols.base import ProtocolError
from harness.protocols.serial_profile import ProfileCodec, Refused

_HEX = re.compile(r"(?:0x)?[0-9A-Fa-f]{2}(?:[\s:,-]*(?:0x)?[0-9A-Fa-f]{2})*")


def add_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """Add the arguments of `vtlab <verb> serial` (verb `decode` or `encode`) to `parser`."""
    parser.add_argument("--profile", required=True, help="serial profile YAML file (see fixtures/profiles/)")
    if verb == "decode":
        parser.add_argument("data", help="hex bytes (spaces allowed), a capture file, or - for standard input")
        parser.add_argument("--text", action="store_true", help="DATA is text with escapes such as \\r\\n")
    elif verb == "encode":
        parser.add_argument("event", help="the vtlab event to write, e.g. dose_taken")
        parser.add_argument("--field", action="append", default=[], metavar="NAME=VALUE", help="a field value")
        parser.add_argument("--raw", action="store_true", help="write the bytes themselves instead of JSON")
    else:
        raise ValueError(f"serial tool has no verb {verb!r}")
    parser.set_defaults(serial_verb=verb)


def read_input(data: str, *, text: bool = False) -> bytes:
    """The bytes a DATA argument stands for: text with escapes, `-`, an existing file, or hex."""
    if text:
        try:
            return codecs.decode(data, "unicode_escape").encode("latin-1")
        except (UnicodeError, ValueError) as exc:
            raise InputError(f"--text {data!r}: {exc}", place="command line", fix="check the escapes") from None
    if data == "-":
        return sys.stdin.buffer.read()
    path = Path(data)
    if path.is_file():
        return path.read_bytes()
    if _HEX.fullmatch(data.strip()):
        return bytes.fromhex(re.sub(r"0x|[\s:,-]", "", data.strip()))
    raise InputError(
        f"{data!r} is neither a file nor hex bytes",
        place="command line",
        fix="give a capture file, hex such as '24 4D 44', or --text with the frame as text",
    )


def decode(codec: ProfileCodec, data: bytes) -> dict[str, object]:
    """Every frame of `data`, decoded or refused, and what is left unfinished at the end."""
    events: list[dict[str, object]] = []
    refused: list[dict[str, object]] = []
    for item in codec.framer.push(data):
        if isinstance(item, Refused):
            refused.append({"reason": item.reason, "raw_hex": item.raw.hex()})
            continue
        try:
            events.append(codec.decode_frame(item).as_dict())
        except ProtocolError as exc:
            refused.append({"reason": exc.reason, "raw_hex": item.hex()})
    if codec.framer.busy and (rest := codec.framer.take_partial()):
        refused.append({"reason": f"input ends inside a frame ({len(rest)} bytes)", "raw_hex": rest.hex()})
    return {"profile": codec.profile.name, "events": events, "refused": refused}


def run(args: argparse.Namespace) -> int:
    try:
        codec = ProfileCodec.from_file(args.profile)
        if args.serial_verb == "encode":
            fields = {}
            for item in args.field:
                name, sep, value = item.partition("=")
                if not sep or not name:
                    raise InputError(f"--field {item!r} is not NAME=VALUE", place="command line", fix="e.g. slot=03")
                fields[name] = value
            frame = codec.encode(args.event, fields)
            if args.raw:
                sys.stdout.buffer.write(frame)
                sys.stdout.flush()
            else:
                text = frame.decode("latin-1")
                print(
                    json.dumps({"profile": codec.profile.name, "event": args.event, "hex": frame.hex(), "text": text})
                )
            return 0
        result = decode(codec, read_input(args.data, text=args.text))
    except VtlabError as exc:
        print(f"vtlab: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 1 if result["refused"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.protocols.serial_tool", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    for verb in ("decode", "encode"):
        add_arguments(sub.add_parser(verb, help=f"{verb} serial frames with a profile"), verb)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
