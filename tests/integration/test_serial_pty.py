"""The serial transport against simulated devices on real pseudo-terminals (and a real TCP serial server):
events arrive stamped; garbage, a frame cut off, a flood, unplug and replug are findings and reading goes on."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.serial_sim import SimulatedSerialDevice
from harness.protocols.serial_profile import ProfileCodec
from harness.transports.serial import SerialFinding, SerialSettings, SerialTransport

ROOT = Path(__file__).resolve().parents[2]
DISPENSER_PATH = ROOT / "fixtures" / "profiles" / "medicine_dispenser.yaml"
DISPENSER = ProfileCodec.from_file(DISPENSER_PATH)
CID_PRINTER = ROOT / "fixtures" / "profiles" / "contact_id_printer.yaml"
DEADLINE = 5.0


class Findings:
    """Collects the transport's refusals and status changes; tests wait on them with deadlines."""

    def __init__(self) -> None:
        self.refused: list[tuple[bytes, str]] = []
        self.status: list[SerialFinding] = []
        self._cond = threading.Condition()

    def on_refused(self, raw: bytes, reason: str) -> None:
        with self._cond:
            self.refused.append((raw, reason))
            self._cond.notify_all()

    def on_status(self, finding: SerialFinding) -> None:
        with self._cond:
            self.status.append(finding)
            self._cond.notify_all()

    def wait_refused(self, count: int) -> list[tuple[bytes, str]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.refused) >= count, DEADLINE), self.refused
            return list(self.refused)

    def wait_status(self, kind: str, count: int = 1) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: sum(f.kind == kind for f in self.status) >= count, DEADLINE)
            assert ok, self.status


@pytest.fixture
def device(tmp_path: Path) -> Iterator[SimulatedSerialDevice]:
    dev = SimulatedSerialDevice(DISPENSER, link=tmp_path / "ttyDISPENSER")
    dev.plug_in()
    yield dev
    dev.unplug()


def _transport(path: str, findings: Findings, **kw: float) -> SerialTransport:
    settings = SerialSettings(path, baudrate=9600, frame_timeout=kw.pop("frame_timeout", 0.1), **kw)  # type: ignore[arg-type]
    return SerialTransport(settings, codec=DISPENSER, on_refused=findings.on_refused, on_status=findings.on_status)


def test_dispenser_events_arrive_with_monotonic_stamps(device):
    async def main() -> None:
        findings = Findings()
        transport = _transport(device.path, findings)
        await transport.connect(DEADLINE)
        try:
            names = DISPENSER.event_names
            before = time.monotonic_ns()
            for name in names:
                device.send(name)
            got = [await transport.receive(DEADLINE) for _ in names]
            after = time.monotonic_ns()
        finally:
            await transport.aclose()
        assert [a.event.event for a in got if a.event] == names
        stamps = [a.arrived_ns for a in got]
        assert stamps == sorted(stamps)
        assert before <= stamps[0] and stamps[-1] <= after
        assert [a.event.fields["seq"] for a in got if a.event] == [f"{i:04d}" for i in range(1, len(names) + 1)]
        assert transport.findings == [] and findings.refused == []

    asyncio.run(main())


def test_misbehaviour_is_recorded_and_reading_goes_on(device):
    async def main() -> None:
        findings = Findings()
        transport = _transport(device.path, findings, frame_timeout=0.3)
        await transport.connect(DEADLINE)
        try:
            device.send_garbage()
            device.send("dose_due")
            assert (await transport.receive(DEADLINE)).event.event == "dose_due"

            device.stop_mid_frame("dose_taken")  # ... and nothing more until the frame timeout
            findings.wait_refused(2)
            device.send("dose_taken")
            assert (await transport.receive(DEADLINE)).event.event == "dose_taken"

            device.flood(50 * DISPENSER.profile.framing.max_frame)
            device.write(b"\r\n")
            device.send("tamper")
            assert (await transport.receive(DEADLINE)).event.event == "tamper"

            bad = bytearray(DISPENSER.encode("dose_missed"))
            bad[5] ^= 0x01
            device.write(bytes(bad))
            device.send("lid_open")
            assert (await transport.receive(DEADLINE)).event.event == "lid_open"
        finally:
            await transport.aclose()
        kinds = [f.kind for f in transport.findings]
        assert kinds == ["malformed", "partial", "refused", "malformed"], transport.findings
        reasons = [r for _, r in findings.refused]
        assert "stopped mid-frame" in reasons[1]
        assert "max_frame" in reasons[2]
        assert "bad checksum" in reasons[3]
        flood_raw = findings.refused[2][0]
        assert len(flood_raw) <= DISPENSER.profile.framing.max_frame  # cut off, not buffered
        assert transport.frames == 4

    asyncio.run(main())


