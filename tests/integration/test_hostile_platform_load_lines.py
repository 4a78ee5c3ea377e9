"""The load path's protocol ends (`harness.load.lines` devices and `harness.load.centres` receivers) under gevent
monkey patching, as in a locust process, against a hostile platform on real sockets: each alarm is answered the
way the platform pleases (junk, broken or duplicated replies, NAK for ever, silence, a 200 OK and no `<mrs>`,
XML with a DTD, a 2 GB Content-Length), and the centres are fed junk, endless lines and a platform that never
reads its answers. The ends run in a subprocess (`hostile_platform_under_gevent.py`); every alarm must be
reported exactly once, nothing may be held afterwards, and the next valid exchange must work."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.test_hostile_platform_replies import (
    BILLION_LAUGHS,
    FAST,
    Link,
    Platform,
    _quiet,
    dc09_reply,
    dc09_seq,
    mrq_ref,
    nak,
    sip_mrs,
    sip_ok,
    sip_platform,
)

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("hostile_platform_under_gevent.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def line(via: str, port: int, **args: Any) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(DRIVER), "line", via, "127.0.0.1", str(port), json.dumps(args)],
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]  # no greenlet died on what the platform sent
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


class Centre:
    """A load-path centre in its gevent subprocess; `report()` ends it and returns what it counted and holds."""

    def __init__(self, via: str, **args: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER), "centre", via, json.dumps(args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.port = int(json.loads(self.proc.stdout.readline())["port"])

    def report(self) -> dict[str, Any]:
        out, err = self.proc.communicate("report\n", timeout=30)
        assert self.proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        result: dict[str, Any] = json.loads(out.splitlines()[-1])
        # what the platform sent was refused for what it is, never for a bug of vtlab's (`NameError: ...`)
        bugs = [t for t in result["texts"] if re.search(r"sent: \w+(Error|Exception): ", t)]
        assert not bugs, bugs
        return result


def zone(frame_or_body: bytes) -> int:
    m = re.search(rb"\|\d{4} \d\d (\d{3})\]", frame_or_body) or re.search(rb"<dco>(\d+)</dco>", frame_or_body)
    assert m, frame_or_body
    return int(m.group(1))


def dc09_frame(seq: int, zone_: int, account: str = "1234") -> bytes:
    from harness.protocols.dc09 import crc16_arc

    now = time.gmtime()
    body = f'"ADM-CID"{seq:04d}R0L0#{account}[#{account}|1101 01 {zone_:03d}]'
    body += time.strftime("_%H:%M:%S,%m-%d-%Y", now)
    raw = body.encode()
    return b"\n" + f"{crc16_arc(raw):04X}{len(raw):04X}".encode() + raw + b"\r"


# --- the fleet's DC-09 transmitter -----------------------------------------------------------------

EXPECTED_DC09 = {1: "ACK", 2: "ACK", 3: "ACK", 4: "ACK", 5: "NAK", 6: None, 7: "DUH", 8: "ACK"}


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_a_dc09_line_reports_each_alarm_once_whatever_the_platform_answers(protocol: str) -> None:
    seen: dict[int, int] = {}

    def serve(link: Link) -> None:
        while (frame := link.frame()) is not None:
            if b'"NULL"' in frame:
                continue
            z, seq = zone(frame), dc09_seq(frame)
            seen[z] = seen.get(z, 0) + 1
            ack = dc09_reply("ACK", seq)
            if z == 1:
                link.send(secrets.token_bytes(300) + ack)
            elif z == 2:
                link.send(dc09_reply("ACK", seq, crc_delta=1) if seen[z] == 1 else ack)
            elif z == 3:
                link.send(dc09_reply("ACK", (seq + 4000) % 9999 + 1) + ack + ack + ack)
            elif z == 4:
                for i in range(0, len(ack), 3):
                    link.send(ack[i : i + 3])
                    time.sleep(0.003)
            elif z == 5:
                link.send(nak(__import__("datetime").datetime.now(__import__("datetime").UTC)))
            elif z == 7:
                link.send(dc09_reply("DUH", seq))
            elif z == 8:
                link.send(b"\n" + b"A" * (60000 if protocol == "udp" else 300_000))
                link.send(ack)

    platform = Platform(serve, protocol)
    try:
        got = line("dc09", platform.port, protocol=protocol, alarms=8, timeout_s=0.5, retries=2, wait_s=8)
    finally:
        platform.close()
    replies = got["replies"]
    assert {int(k[1:]) + 1: v[1]["reply"] for k, v in replies.items()} == EXPECTED_DC09, replies
    assert [replies[f"k{z - 1}"][0] for z in sorted(EXPECTED_DC09)] == [True] * 4 + [False] * 3 + [True]
    # the first frame and max_naks (2) corrected resends, no NAK ping-pong; a NAK names no sequence (0000), so
    # one may be charged to another alarm still in flight (zone 2's, waiting for its resend), never more
    assert 3 <= seen[5] <= 4
    assert seen[6] == 3  # the first frame and `retries` resends
    assert "reply_twice" not in got["states"] and got["states"].get("junk", 0) >= 3
    assert got["held"] == {"out": 0, "flight": 0, "refs": 0, "pending": 0, "buffered": 0}


def test_a_dc09_line_to_a_platform_that_never_reads_neither_blocks_nor_grows() -> None:
    stop = threading.Event()

    def serve(link: Link) -> None:
        stop.wait(30)

    platform = Platform(serve, rcvbuf=2048)
    try:
        got = line(
            "dc09", platform.port, alarms=300, pace_s=0, timeout_s=0.5, retries=1, wait_s=6,
            max_backlog=3000, write_stall_s=0.5,
        )  # fmt: skip
    finally:
        stop.set()
        platform.close()
    assert got["blocked"] < 0.1  # sending never waits for the platform
    assert got["held"]["out"] <= 3000 and got["dropped_bytes"] > 0
    assert len(got["replies"]) == 300 and not any(ok for ok, _ in got["replies"].values())
    assert got["states"].get("error", 0) >= 1


# --- the fleet's SCAIP device ----------------------------------------------------------------------


def test_a_scaip_line_reports_each_alarm_once_whatever_the_centre_answers() -> None:
    def answer(link: Link, h: dict[str, str], ref: str, n: int) -> None:
        port = link.sock.getsockname()[1]
        z = int(re.search(r"<dco>(\d+)</dco>", h.get("_body", "")).group(1)) if "_body" in h else 0  # type: ignore[union-attr]
        ok, mrs = sip_ok(h), sip_mrs(ref, "udp", port)
        if z == 1:
            link.send(secrets.token_bytes(500))
            link.send(ok)
            link.send(mrs)
        elif z == 2:
            link.send(ok)  # and no <mrs>, ever
        elif z == 3:
            link.send(ok)
            link.send(sip_mrs(ref, "udp", port, BILLION_LAUGHS))
            link.send(mrs)
        elif z == 4:
            link.send(sip_mrs("unknownref", "udp", port))
            for _ in range(2):
                link.send(ok)
                link.send(mrs)
        elif z == 5:
            link.send(sip_ok(h, length="2147483648") + b"x" * 1000)
            link.send(ok)
            link.send(mrs)
        # z == 6: no answer at all

    platform = sip_platform_with_body(answer)
    try:
        got = line("scaip", platform.port, transport="udp", alarms=6, timeout_s=1.5, wait_s=8)
    finally:
        platform.close()
    replies = got["replies"]
    assert sorted(replies) == [f"k{i}" for i in range(6)], replies
    assert [replies[f"k{i}"][0] for i in range(6)] == [True, False, True, True, True, False], replies
    assert "<mrs>" in replies["k1"][1]["error"]
    assert "reply_twice" not in got["states"] and got["states"].get("junk", 0) >= 3
    assert got["held"]["refs"] == 0


def sip_platform_with_body(answer: Any) -> Platform:
    """`sip_platform`, with the request's body handed over in the headers (`_body`) to pick a behaviour."""

    def serve(link: Link) -> None:
        n = 0
        while (msg := link.sip()) is not None:
            start, headers, body = msg
            if start.startswith("MESSAGE "):
                n += 1
                answer(link, {**headers, "_body": body.decode()}, mrq_ref(body), n)

    return Platform(serve, "udp")


