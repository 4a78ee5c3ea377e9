"""`vtlab decode ble`: turn a captured advertisement or a GATT characteristic value into JSON.

    vtlab decode ble 020106 0a16d2fc4000c401643a01               an advertisement (AD structures)
    vtlab decode ble --adv 020106 0a16d2fc4000c401643a01         the same, said explicitly
    vtlab decode ble --uuid 2A35 1e8a0058007800000004...          a standard GATT value
    vtlab decode ble --uuid 911e0002-0c92-42e3-97bf-2a12643687cd 0101640100   vtlab's vendor alarm value
    vtlab decode ble --uuid 2A37 --file value.bin                 raw bytes from a file (or hex text in it)
    python -m harness.protocols.ble_tool decode --uuid 2A19 64

Hex may carry spaces, colons, dashes and a 0x or nRF Connect's "(0x)" prefix. An advertisement is decoded
as the scanner (`vtlab scan`) decodes it: AD structures, BTHome v2 (with --bthome-key and --address when
encrypted), vtlab's manufacturer data (company 0xFFFF) and vtlab's 128-bit alarm service.

Exit status: 0 decoded, 1 the bytes are malformed (the JSON says why and where), 2 bad input (not hex, an
unknown UUID ...). The CLI wiring (`vtlab decode`) calls `add_arguments(parser, verb)` and `run(args)`.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.protocols import ble_adv, ble_alarm, ble_health
from harness.protocols.base import MAX_FRAME_BYTES, ProtocolError


def add_arguments(parser: argparse.ArgumentParser, verb: str = "ble") -> None:
    """Arguments of `vtlab decode ble` (`verb` names the sub-command in help texts)."""
    parser.description = (
        f"decode {verb}: a BLE advertisement (AD structures, BTHome, vendor data), or a GATT characteristic value "
        "with --uuid, given as hex (spaces and colons allowed) or read from --file; prints JSON"
    )
    parser.add_argument("hex", nargs="*", help="the bytes as hex, e.g. 020106 or '02:01:06'")
    parser.add_argument("--file", type=Path, help="read the bytes from this file (raw bytes, or hex text)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--uuid", help=f"decode as this GATT characteristic (e.g. 2A35); known: {_known()}", metavar="UUID"
    )
    what.add_argument("--adv", action="store_true", help="the bytes are advertising data (the default)")
    parser.add_argument("--bthome-key", help="BTHome bind key (32 hex digits) to decrypt encrypted payloads")
    parser.add_argument("--address", help="advertiser address (AA:BB:CC:DD:EE:FF), needed to decrypt BTHome")


@dataclass(frozen=True, slots=True)
class _Vendor:
    name: str
    decode: Callable[[bytes], Any]
    to_json: Callable[[Any], dict[str, Any]]


VENDOR_CHARACTERISTICS = {
    ble_alarm.ALARM_UUID: _Vendor(ble_alarm.ALARM_NAME, ble_alarm.decode, ble_alarm.to_json),
}
"""128-bit characteristics vtlab's own devices serve (16-bit ones are the SIG's, decoded by ble_health)."""


def _known() -> str:
    return ", ".join([f"{u:04X}" for u in ble_health.supported_uuids()] + list(VENDOR_CHARACTERISTICS))


def _uuid128(text: str) -> str | None:
    """A 128-bit UUID in its dashed lower-case form (with or without dashes or braces given), else None."""
    digits = text.strip().strip("{}").replace("-", "").lower()
    if len(digits) != 32 or any(ch not in string.hexdigits for ch in digits):
        return None
    return f"{digits[0:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:32]}"


def _resolve(uuid: str) -> _Vendor | int:
    """The vendor decoder or the SIG 16-bit UUID for `uuid`; ValueError naming the known ones otherwise."""
    long = _uuid128(uuid)
    if long in VENDOR_CHARACTERISTICS:
        return VENDOR_CHARACTERISTICS[long]
    if long == ble_alarm.SERVICE_UUID:
        raise ValueError(
            f"{uuid} is the {ble_alarm.SERVICE_NAME}, not a characteristic; its value is on {ble_alarm.ALARM_UUID}"
        )
    try:
        key = ble_health.uuid16(uuid)
    except ValueError:
        raise ValueError(f"{uuid!r} is not a 16-bit UUID nor a known 128-bit one; known: {_known()}") from None
    if key not in ble_health.supported_uuids():
        raise ValueError(f"no decoder for characteristic 0x{key:04X}; known: {_known()}")
    return key


class _BadInput(ValueError):
    pass


def _hex(text: str, where: str) -> bytes:
    tokens = [t.removeprefix("0x").removeprefix("0X") for t in text.split() if t.lower() != "(0x)"]
    cleaned = "".join(ch for ch in "".join(tokens) if ch not in ":-")
    bad = next((ch for ch in cleaned if ch not in string.hexdigits), None)
    if not cleaned or bad is not None or len(cleaned) % 2:
        why = (
            "there are none"
            if not cleaned
            else f"{bad!r} is not a hex digit"
            if bad is not None
            else f"{len(cleaned)} digits is odd: a byte is two"
        )
        raise _BadInput(f"{where} is not an even number of hex digits ({why}); write bytes as hex, e.g. 1e8a00")
    return bytes.fromhex(cleaned)


def _input_bytes(args: argparse.Namespace) -> bytes:
    if args.file is not None and args.hex:
        raise _BadInput("give the bytes either as hex arguments or with --file, not both")
    if args.file is not None:
        try:
            raw = args.file.read_bytes()[: MAX_FRAME_BYTES + 1]
        except OSError as exc:
            raise _BadInput(f"{args.file}: cannot read it ({exc.strerror or exc})") from None
        try:
            text = raw.decode("ascii").strip()
            return _hex(text, str(args.file))
        except (UnicodeDecodeError, _BadInput):
            return raw
    if not args.hex:
        raise _BadInput("no bytes given; pass hex (e.g. 020106) or --file PATH")
    return _hex(" ".join(args.hex), "the argument")


def decode_to_json(
    data: bytes, *, uuid: str | None = None, bthome_key: bytes | None = None, address: str | None = None
) -> dict[str, Any]:
    """The JSON document `run` prints (ProtocolError for malformed bytes, ValueError for an unknown UUID)."""
    if uuid is not None:
        found = _resolve(uuid)
        if isinstance(found, _Vendor):
            value = found.decode(bytes(data))
            return {"kind": "gatt", "characteristic": found.name, "uuid": _uuid128(uuid), **found.to_json(value)}
        reading = ble_health.decode(found, data)
        out = ble_health.to_json(reading)
        if not isinstance(out, dict):
            out = {"value": out}
        return {"kind": "gatt", "characteristic": ble_health.characteristic_name(found), **out}
    decoded = ble_adv.decode_advertisement(data, bthome_key=bthome_key, address=address)
    return {"kind": "advertisement", **ble_adv.to_json(decoded)}


def run(args: argparse.Namespace) -> int:
    try:
        data = _input_bytes(args)
        key = _hex(args.bthome_key, "--bthome-key") if args.bthome_key else None
        if key is not None and len(key) != 16:
            raise _BadInput("--bthome-key must be 16 bytes (32 hex digits)")
        if args.uuid is not None:
            try:
                _resolve(args.uuid)
            except ValueError as exc:
                raise _BadInput(f"--uuid: {exc}") from None
        document = decode_to_json(data, uuid=args.uuid, bthome_key=key, address=args.address)
    except _BadInput as exc:
        print(f"vtlab decode ble: {exc}", file=sys.stderr)
        return 2
    except ProtocolError as exc:
        error = {"error": exc.reason, "protocol": exc.protocol, "offset": exc.offset, "input": data.hex()}
        print(json.dumps(error, indent=2, ensure_ascii=False))
        return 1
    except ValueError as exc:  # unknown characteristic
        print(f"vtlab decode ble: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.protocols.ble_tool")
    sub = parser.add_subparsers(dest="command", required=True)
    add_arguments(sub.add_parser("decode", help="decode a BLE advertisement or GATT value to JSON"), "ble")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
