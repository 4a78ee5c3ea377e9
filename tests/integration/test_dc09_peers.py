"""DC-09 against independent implementations on loopback: pysiaalarm's receiver accepts vtlab's transmitter,
vtlab's receiver ACKs the dc09-spt dialler, and `vtlab send` / `vtlab receive` (the dc09_tool verbs) work
against each other. Mutated frames thrown at the asyncio receiver never stop it from ACKing valid ones."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path as FsPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.protocols.contact_id import ContactIdEvent, encode_adm_cid
from harness.protocols.dc09 import Account, Decision, Outcome, TransmitterState
from harness.protocols.sia_dcs import CID_TO_SIA, encode_sia_data, sia_event
from harness.transports.dc09 import DC09Receiver, DC09Transmitter, Path

ROOT = FsPath(__file__).resolve().parents[2]


def _need(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{module} is not installed (python3 tools/bootstrap.py --dev installs it)")


def run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro(), 30))


@pytest.mark.parametrize("key", [None, "AAAAAAAAAAAAAAAA", "0123456789ABCDEF01234567", "K" * 32])
def test_pysiaalarm_receiver_accepts_vtlab_transmitter(key: str | None) -> None:
    """Over TCP: pysiaalarm 3.2's UDP server fails an isinstance assert in connection_made on Python 3.11
    and never answers, so UDP is covered against vtlab's own receiver and dc09-spt instead."""
    protocol = "tcp"
    pysia = _need("pysiaalarm.aio")
    from pysiaalarm import CommunicationsProtocol, SIAAccount

    async def scenario() -> None:
        events: list[Any] = []
        got = asyncio.Event()

        async def on_event(event: Any) -> None:
            events.append(event)
            if len(events) == 3:
                got.set()

        port = _free_port()
        proto = CommunicationsProtocol.TCP if protocol == "tcp" else CommunicationsProtocol.UDP
        client = pysia.SIAClient("127.0.0.1", port, [SIAAccount("1234", key)], on_event, protocol=proto)
        await client.async_start()
        try:
            for padding in ("random", "zeros"):
                events.clear()
                got.clear()
                state = TransmitterState("1234", key.encode() if key else None, padding=padding)  # type: ignore[arg-type]
                async with DC09Transmitter(state, Path("127.0.0.1", port, protocol), timeout_s=3) as tx:  # type: ignore[arg-type]
                    r1 = await tx.send("SIA-DCS", encode_sia_data(None, [sia_event("MA", 1, area=1)]))
                    r2 = await tx.send("ADM-CID", encode_adm_cid(ContactIdEvent(None, 1, "101", "00", "004")))
                    r3 = await tx.poll()
                for r in (r1, r2, r3):
                    assert r.acked, r
                    assert r.reply is not None and r.reply.encrypted == (key is not None)
                    assert r.round_trip_ns is not None and r.round_trip_ns > 0
                await asyncio.wait_for(got.wait(), 5)
                assert [e.code for e in events] == ["MA", "QA", "RP"]
                assert events[1].ri == "004" and events[0].ri == "1"
        finally:
            await client.async_stop()

    run(scenario)


def test_mapping_agrees_with_pysiaalarms_adm_table() -> None:
    _need("pysiaalarm")
    from pysiaalarm.data.adm_mapping import ADM_MAPPING

    for cid, (alarm, restore) in CID_TO_SIA.items():
        if cid in ADM_MAPPING:  # 384 is ours, from the SIA code definitions
            assert ADM_MAPPING[cid] == {"1": alarm, "3": restore}, cid


