"""BLE devices on a real radio, tested exactly as a real controller is used: a Bumble `Controller` joins the
emulated LocalLink and serves its HCI over TCP (AirBridge, the same bridge the reference lab's gateway opens),
and vtlab opens it as `radio: tcp-client:127.0.0.1:PORT`, as it would open `usb:0` or `hci-socket:0`.

- A simulated peripheral on that radio runs its own Bumble host; a gateway (a BumbleCentral on another
  controller of the same air) connects, pairs and gets its readings and alarms, through the real session and
  engine to a MOCK platform (tests.device_helpers) that forwards what its gateway read to the response centre.
- `mode: observe`: a Bumble peripheral on the air stands in for a real device; vtlab's observer listens on a
  tcp-client radio, `observe_event` takes the event the tester provoked as the stimulus and `expect_alarm`
  measures from it. The tester's hand is played by the test: when the scenario waits for the device, it
  presses the stand-in's button.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.errors import InputError, TargetError
from harness.lab.ble_bridge import AirBridge
from harness.labfile import Lab
from harness.links import Outgoing
from harness.links import ble as ble_links
from harness.links.ble import AdvertisementGateway, BleDeviceLink, BleDeviceSettings, BleGateway, BleObserveLink
from harness.links.gateway import GatewayEvent, MeasuredOutgoing, measured_now
from harness.scenario.registry import device_models
from harness.session import RunSession
from harness.transports.ble import BumbleCentral
from tests.device_helpers import MockPlatform, device_lab, device_plugins, matches, observations, run_scenario
from tests.helpers import Suite

pytestmark = pytest.mark.timeout(120)
METER, BUTTON, REAL = "bp-solveig", "knapp-solveig", "knapp-ekte"
METER_ADDRESS, BUTTON_ADDRESS, REAL_ADDRESS = "C0:00:00:00:AA:11", "C0:00:00:00:AA:12", "C0:00:00:00:EE:01"
READINGS = {
    "systolic": (Decimal("182"), "mmHg"),
    "diastolic": (Decimal("95"), "mmHg"),
    "pulse": (Decimal("71"), "bpm"),
}


@pytest.fixture(autouse=True)
def plugins() -> Iterator[None]:
    with device_plugins():
        yield


@pytest.fixture
def radio(request: pytest.FixtureRequest) -> Iterator[str]:
    """The emulated air; what is on it besides the bridges is the "other side" (gateway, or real device)."""
    name = f"emulated:real-{request.node.name[:40]}"
    yield name
    ble_links.release_air(name)


@pytest.fixture
def bridges(radio: str) -> Iterator[list[AirBridge]]:
    """HCI bridges into the air: each is one controller, opened as `tcp-client:127.0.0.1:PORT`."""
    made: list[AirBridge] = []
    yield made
    for bridge in made:
        bridge.close()


def controller(radio: str, bridges: list[AirBridge], name: str) -> str:
    bridge = AirBridge(ble_links.air(radio), name)
    bridges.append(bridge)
    return bridge.spec


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- 1. a simulated peripheral on a real controller ---------------------------------------------------------


def test_a_meter_on_a_tcp_controller_is_read_by_a_gateway_on_the_same_air(radio: str, bridges: list[AirBridge]) -> None:
    model = device_models()["blood_pressure_meter"]
    spec = controller(radio, bridges, "meter-radio")
    settings = BleDeviceSettings(radio=spec, address=METER_ADDRESS, profile="blood_pressure", hold="5s")
    meter = BleDeviceLink(METER, model, None, settings)
    central = BumbleCentral(link=ble_links.air(radio), name="gateway")
    got: queue.Queue[GatewayEvent] = queue.Queue()
    gateway = BleGateway(central, METER, METER_ADDRESS, model, got.put, lambda bad: None)
    try:
        assert meter.peripheral._link is None and meter.peripheral._transport is not None  # its own host on HCI
        assert meter.address == METER_ADDRESS
        gateway.start()
        assert gateway.subscribed.wait(10)
        measured = measured_now()
        meter.send(MeasuredOutgoing("c1", METER, "u", "measurement", "995", readings=READINGS, measured=measured))
        event = got.get(timeout=10)
    finally:
        gateway.close()
        meter.close()
        central.close()
    assert event.readings == READINGS and event.measured is not None and event.measured + "Z" == measured


@pytest.mark.parametrize("report", ["notification", "manufacturer"])
def test_an_alarm_button_on_a_tcp_controller_reaches_a_gateway(
    radio: str, bridges: list[AirBridge], report: str
) -> None:
    """By notification: the gateway connects, pairs (the button refuses an unencrypted subscription) and is
    notified; by advertisement: the gateway hears the manufacturer data. Three presses, three counters."""
    model = device_models()["alarm_button"]
    spec = controller(radio, bridges, "button-radio")
    button = BleDeviceLink(BUTTON, model, None, BleDeviceSettings(radio=spec, address=BUTTON_ADDRESS, report=report))
    central = BumbleCentral(link=ble_links.air(radio), name="gateway")
    got: queue.Queue[GatewayEvent] = queue.Queue()
    findings: list[Any] = []
    gateway = AdvertisementGateway(central, {BUTTON_ADDRESS: (BUTTON, model)}, got.put, findings.append).start()
    try:
        if report == "notification":
            assert gateway.subscribed.wait(15), findings
            assert central.is_encrypted
        events = []
        for n in range(3):
            button.send(Outgoing(f"c{n}", BUTTON, "u", "personal_emergency", "101"))
            events.append(got.get(timeout=10))
    finally:
        gateway.close()
        button.close()
        central.close()
    assert [(e.event, e.code, e.zone) for e in events] == [("personal_emergency", "101", f"{n:03d}") for n in (1, 2, 3)]


LAB_METER = """
title: Blodtrykk fra en simulert måler på en ekte radio kommer uendret fram
covers: [TA-2.2]
devices:
  bt-meter: {id: bp-solveig}
