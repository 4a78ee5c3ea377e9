"""A medicine dispenser that vtlab plays on a real pseudo-terminal, read by a gateway on the other end, through
the real session and engine to a MOCK platform (in this file) that turns the dispenser's events into
response-centre alarms on the in-memory bus. And a real device observed on a serial line: garbage, a frame cut
off, a flood and an unplug are findings in the evidence, and reading goes on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.serial_sim import SimulatedSerialDevice
from harness.evidence import EvidenceReader, EvidenceStore
from harness.labfile import Lab
from harness.links import Incoming, Refused
from harness.links import serial as serial_links
from harness.links.gateway import GatewayEvent
from harness.links.serial import SerialDeviceSettings, SerialGateway, SerialObserveLink, load_codec
from harness.scenario.registry import device_models
from harness.session import RunSession
from harness.tracking import Tracker
from tests.device_helpers import MockPlatform, device_lab, device_plugins, observations, run_scenario
from tests.helpers import Suite

pytestmark = pytest.mark.timeout(60)
DISPENSER = "dsp-solveig"


@pytest.fixture(autouse=True)
def plugins() -> Iterator[None]:
    with device_plugins():
        yield


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    serial_links.configure(
        DISPENSER,
        SerialDeviceSettings(profile="medicine_dispenser", port=str(tmp_path / "dsp"), device_serial="DSP00042"),
    )
    yield device_lab(tmp_path)
    serial_links.configure(DISPENSER, None)


class SerialMockPlatform(MockPlatform):
    """The MOCK platform with its gateway: reads the dispenser's pty like a home hub reads /dev/ttyUSB0."""

    def __init__(self, session: RunSession, lab: Lab, **kw: object) -> None:
        super().__init__(session, lab, **kw)  # type: ignore[arg-type]
        link = session.bed.device(DISPENSER).link  # the simulated dispenser is on its pty from here on
        assert isinstance(link, serial_links.SerialDeviceLink)
        settings = SerialDeviceSettings(profile="medicine_dispenser").transport_settings(link.path)
        self.gateway = SerialGateway(
            DISPENSER, device_models()["medicine_dispenser"], link.codec, settings, self.take, self.finding
        ).start()
        assert self.gateway.wait_connected(5.0)

    def close(self) -> None:
        self.gateway.close()


MISSED_DOSE = """
title: Glemt dose varsles hjemmetjenesten
covers: [TA-1.1]
devices:
  dispenser: {id: dsp-solveig}
repeat: 3
drain: 300ms
steps:
  - trigger: {device: dispenser, event: dose_missed}
  - expect_alarm: {from: dispenser, within: 2s}
criteria:
  - {metric: lost, count: "== 0"}
"""


def test_a_missed_dose_on_the_serial_dispenser_reaches_the_centre_it_is_routed_to(
    suite: Suite, tmp_path: Path, lab: Lab
) -> None:
    mocks: list[SerialMockPlatform] = []

    def platform(session: RunSession) -> SerialMockPlatform:
        mocks.append(SerialMockPlatform(session, lab))
        return mocks[0]

    m, _ = run_scenario(suite, tmp_path, lab, MISSED_DOSE, platform)
    assert m.counts["lost"] == 0 and m.counts["altered"] == 0 and m.counts["misrouted"] == 0
    assert m.latencies["alarm_latency"].arrived == 3
    events = mocks[0].events
    assert [e.event for e in events] == ["dose_missed"] * 3
    assert [e.zone for e in events] == ["001", "002", "003"]  # the frames' own sequence numbers
    assert all(e.raw.startswith("$MD,DSP00042,") and e.code == "981" for e in events)


def test_a_garbled_frame_is_lost_at_the_platform_and_the_others_arrive(suite: Suite, tmp_path: Path, lab: Lab) -> None:
    text = MISSED_DOSE.replace("steps:\n", "steps:\n  - device_fault: {device: dispenser, fault: garbled, count: 1}\n")
    text = text.replace("repeat: 3", "repeat: 1")
    mocks: list[SerialMockPlatform] = []

    def platform(session: RunSession) -> SerialMockPlatform:
        mocks.append(SerialMockPlatform(session, lab))
        return mocks[0]

    m, run_dir = run_scenario(suite, tmp_path, lab, text, platform)
    assert m.counts["lost"] == 1
    assert any("checksum" in f.reason for f in mocks[0].findings), mocks[0].findings
    assert any(o["kind"] == "fault" and "garbled" in o["text"] for o in observations(run_dir))


