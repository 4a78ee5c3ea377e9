"""The load path's protocol ends under gevent, as in a locust process, against a hostile platform that the test
runs: `line dc09|scaip HOST PORT ARGS_JSON` drives one fleet device's `Dc09Line`/`ScaipLine` and prints what it
reported; `centre dc09|scaip ARGS_JSON` serves a response centre on a fresh socket, prints its port, and on a
`report` line from stdin prints its counts and what it holds. Not a test module (no test_ prefix)."""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from gevent.os import make_nonblocking, nb_read  # noqa: E402

from harness.load import centres, lines  # noqa: E402
from harness.protocols.scaip import Mrq  # noqa: E402
from harness.transports.sip import new_ref  # noqa: E402


def emit(**fields: Any) -> None:
    print(json.dumps(fields, default=str), flush=True)


def run_line(via: str, host: str, port: int, args: dict[str, Any]) -> None:
    lines.WRITE_STALL_S = float(args.get("write_stall_s", lines.WRITE_STALL_S))
    lines.MAX_BACKLOG = int(args.get("max_backlog", lines.MAX_BACKLOG))
    replies: dict[str, Any] = {}
    states: Counter[str] = Counter()

    def on_reply(key: str, ok: bool, t_ns: int, detail: dict[str, Any]) -> None:
        if key in replies:
            states["reply_twice"] += 1
        replies[key] = [ok, detail]

    def on_state(state: str, detail: str) -> None:
        states[state] += 1

    timeout = float(args.get("timeout_s", 1.0))
    if via == "dc09":
        line: Any = lines.Dc09Line(
            "dev", "1234", host, port, protocol=args.get("protocol", "tcp"), timeout_s=timeout,
            retries=int(args.get("retries", 2)), on_reply=on_reply, on_state=on_state,
        )  # fmt: skip
    else:
        line = lines.ScaipLine(
            "dev", "4711", host, port, transport=args.get("transport", "udp"), on_reply=on_reply, on_state=on_state,
            answer_timeout_s=timeout,
        )  # fmt: skip
    line.connect()
    n = int(args["alarms"])
    t0 = time.monotonic()
    blocked = 0.0
    for i in range(n):
        started = time.monotonic()
        if via == "dc09":
            line.send_alarm("101", "1", f"{i + 1:03d}", f"k{i}")
        else:
            line.send_alarm(Mrq(ref=new_ref(), cid="4711", dty="0003", dco=f"{i + 1:03d}", stc="0010"), f"k{i}")
        blocked = max(blocked, time.monotonic() - started)
        gevent.sleep(float(args.get("pace_s", 0.02)))
    deadline = time.monotonic() + float(args.get("wait_s", 10.0))
    while len(replies) < n and time.monotonic() < deadline:
        gevent.sleep(0.05)
    gevent.sleep(float(args.get("linger_s", 0.0)))
    held = {"out": len(line._out), "flight": len(getattr(line, "_flight", {})), "refs": len(getattr(line, "_refs", {}))}
    held["pending"] = len(line.state.pending()) if via == "dc09" else 0
    held["buffered"] = line._splitter.buffered if via == "dc09" else line._stream.buffered
    emit(
        replies=replies, states=dict(states), held=held, took=time.monotonic() - t0, blocked=blocked,
        dropped_bytes=line.dropped_bytes, greenlets_alive=sum(1 for g in (line._reader, line._writer) if g),
    )  # fmt: skip
    line.close()


def run_centre(via: str, args: dict[str, Any]) -> None:
    centres.SEND_STALL_S = float(args.get("send_stall_s", centres.SEND_STALL_S))
    transport = args.get("transport", "tcp")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    if args.get("sndbuf"):  # accepted connections inherit it: a platform that reads nothing fills it soon
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(args["sndbuf"]))
    if transport == "tcp":
        sock.listen(64)
    arrivals: list[Any] = []
    findings: Counter[str] = Counter()
    texts: list[str] = []
    spec: dict[str, Any] = {
        "centre": "c1", "probe": "p1", "via": via, "transport": transport, "fd": sock.detach(),
        "users": {"d1": "u1"}, "accounts": {"1234": "d1"}, "devices": {"4711/": "d1"}, "stc_codes": {"0010": "101"},
    }  # fmt: skip
    centre: Any = centres.start_centre(
        spec, lambda probe, c, alarm, t, where: arrivals.append([alarm.device, alarm.code, alarm.zone]),
        lambda kind, text: (findings.update([kind]), texts.append(text)),
    )  # fmt: skip
    emit(port=centre.sock.getsockname()[1])
    make_nonblocking(sys.stdin.fileno())
    buf = b""
    while b"\n" not in buf:
        chunk = nb_read(sys.stdin.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
    gevent.sleep(0.2)
    held = {
        "conns": len(centre._conns), "greenlets": len(centre._greenlets),
        "splitters": len(getattr(centre, "_splitters", {})), "readers": len(getattr(centre, "_readers", {})),
        "buffered": sum(
            x.buffered for x in {**getattr(centre, "_splitters", {}), **getattr(centre, "_readers", {})}.values()
        ),
        "servers": centre.core.sip.transactions[1] if via == "scaip" else 0,
    }  # fmt: skip
    emit(arrivals=arrivals, counts=centre.counts, findings=dict(findings), texts=texts, held=held)
    centre.close()


def main() -> None:
    role, via = sys.argv[1], sys.argv[2]
    if role == "line":
        run_line(via, sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5]))
    else:
        run_centre(via, json.loads(sys.argv[3]))


if __name__ == "__main__":
    main()