def _free_port() -> int:
    import socket

    for _ in range(50):
        with socket.socket() as t, socket.socket(type=socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(port)
    raise OSError("no free port")


@pytest.mark.parametrize("ptype", ["TCP", "UDP"])
def test_dc09_spt_dialler_is_acked_by_vtlab_receiver(ptype: str) -> None:
    """dc09-spt writes SEQ in hex: only its first nine messages are valid DC-09, so the test sends two."""
    spt_mod = _need("dc09_spt.dc09_spt")

    async def scenario() -> None:
        decisions: list[Decision] = []
        refused: list[str] = []
        two = threading.Event()

        def on_message(d: Decision, arrived_ns: int, peer: tuple[str, int], sent: bytes) -> None:
            assert arrived_ns <= time.monotonic_ns()
            decisions.append(d)
            if len(decisions) >= 2:
                two.set()

        async with DC09Receiver([Account("1234")], on_message, lambda raw, why: refused.append(why)) as rx:
            spt = spt_mod.dc09_spt("1234", receiver=0, line=0)
            spt.set_path("main", "primary", "127.0.0.1", rx.port, type=ptype)
            spt.send_msg("SIA", {"code": "PA", "zone": "7", "area": "1"})
            spt.send_msg("CID", {"code": "101", "q": "1", "zone": "7"})
            assert await asyncio.to_thread(two.wait, 10), refused
            deadline = time.monotonic() + 10
            while spt.notSent() and time.monotonic() < deadline:  # the dialler's queue empties once ACKed
                await asyncio.to_thread(two.wait, 0.05)
            assert spt.notSent() == 0
            if spt.send is not None:
                await asyncio.to_thread(spt.send.join, 5)
        ok = [d for d in decisions if d.outcome is Outcome.ACCEPTED]
        assert len(ok) >= 2 and not refused
        codes = {getattr(d.content, "code", None) for d in ok} | {
            getattr(getattr(d.content, "first", None), "code", None) for d in ok
        }
        assert {"PA", "101"} <= codes

    run(scenario)


def test_vtlab_send_and_receive_against_each_other(tmp_path: FsPath) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("0123456789ABCDEF\n")
    port = _free_port()
    tool = [sys.executable, "-m", "harness.protocols.dc09_tool"]
    rx = subprocess.Popen(
        [
            *tool,
            "receive",
            "--listen",
            f"127.0.0.1:{port}",
            "--account",
            "1234",
            "--key-file",
            str(key_file),
            "--count",
            "3",
            "--duration",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert rx.stderr is not None
        assert "listening" in rx.stderr.readline()  # the receiver says when it is bound
        env = {**os.environ, "VT_DC09_KEY": "0123456789ABCDEF"}
        sends = [
            ["--sia", "MA", "--zone", "1", "--area", "1", "--key-file", str(key_file)],
            ["--cid", "1101", "--zone", "4", "--udp", "--key-env", "VT_DC09_KEY"],
            ["--null", "--key-env", "VT_DC09_KEY"],
        ]
        for extra in sends:
            out = subprocess.run(
                [*tool, "send", "--to", f"127.0.0.1:{port}", "--account", "1234", *extra],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=env,
                timeout=30,
                check=False,
            )
            assert out.returncode == 0, out.stderr
            line = json.loads(out.stdout)
            assert line["reply"] == "ACK" and line["encrypted"] is True
        stdout, _ = rx.communicate(timeout=30)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    lines = [json.loads(x) for x in stdout.splitlines()]
    assert [x["outcome"] for x in lines] == ["accepted"] * 3
    assert lines[0]["event"]["sia"] == "MA" and lines[0]["event"]["contact_id"] == {"qualifier": 1, "code": "100"}
    assert lines[1]["event"]["contact_id"] == "101" and lines[1]["event"]["sia"] == "QA"
    assert lines[2]["id"] == "NULL" and all(x["reply"] == "ACK" and "*ACK" in x["reply_sent"] for x in lines)


def test_key_on_the_command_line_is_not_accepted() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.protocols.dc09_tool",
            "send",
            "--to",
            "127.0.0.1:1",
            "--account",
            "1234",
            "--null",
            "--key",
            "0123456789ABCDEF",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2 and "error:" in out.stderr


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.binary(max_size=120), max_size=6),
    st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=3),
)
def test_asyncio_receiver_survives_junk_and_still_acks(chunks: list[bytes], edits: list[tuple[int, int]]) -> None:
    async def scenario() -> None:
        accepted = asyncio.Event()
        outcomes: list[Outcome] = []
        refused: list[str] = []

        def on_message(d: Decision, arrived_ns: int, peer: tuple[str, int], sent: bytes) -> None:
            outcomes.append(d.outcome)
            if d.outcome is Outcome.ACCEPTED and d.message is not None and d.message.data.endswith("FA9"):
                accepted.set()

        async with DC09Receiver(
            [Account("1234")], on_message, lambda raw, why: refused.append(why), max_frame_bytes=256
        ) as rx:
            state = TransmitterState("1234")
            good = bytearray(state.encode(state.message("SIA-DCS", "Nri1/MA1", _now())))
            for where, value in edits:
                if where < len(good):
                    good[where] = value
            _reader, writer = await asyncio.open_connection("127.0.0.1", rx.port)
            for chunk in [*chunks, bytes(good)]:
                writer.write(chunk)
            udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=("127.0.0.1", rx.port)
            )
            for chunk in chunks:
                udp.sendto(chunk or b"x")
            udp.close()
            writer.write(b"\n")  # whatever came before is cut off here
            writer.close()
            async with DC09Transmitter(
                TransmitterState("1234", start_sequence=500), Path("127.0.0.1", rx.port), timeout_s=3
            ) as tx:
                result = await tx.send("SIA-DCS", "Nri1/FA9")
            assert result.acked
            await asyncio.wait_for(accepted.wait(), 5)

    run(scenario)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