def test_a_platform_that_changes_the_event_code_is_altered(suite: Suite, tmp_path: Path, lab: Lab) -> None:
    def change(e: GatewayEvent) -> GatewayEvent:
        return GatewayEvent(e.t_ns, e.device, e.event, "100", e.zone, e.qualifier, e.priority)

    def platform(session: RunSession) -> SerialMockPlatform:
        return SerialMockPlatform(session, lab, alter=change)

    # the key carries the code: a changed code is an alarm vtlab cannot match, so it is lost, never guessed
    m, _ = run_scenario(suite, tmp_path, lab, MISSED_DOSE.replace("repeat: 3", "repeat: 1"), platform)
    assert m.counts["lost"] == 1

    def reprioritise(e: GatewayEvent) -> GatewayEvent:
        return GatewayEvent(e.t_ns, e.device, e.event, e.code, e.zone, e.qualifier, 5)

    m, _ = run_scenario(
        suite,
        tmp_path / "b",
        lab,
        MISSED_DOSE.replace("repeat: 3", "repeat: 2"),
        lambda s: SerialMockPlatform(s, lab, alter=reprioritise),
    )
    assert m.counts["altered"] == 2 and m.counts["lost"] == 0


# --- observing a real device -------------------------------------------------------------------------------------


class Collected:
    def __init__(self) -> None:
        self.events: list[Incoming] = []
        self.findings: list[Refused] = []
        self.cond = threading.Condition()

    def event(self, got: Incoming) -> None:
        with self.cond:
            self.events.append(got)
            self.cond.notify_all()

    def finding(self, bad: Refused) -> None:
        with self.cond:
            self.findings.append(bad)
            self.cond.notify_all()

    def wait(self, what: str, n: int, timeout: float = 5.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(getattr(self, what)) >= n, timeout), (
                what,
                self.events,
                self.findings,
            )


def test_an_observed_device_that_misbehaves_is_a_finding_and_reading_goes_on(tmp_path: Path) -> None:
    codec = load_codec("medicine_dispenser")
    device = SimulatedSerialDevice(load_codec("medicine_dispenser"), link=tmp_path / "ttyUSB-sim")
    device.plug_in()
    settings = SerialDeviceSettings(
        profile="medicine_dispenser", mode="observe", port=str(tmp_path / "ttyUSB-sim"), frame_timeout="200ms"
    )
    link = SerialObserveLink("dsp-real", device_models()["medicine_dispenser"], codec, settings)
    evidence = EvidenceStore.create(tmp_path / "run")
    tracker = Tracker(evidence)
    got = Collected()
    try:
        assert link.gateway.wait_connected(5.0)
        link.on_event(
            lambda g: (tracker.on_incoming("device:dsp-real", "device_event", g), got.event(g)),
            lambda bad: (tracker.on_refused("device:dsp-real", bad), got.finding(bad)),
        )
        device.send_garbage()
        device.stop_mid_frame("dose_missed")
        got.wait("findings", 2)
        device.flood(1000)
        device.write(b"\r\n")
        got.wait("findings", 3)
        device.send("dose_missed", {"slot": "04"})
        got.wait("events", 1)
        device.unplug()
        got.wait("findings", 4)
        device.plug_in()
        got.wait("findings", 5)  # reconnected: the port is back
        device.send("dose_taken")
        got.wait("events", 2)
        missed = link.wait_event(lambda g: g.fields["event"] == "dose_missed", 1.0)
        assert missed is not None and missed.key == f"dsp-real:981:{missed.fields['zone']}"
    finally:
        link.close()
        device.unplug()
        evidence.close()
    assert [e.fields["event"] for e in got.events] == ["dose_missed", "dose_taken"]
    reasons = " | ".join(f.reason for f in got.findings)
    assert "disconnected" in reasons and "mid-frame" in reasons, reasons
    reader = EvidenceReader(tmp_path / "run")
    try:
        kinds = [row["kind"] for row in reader.observations()]
    finally:
        reader.close()
    assert kinds.count("finding") >= 5


def test_an_observed_device_cannot_be_made_to_send(tmp_path: Path) -> None:
    from harness.errors import TargetError
    from harness.links import Outgoing

    device = SimulatedSerialDevice(load_codec("medicine_dispenser"), link=tmp_path / "tty")
    device.plug_in()
    link = SerialObserveLink(
        "dsp-real",
        device_models()["medicine_dispenser"],
        load_codec("medicine_dispenser"),
        SerialDeviceSettings(profile="medicine_dispenser", mode="observe", port=str(tmp_path / "tty")),
    )
    try:
        with pytest.raises(TargetError, match="observes"):
            link.send(Outgoing("c", "dsp-real", "u", "dose_missed", "981"))
    finally:
        link.close()
        device.unplug()
