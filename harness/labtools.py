"""`vtlab send`, `receive`, `decode` and `encode`: the protocol tools of lab work, one sub-command per
protocol, each implemented beside its codec (harness/protocols/*_tool.py). Secrets come from files or
environment variables named on the command line, never from the command line itself."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

# verb -> protocol -> (module, the verb its add_arguments takes, defaults to set)
TOOLS: dict[str, dict[str, tuple[str, str, dict[str, Any]]]] = {
    "send": {
        "dc09": ("harness.protocols.dc09_tool", "send", {}),
        "scaip": ("harness.protocols.scaip_tool", "send", {}),
    },
    "receive": {
        "dc09": ("harness.protocols.dc09_tool", "receive", {}),
        "scaip": ("harness.protocols.scaip_tool", "receive", {}),
    },
    "decode": {
        "dc09": ("harness.protocols.dc09_tool", "decode-input", {"kind": "dc09", "dc09_verb": "decode"}),
        "cid": ("harness.protocols.dc09_tool", "decode-input", {"kind": "cid", "dc09_verb": "decode"}),
        "scaip": ("harness.protocols.scaip_tool", "decode", {}),
        "ble": ("harness.protocols.ble_tool", "ble", {}),
        "serial": ("harness.protocols.serial_tool", "decode", {}),
    },
    "encode": {
        "serial": ("harness.protocols.serial_tool", "encode", {}),
    },
}

HELP = {
    "send": "send one alarm, heartbeat or link test to an address and print the reply and round trip as JSON",
    "receive": "act as a receiving centre: print each message as one JSON line with the reply sent",
    "decode": "turn a captured frame, advertisement, GATT value or serial line into JSON",
    "encode": "write the bytes a device would send for an event",
}


def _module(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _dc09_decode_input(parser: argparse.ArgumentParser) -> None:
    from harness.protocols import dc09_tool

    parser.add_argument("input", help="hex of the bytes, the text itself, or a file holding either")
    dc09_tool._key_arguments(parser)


def register(subparsers: Any) -> None:
    for verb, protocols in TOOLS.items():
        verb_parser = subparsers.add_parser(verb, help=HELP[verb])
        inner = verb_parser.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
        for protocol, (module_name, tool_verb, defaults) in protocols.items():
            module = _module(module_name)
            if module is None:
                continue
            p = inner.add_parser(protocol, help=f"{verb} {protocol}", allow_abbrev=False)
            if tool_verb == "decode-input":
                _dc09_decode_input(p)
            else:
                module.add_arguments(p, tool_verb)
            run: Callable[[argparse.Namespace], int] = module.run
            p.set_defaults(func=run, **defaults)