repeat: 2
drain: 300ms
steps:
  - measure: {device: bt-meter, systolic: 182 mmHg, diastolic: 95 mmHg, pulse: 71 bpm}
  - expect_reading: {from: bt-meter, within: 5s}
criteria:
  - {metric: lost, count: "== 0"}
"""


class GatewayOnTheAir(MockPlatform):
    """The MOCK platform whose gateway is a BumbleCentral on the emulated air (another controller than the
    meter's): the supplier's gateway in a real delivery."""

    def __init__(self, session: RunSession, lab: Lab, radio: str) -> None:
        super().__init__(session, lab)
        link = session.bed.device(METER).link
        assert isinstance(link, BleDeviceLink) and link.peripheral._transport is not None
        self.central = BumbleCentral(link=ble_links.air(radio), name="supplier-gateway")
        model = device_models()["blood_pressure_meter"]
        self.gateway = BleGateway(self.central, METER, METER_ADDRESS, model, self.take, self.finding).start()
        assert self.gateway.subscribed.wait(10)

    def close(self) -> None:
        self.gateway.close()
        self.central.close()


def test_the_lab_file_puts_a_simulated_meter_on_a_tcp_controller_and_readings_arrive_unchanged(
    suite: Suite, tmp_path: Path, radio: str, bridges: list[AirBridge]
) -> None:
    spec = controller(radio, bridges, "meter-radio")
    ble = {"radio": spec, "address": METER_ADDRESS, "hold": "5s"}
    lab = device_lab(tmp_path, {METER: {"model": "blood_pressure_meter", "user": "persona/solveig-88",
                                        "via": "ble", "ble": ble}})  # fmt: skip
    m, run_dir = run_scenario(suite, tmp_path, lab, LAB_METER, lambda s: GatewayOnTheAir(s, lab, radio))
    assert m.counts["lost"] == 0 and m.counts["altered"] == 0, matches(run_dir)
    assert m.latencies["reading_latency"].arrived == 2


def test_a_radio_that_cannot_be_opened_is_a_target_error_at_the_lab_files_line(tmp_path: Path) -> None:
    port = closed_port()
    ble = {"radio": f"tcp-client:127.0.0.1:{port}", "address": METER_ADDRESS}
    lab = device_lab(tmp_path, {METER: {"model": "blood_pressure_meter", "user": "persona/solveig-88",
                                        "via": "ble", "ble": ble}})  # fmt: skip
    with pytest.raises(TargetError) as caught:
        ble_links.ble_device(SimpleNamespace(lab=lab), METER)
    text = str(caught.value)
    assert f"device-lab.yaml:{lab.src.line_of(('devices', METER, 'ble', 'radio'))}" in text
    assert f"tcp-client:127.0.0.1:{port}` cannot be opened" in text and "fix:" in text
    assert not [t for t in threading.enumerate() if t.name == f"ble-vtlab-{METER}"]  # its loop thread is gone


def test_a_radio_that_is_not_a_bumble_transport_is_refused_at_its_line(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        device_lab(tmp_path, {METER: {"model": "blood_pressure_meter", "user": "persona/solveig-88", "via": "ble",
                                      "ble": {"radio": "usbb:0", "address": METER_ADDRESS}}})  # fmt: skip
    assert "device-lab.yaml:" in str(caught.value) and "did you mean `usb`" in str(caught.value)
    with pytest.raises(ValueError, match="address of the real device"):
        BleDeviceSettings(mode="observe")
    with pytest.raises(ValueError, match="adapter"):
        BleDeviceSettings(mode="observe", address=REAL_ADDRESS, radio="usb:0", adapter="hci0")


# --- 2. a real device observed ------------------------------------------------------------------------------


def real_button(radio: str) -> BleDeviceLink:
    """The stand-in for the real button on the bench: a Bumble peripheral on the emulated air."""
    settings = BleDeviceSettings(radio=radio, address=REAL_ADDRESS, report="manufacturer")
    return BleDeviceLink(REAL, device_models()["alarm_button"], None, settings)


def press(button: BleDeviceLink, n: int) -> None:
    button.send(Outgoing(f"press-{n}", REAL, "persona/solveig-88", "personal_emergency", "101"))


def test_an_observed_button_reports_what_the_real_device_advertises_and_cannot_be_triggered(
    radio: str, bridges: list[AirBridge]
) -> None:
    device = real_button(radio)
    settings = BleDeviceSettings(mode="observe", address=REAL_ADDRESS, radio=controller(radio, bridges, "observer"))
    link = BleObserveLink(REAL, device_models()["alarm_button"], None, settings)
    try:
        with pytest.raises(TargetError, match="observes") as caught:
            link.send(Outgoing("c", REAL, "u", "personal_emergency", "101"))
        assert "manual_check" in str(caught.value)
        threading.Timer(0.3, press, (device, 1)).start()
        got = link.wait_event(lambda g: g.fields.get("event") == "personal_emergency", 10.0)
        assert got is not None and got.key == f"{REAL}:101:001" and got.where == f"ble {REAL_ADDRESS}"
        assert link.wait_event(lambda g: g.fields.get("event") == "fall_detected", 0.3) is None
    finally:
        link.close()
        device.close()


def test_an_observed_meter_reports_the_readings_it_indicates(radio: str, bridges: list[AirBridge]) -> None:
    model = device_models()["blood_pressure_meter"]
    meter = BleDeviceLink(
        METER, model, None, BleDeviceSettings(radio=radio, address=METER_ADDRESS, profile="blood_pressure")
    )
    settings = BleDeviceSettings(
        mode="observe", address=METER_ADDRESS, profile="blood_pressure", radio=controller(radio, bridges, "observer")
    )
    link = BleObserveLink(METER, model, None, settings)
    try:
        assert link.listening.wait(10)
        measured = measured_now()
        meter.send(MeasuredOutgoing("c1", METER, "u", "measurement", "995", readings=READINGS, measured=measured))
        got = link.wait_event(lambda g: g.fields.get("event") == "measurement", 10.0)
    finally:
        link.close()
        meter.close()
    assert got is not None and got.fields["readings"] == READINGS and got.fields["measured"] + "Z" == measured


OBSERVED = """
title: Ekte alarmknapp over BLE når responssenteret
covers: [TA-1.1]
devices:
  knapp: {id: knapp-ekte}
steps:
  - manual_check: {instruction: "Trykk på alarmknappen nå", expect: "Alarmen vises i responssenteret", device: knapp}
  - observe_event: {device: knapp, event: button_press, within: 20s}
  - expect_alarm: {from: knapp, within: 10s}
criteria:
  - {metric: lost, count: "== 0"}
"""


class SupplierGateway(MockPlatform):
    """The MOCK platform with the supplier's gateway listening for the real button on the air; the tester
    presses the button once the scenario waits for it (observe_event)."""

    def __init__(self, session: RunSession, lab: Lab, radio: str, button: BleDeviceLink) -> None:
        super().__init__(session, lab)
        self.central = BumbleCentral(link=ble_links.air(radio), name="supplier-gateway")
        devices = {REAL_ADDRESS: (REAL, device_models()["alarm_button"])}
        self.gateway = AdvertisementGateway(self.central, devices, self.take, self.finding).start()
        link = session.bed.device(REAL).link
        assert isinstance(link, BleObserveLink)
        self.pressed: list[int] = []
        waiting = link.wait_event

        def tester_presses_when_asked(*args: Any) -> Any:
            threading.Timer(0.5, self._press, (button,)).start()
            return waiting(*args)

        link.wait_event = tester_presses_when_asked  # type: ignore[method-assign,assignment]

    def _press(self, button: BleDeviceLink) -> None:
        from harness.clock import now_ns

        self.pressed.append(now_ns())
        press(button, len(self.pressed))

    def close(self) -> None:
        self.gateway.close()
        self.central.close()


def test_a_real_button_observed_is_the_stimulus_and_the_alarm_is_measured_from_it(
    suite: Suite, tmp_path: Path, radio: str, bridges: list[AirBridge], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VTLAB_INTERACTIVE", raising=False)
    device = real_button(radio)
    ble = {"mode": "observe", "address": REAL_ADDRESS, "radio": controller(radio, bridges, "vtlab-observer")}
    lab = device_lab(tmp_path, {REAL: {"model": "alarm_button", "user": "persona/solveig-88", "via": "ble",
                                       "ble": ble}})  # fmt: skip
    platforms: list[SupplierGateway] = []

    def platform(s: RunSession) -> SupplierGateway:
        platforms.append(SupplierGateway(s, lab, radio, device))
        return platforms[0]

    try:
        m, run_dir = run_scenario(suite, tmp_path, lab, OBSERVED, platform)
    finally:
        device.close()
    assert m.stimuli == 1 and m.counts["lost"] == 0, matches(run_dir)
    assert m.latencies["alarm_latency"].arrived == 1
    (ok,) = [r for r in matches(run_dir) if r["outcome"] == "ok"]
    assert platforms[0].pressed and len(platforms[0].events) == 1
    stimulus = _stimulus(run_dir)
    # measured from the observed event: the time vtlab's radio heard it, which may be a little after the
    # supplier's gateway heard the same advertisement (here its gateway is on the air, vtlab's behind a bridge)
    assert ok["stimulus_cid"] == stimulus["cid"] and ok["latency_ns"] is not None
    print(f"observed button: alarm latency from vtlab's radio {ok['latency_ns'] / 1e6:.1f} ms")
    assert stimulus["device"] == REAL and json.loads(stimulus["payload"])["observed"] is True
    assert stimulus["t_ns"] >= platforms[0].pressed[0]  # stamped when vtlab's radio heard it, not before
    assert any(o["kind"] == "skipped" and "Trykk på alarmknappen" in o["text"] for o in observations(run_dir))


def _stimulus(run_dir: Path) -> dict[str, Any]:
    from harness.evidence import EvidenceReader

    reader = EvidenceReader(run_dir)
    try:
        (row,) = [dict(r) for r in reader.stimuli("s")]
        return row
    finally:
        reader.close()


def test_an_observer_on_a_system_adapter_that_is_not_there_is_a_target_error_at_its_line(tmp_path: Path) -> None:
    ble = {"mode": "observe", "address": REAL_ADDRESS, "adapter": "hci-vtlab-absent"}
    lab = device_lab(tmp_path, {REAL: {"model": "alarm_button", "user": "persona/solveig-88", "via": "ble",
                                       "ble": ble}})  # fmt: skip
    with pytest.raises(TargetError) as caught:
        ble_links.ble_device(SimpleNamespace(lab=lab), REAL)
    text = str(caught.value)
    assert "device-lab.yaml:" in text and "system adapter hci-vtlab-absent (bleak)" in text and "fix:" in text


@pytest.mark.hardware
def test_a_simulated_meter_on_a_usb_controller() -> None:
    """On the bench: `VTLAB_BLE_RADIO=usb:0 pytest -m hardware ...`; a phone or gateway then sees the meter."""
    import os

    spec = os.environ.get("VTLAB_BLE_RADIO")
    if not spec:
        pytest.skip("set VTLAB_BLE_RADIO=usb:0 (a USB Bluetooth controller the user may open)")
    model = device_models()["blood_pressure_meter"]
    meter = BleDeviceLink(METER, model, None, BleDeviceSettings(radio=spec, profile="blood_pressure"))
    try:
        assert meter.peripheral._transport is not None
    finally:
        meter.close()


TRIGGERED = """
title: Ekte alarmknapp kan ikke trykkes av vtlab
covers: [TA-1.1]
devices:
  knapp: {id: knapp-ekte}
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 1s}
criteria:
  - {metric: lost, count: "== 0"}
"""


class NoPlatform:
    def close(self) -> None:
        pass


def test_a_scenario_that_triggers_an_observed_device_stops_with_the_fix(
    suite: Suite, tmp_path: Path, radio: str, bridges: list[AirBridge]
) -> None:
    ble = {"mode": "observe", "address": REAL_ADDRESS, "radio": controller(radio, bridges, "vtlab-observer")}
    lab = device_lab(tmp_path, {REAL: {"model": "alarm_button", "user": "persona/solveig-88", "via": "ble",
                                       "ble": ble}})  # fmt: skip
    with pytest.raises(TargetError) as caught:
        run_scenario(suite, tmp_path, lab, TRIGGERED, lambda s: NoPlatform())
    assert "real BLE device that vtlab observes" in str(caught.value) and "observe_event" in str(caught.value)