def test_a_scaip_line_on_tcp_survives_a_2gb_content_length_and_sends_again() -> None:
    def answer(link: Link, h: dict[str, str], ref: str, n: int) -> None:
        if n == 1:
            with _quiet():
                link.send(sip_ok(h, length="2147483648") + b"x" * 100_000)
            return
        link.send(sip_ok(h) + sip_mrs(ref, "tcp", 5060))

    platform = sip_platform(answer, "tcp")
    try:
        got = line("scaip", platform.port, transport="tcp", alarms=2, pace_s=2.0, timeout_s=3.0, wait_s=5)
    finally:
        platform.close()
    replies = got["replies"]
    assert replies["k0"][0] is False and "connection lost" in replies["k0"][1]["error"]
    assert replies["k1"][0] is True, replies
    assert got["states"].get("lost") == 1 and got["states"].get("reconnected") == 1
    assert got["held"]["refs"] == 0 and got["held"]["buffered"] == 0


# --- the load path's response centres ----------------------------------------------------------------


def talk(port: int, data: bytes, *, expect_ack: bool = True, udp: bool = False) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(data)
        got = b""
        while expect_ack and b'"ACK"' not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_the_dc09_centre_keeps_serving_and_holds_nothing_for_connections_gone() -> None:
    centre = Centre("dc09", send_stall_s=0.5, sndbuf=4096)
    try:

        @FAST
        @given(st.binary(max_size=5000))
        def check(junk: bytes) -> None:
            got = talk(centre.port, junk + dc09_frame(1, 1))
            assert b'"ACK"0001' in got

        check()
        for _ in range(50):  # a frame start and an endless line, then the platform goes away
            with _quiet():
                talk(centre.port, b"\n0000" + b"B" * 20000, expect_ack=False)
        # a platform that sends 3000 frames and reads none of the ACKs: that connection is closed, not served
        # for ever, and a new connection is answered
        with socket.socket() as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            stuck.connect(("127.0.0.1", centre.port))
            stuck.settimeout(0.2)
            deadline = time.monotonic() + 10
            closed_by_centre = False
            i = 0
            while not closed_by_centre and time.monotonic() < deadline:  # until the centre hangs up on it
                i += 1
                try:
                    stuck.sendall(dc09_frame(i % 9999 + 1, 2))
                except TimeoutError:
                    continue
                except OSError:
                    closed_by_centre = True
            assert closed_by_centre, (i, time.monotonic() - deadline)
            assert b'"ACK"0001' in talk(centre.port, dc09_frame(1, 3))
    finally:
        report = centre.report()
    assert report["held"]["conns"] == 0 and report["held"]["splitters"] == 0
    assert report["held"]["greenlets"] == 1  # the accept loop alone
    assert report["counts"]["refused"] >= 50 and report["counts"].get("send_stalled") == 1
    assert ["d1", "101", "003"] in report["arrivals"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_the_scaip_centre_refuses_junk_dtds_and_huge_lengths_and_still_answers(transport: str) -> None:
    centre = Centre("scaip", transport=transport)
    udp = transport == "udp"
    t = transport.upper()
    try:
        for i in range(300):  # unsolicited junk, and SIP with a 2 GB Content-Length or a DTD in its <mrq>
            data = secrets.token_bytes(100)
            if i % 3 == 1:
                data = sip_request("ref" + str(i), t, centre.port, length="2147483648")
            elif i % 3 == 2:
                data = sip_request("ref" + str(i), t, centre.port, body=BILLION_LAUGHS.replace("mrs", "mrq"))
            with _quiet():
                talk(centre.port, data, expect_ack=False, udp=udp)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(("127.0.0.1", centre.port))
            good = sip_request("good1", t, s.getsockname()[1])
            s.sendall(good)
            s.settimeout(0.5)
            got = b""
            for _ in range(20):
                if b"<ref>good1</ref>" in got:
                    break
                try:
                    got += s.recv(65536)
                except TimeoutError:  # the kernel dropped it behind the flood: retransmit, as SIP over UDP does
                    s.sendall(good)
            assert b"SIP/2.0 200" in got
    finally:
        report = centre.report()
    assert ["d1", "101", "007"] in report["arrivals"] and len(report["arrivals"]) == 1
    assert report["counts"]["refused"] >= 200
    assert report["held"]["readers"] == 0 and report["held"]["conns"] == 0
    assert report["held"]["greenlets"] == 1


def sip_request(ref: str, transport: str, port: int, *, length: str | None = None, body: str | None = None) -> bytes:
    xml = (body or "<mrq><ref>{ref}</ref><cid>4711</cid><dty>0003</dty><stc>0010</stc><dco>007</dco></mrq>").format(
        ref=ref
    )
    branch = secrets.token_hex(8)
    return (
        f"MESSAGE sip:scaip@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK{branch}"
        f"\r\nMax-Forwards: 70\r\nFrom: <sip:4711@127.0.0.1:{port}>;tag={branch}\r\nTo: <sip:scaip@127.0.0.1>\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\nCSeq: 1 MESSAGE\r\nContent-Type: application/scaip+xml\r\n"
        f"Content-Length: {length or len(xml.encode())}\r\n\r\n{xml}"
    ).encode()