def test_unplug_and_replug_are_findings_and_reading_resumes(device):
    async def main() -> None:
        findings = Findings()
        transport = _transport(device.path, findings, reconnect_initial=0.02, reconnect_max=0.2)
        await transport.connect(DEADLINE)
        try:
            device.send("power_lost")
            assert (await transport.receive(DEADLINE)).event.event == "power_lost"
            device.stop_mid_frame("dose_due", keep=0.3)
            device.unplug()
            await asyncio.to_thread(findings.wait_status, "disconnected")
            assert not transport.connected
            device.plug_in()
            await asyncio.to_thread(findings.wait_status, "reconnected")
            device.send("power_restored")
            arrival = await transport.receive(DEADLINE)
            assert arrival.event.event == "power_restored"
            # a second unplug/replug cycle works the same way
            device.come_back()
            await asyncio.to_thread(findings.wait_status, "reconnected", 2)
            device.send("heartbeat")
            assert (await transport.receive(DEADLINE)).event.event == "heartbeat"
        finally:
            await transport.aclose()
        kinds = [f.kind for f in transport.findings]
        assert kinds.count("disconnected") == 2 and kinds.count("reconnected") == 2
        assert transport.disconnects == 2 and transport.reconnects == 2
        # the frame cut off by the unplug is reported, not silently dropped or glued to the next one
        assert any(f.kind == "partial" for f in transport.findings)

    asyncio.run(main())


def test_transport_waits_for_a_port_that_is_not_there_yet(tmp_path):
    async def main() -> None:
        dev = SimulatedSerialDevice(DISPENSER, link=tmp_path / "ttyLATE")
        findings = Findings()
        transport = _transport(dev.path, findings, reconnect_initial=0.02, reconnect_max=0.1)
        transport.start(asyncio.get_running_loop())
        try:
            assert not await asyncio.to_thread(transport.wait_connected, 0.2)
            dev.plug_in()
            assert await asyncio.to_thread(transport.wait_connected, DEADLINE)
            dev.send("dose_due")
            assert (await transport.receive(DEADLINE)).event.event == "dose_due"
        finally:
            await transport.aclose()
            dev.unplug()
        assert transport.findings == []  # never connected before: nothing was lost

    asyncio.run(main())


def test_round_trip_of_32_byte_frames_over_the_pty(tmp_path):
    """Counts frames that made it there and back (no timing assertions; benchmarks/ measures latency)."""
    n = 300

    async def main() -> int:
        dev = SimulatedSerialDevice(None, link=tmp_path / "ttyECHO", echo=True)
        dev.plug_in()
        transport = SerialTransport(SerialSettings(dev.path, baudrate=115200))
        await transport.connect(DEADLINE)
        ok = 0
        try:
            for i in range(n):
                frame = f"PING {i:06d} ".ljust(31, "x").encode() + b"\n"
                assert len(frame) == 32
                await transport.send(frame)
                arrival = await transport.receive(DEADLINE)
                ok += arrival.raw == frame[:-1]
        finally:
            await transport.aclose()
            dev.unplug()
        return ok

    assert asyncio.run(main()) == n


def test_socket_url_against_a_local_tcp_serial_server():
    """`socket://` (a serial device server on the network), here a local TCP server that prints Contact ID
    lines, drops the connection, and takes the reconnect."""
    codec = ProfileCodec.from_file(CID_PRINTER)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    lines = [codec.encode("personal_emergency"), codec.encode("low_battery")]
    served = threading.Event()

    def serve() -> None:
        for round_ in range(2):
            conn, _ = server.accept()
            with conn:
                conn.sendall(lines[round_])
                if round_ == 0:
                    conn.sendall(b"5678 18 1 101 01 015 1\n")  # wrong check digit
        served.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def main() -> SerialTransport:
        findings = Findings()
        settings = SerialSettings(f"socket://127.0.0.1:{port}", reconnect_initial=0.02, reconnect_max=0.1)
        transport = SerialTransport(settings, codec=codec, on_refused=findings.on_refused, on_status=findings.on_status)
        await transport.connect(DEADLINE)
        try:
            assert (await transport.receive(DEADLINE)).event.event == "personal_emergency"
            await asyncio.to_thread(findings.wait_status, "reconnected")
            assert (await transport.receive(DEADLINE)).event.event == "low_battery"
        finally:
            await transport.aclose()
        return transport

    try:
        transport = asyncio.run(main())
    finally:
        server.close()
        thread.join(timeout=DEADLINE)
    kinds = [f.kind for f in transport.findings]
    assert "malformed" in kinds and "disconnected" in kinds and "reconnected" in kinds


@pytest.mark.hardware
def test_real_serial_adapter_opens_and_reads():
    """On a lab bench: a real device on VTLAB_SERIAL_PORT (default /dev/ttyUSB0) sends at least one frame
    of VTLAB_SERIAL_PROFILE (default the medicine dispenser) within VTLAB_SERIAL_WAIT seconds."""
    port = os.environ.get("VTLAB_SERIAL_PORT", "/dev/ttyUSB0")
    if not os.path.exists(port):
        pytest.skip(f"no serial device at {port}")
    codec = ProfileCodec.from_file(os.environ.get("VTLAB_SERIAL_PROFILE", str(DISPENSER_PATH)))
    wait = float(os.environ.get("VTLAB_SERIAL_WAIT", "60"))
    baud = int(os.environ.get("VTLAB_SERIAL_BAUD", "9600"))
    transport = SerialTransport(SerialSettings(port, baudrate=baud), codec=codec)
    transport.start()
    try:
        assert transport.wait_connected(DEADLINE), transport.last_open_error
        arrival = transport.get(timeout=wait)
        assert arrival.event is not None
    finally:
        transport.close()
