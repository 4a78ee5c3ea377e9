"""`vtlab scan`: the BLE devices in radio range, one JSON line per device with its decoded advertisement.

Lab work starts with "what is on the air": which meters and alarm buttons advertise, under which address,
with which BTHome or manufacturer data, how strong. The radio is the system's adapter through bleak (the
default) or any Bumble transport (`--radio usb:0` for a USB controller, `tcp-client:HOST:PORT` for an HCI
bridge such as the one vtlab's own tests use). Each advertiser is printed once, when first seen, with the
number of reports and the strongest RSSI added at the end of the scan (`--all` prints every report).
A BTHome bind key comes from a file or an environment variable, never from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness.protocols import ble_adv
from harness.protocols.base import ProtocolError
from harness.units import parse_duration

MAX_SCAN_S = 600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--radio", help="a Bumble transport (usb:0, tcp-client:HOST:PORT, ...); "
                        "default: the system's adapter through bleak")
    parser.add_argument("--adapter", help="with bleak: the adapter name (e.g. hci1)")
    parser.add_argument("--for", dest="for_", default="10s", metavar="DURATION", help="how long to listen (10s)")
    parser.add_argument("--address", help="only this advertiser (AA:BB:CC:DD:EE:FF)")
    parser.add_argument("--all", action="store_true", help="print every advertising report, not one per device")
    parser.add_argument("--bthome-key-file", type=Path, help="file holding a BTHome bind key (32 hex digits)")
    parser.add_argument("--bthome-key-env", metavar="VAR", help="environment variable holding a BTHome bind key")


class _BadInput(Exception):
    pass


def _key(args: argparse.Namespace) -> bytes | None:
    text = None
    if args.bthome_key_file is not None:
        try:
            text = args.bthome_key_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise _BadInput(f"--bthome-key-file {args.bthome_key_file}: {exc}") from None
    elif args.bthome_key_env:
        text = os.environ.get(args.bthome_key_env)
        if text is None:
            raise _BadInput(f"--bthome-key-env {args.bthome_key_env}: the variable is not set")
    if text is None:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise _BadInput("a BTHome bind key is 32 hex digits")
    return key


def _central(args: argparse.Namespace) -> Any:
    from harness.transports.ble import BleakCentral, BumbleCentral

    if args.radio:
        return BumbleCentral(transport=args.radio, name="vtlab-scan")
    return BleakCentral(name="vtlab-scan", adapter=args.adapter)


def describe(address: str, data: bytes, rssi: int | None, connectable: bool, key: bytes | None) -> dict[str, Any]:
    """One advertisement as JSON: what the decoders made of it, or why they could not."""
    line: dict[str, Any] = {"address": address, "rssi": rssi, "connectable": connectable, "raw": data.hex()}
    try:
        line.update(ble_adv.to_json(ble_adv.decode_advertisement(data, bthome_key=key, address=address)))
    except ProtocolError as exc:  # a malformed advertisement is shown, never a crash of the scan
        line["error"] = exc.reason
    return line


def run(args: argparse.Namespace) -> int:
    try:
        seconds = parse_duration(args.for_) / 1e9
        if not 0 < seconds <= MAX_SCAN_S:
            raise _BadInput(f"--for {args.for_}: a scan lasts more than 0 s and at most {MAX_SCAN_S:g} s")
        key = _key(args)
    except _BadInput as exc:
        print(f"vtlab scan: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # parse_duration's InputError
        print(f"vtlab scan: --for {args.for_}: {exc}", file=sys.stderr)
        return 2
    try:
        central = _central(args)
    except Exception as exc:
        print(f"vtlab scan: cannot open the radio ({args.radio or 'bleak, the system adapter'}): {exc}",
              file=sys.stderr)
        return 2
    try:
        started = time.monotonic()
        reports = central.scan(seconds)
    except Exception as exc:
        hint = (" (no Bluetooth stack here: BlueZ over D-Bus is missing; use --radio usb:0 with a USB controller)"
                if not args.radio and "No such file" in str(exc) else "")
        print(f"vtlab scan: the scan failed: {exc}{hint}", file=sys.stderr)
        return 1
    finally:
        central.close()
    wanted = args.address.upper() if args.address else None
    seen: dict[str, dict[str, Any]] = {}
    for adv in reports:
        address = adv.address.upper()
        if wanted is not None and address != wanted:
            continue
        if args.all:
            print(json.dumps(describe(address, adv.data, adv.rssi, adv.connectable, key), ensure_ascii=False))
            continue
        entry = seen.get(address)
        if entry is None:
            seen[address] = entry = describe(address, adv.data, adv.rssi, adv.connectable, key)
            entry["reports"] = 0
            entry["first_seen_s"] = round((adv.arrived_ns / 1e9) - started, 3) if adv.arrived_ns else None
        entry["reports"] += 1
        if adv.rssi is not None and (entry["rssi"] is None or adv.rssi > entry["rssi"]):
            entry["rssi"] = adv.rssi
    for entry in seen.values():
        print(json.dumps(entry, ensure_ascii=False))
    print(f"vtlab scan: {len(seen) if not args.all else len(reports)} "
          f"{'devices' if not args.all else 'reports'} in {seconds:g} s", file=sys.stderr)
    return 0
