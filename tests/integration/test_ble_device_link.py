"""A blood-pressure meter and an alarm button that vtlab plays as Bumble peripherals, collected by a gateway
(a BumbleCentral) over Bumble's emulated radio, through the real session and engine to a MOCK platform (in
this file) that forwards what the gateway read to the response centre: readings arrive unchanged, field by
field; an out-of-range reading is `altered`; a meter that vanishes is a lost reading, never a crash."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from harness.labfile import Lab
from harness.links import ble as ble_links
from harness.links.ble import AdvertisementGateway, BleDeviceLink, BleDeviceSettings, BleGateway
from harness.links.gateway import GatewayEvent, MeasuredOutgoing, measured_now
from harness.scenario.registry import device_models
from harness.session import RunSession
from harness.transports.ble import BumbleCentral
from tests.device_helpers import MockPlatform, device_lab, device_plugins, matches, run_scenario
from tests.helpers import Suite

pytestmark = pytest.mark.timeout(90)
METER, BUTTON = "bp-solveig", "knapp-solveig"
METER_ADDRESS, BUTTON_ADDRESS = "C0:00:00:00:AA:01", "C0:00:00:00:AA:02"


@pytest.fixture(autouse=True)
def plugins() -> Iterator[None]:
    with device_plugins():
        yield


@pytest.fixture
def radio(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"emulated:test-{request.node.name[:40]}"
    yield name
    ble_links.release_air(name)


@pytest.fixture
def lab(tmp_path: Path, radio: str) -> Iterator[Lab]:
    ble_links.configure(METER, BleDeviceSettings(radio=radio, address=METER_ADDRESS, hold="5s"))
    ble_links.configure(BUTTON, BleDeviceSettings(radio=radio, address=BUTTON_ADDRESS, report="manufacturer"))
    yield device_lab(tmp_path)
    ble_links.configure(METER, None)
    ble_links.configure(BUTTON, None)


def test_a_reading_the_meter_indicates_reaches_the_gateway_unchanged(radio: str) -> None:
    model = device_models()["blood_pressure_meter"]
    meter = BleDeviceLink(METER, model, None, BleDeviceSettings(radio=radio, profile="blood_pressure", hold="5s"))
    central = BumbleCentral(link=ble_links.air(radio), name="gateway")
    got: queue.Queue[GatewayEvent] = queue.Queue()
    gateway = BleGateway(central, METER, meter.address, model, got.put, lambda bad: None).start()
    try:
        assert gateway.subscribed.wait(10)
        measured = measured_now()
        readings = {
            "systolic": (Decimal("182"), "mmHg"),
            "diastolic": (Decimal("95"), "mmHg"),
            "pulse": (Decimal("71"), "bpm"),
        }
        meter.send(MeasuredOutgoing("c1", METER, "u", "measurement", "995", readings=readings, measured=measured))
        event = got.get(timeout=10)
    finally:
        gateway.close()
        meter.close()
        central.close()
    assert event.readings == readings  # exact decimals and units, nothing added (MAP was not measured)
    assert event.measured is not None and event.measured + "Z" == measured
    assert event.event == "measurement" and event.device == METER


class BleMockPlatform(MockPlatform):
    """The MOCK platform with a gateway that collects from the meter and listens for the button."""

    def __init__(self, session: RunSession, lab: Lab, radio: str, **kw: object) -> None:
        super().__init__(session, lab, **kw)  # type: ignore[arg-type]
        meter = session.bed.device(METER).link  # the peripherals exist from here on
        button = session.bed.device(BUTTON).link
        assert isinstance(meter, BleDeviceLink) and isinstance(button, BleDeviceLink)
        self.central = BumbleCentral(link=ble_links.air(radio), name="gateway")
        self.scanner = BumbleCentral(link=ble_links.air(radio), name="gateway-scanner")
        models = device_models()
        self.gateway = BleGateway(
            self.central, METER, meter.address, models["blood_pressure_meter"], self.take, self.finding
        ).start()
        self.adverts = AdvertisementGateway(
            self.scanner, {button.address: (BUTTON, models["alarm_button"])}, self.take, self.finding
        ).start()
        assert self.gateway.subscribed.wait(10)

    def close(self) -> None:
        self.adverts.close()
        self.gateway.close()
        self.central.close()
        self.scanner.close()


READING = """
title: Blodtrykk over terskel kommer uendret fram
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


def test_injected_readings_arrive_at_the_centre_unchanged(suite: Suite, tmp_path: Path, lab: Lab, radio: str) -> None:
    m, run_dir = run_scenario(suite, tmp_path, lab, READING, lambda s: BleMockPlatform(s, lab, radio))
    assert m.counts["lost"] == 0 and m.counts["altered"] == 0, matches(run_dir)
    assert m.latencies["reading_latency"].arrived == 2


def test_an_out_of_range_reading_is_altered_and_says_which_value(
    suite: Suite, tmp_path: Path, lab: Lab, radio: str
) -> None:
    text = READING.replace("steps:\n", "steps:\n  - device_fault: {device: bt-meter, fault: out_of_range}\n")
    m, run_dir = run_scenario(
        suite, tmp_path, lab, text.replace("repeat: 2", "repeat: 1"), lambda s: BleMockPlatform(s, lab, radio)
    )
    assert m.counts["altered"] == 1 and m.counts["lost"] == 0
    detail = next(r["detail"] for r in matches(run_dir) if r["outcome"] == "altered")
    assert "systolic value 301 mmHg, expected 182 mmHg" in detail


def test_a_changed_time_stamp_or_unit_on_the_way_is_altered(suite: Suite, tmp_path: Path, lab: Lab, radio: str) -> None:
    def shift(e: GatewayEvent) -> GatewayEvent:
        assert e.readings is not None
        readings = {**e.readings, "pulse": (e.readings["pulse"][0], "1/min")}
        return GatewayEvent(
            e.t_ns, e.device, e.event, e.code, e.zone, readings=readings, measured="2001-01-01T00:00:00"
        )

    m, run_dir = run_scenario(
        suite,
        tmp_path,
        lab,
        READING.replace("repeat: 2", "repeat: 1"),
        lambda s: BleMockPlatform(s, lab, radio, alter=shift),
    )
    assert m.counts["altered"] == 1
    detail = next(r["detail"] for r in matches(run_dir) if r["outcome"] == "altered")
    assert "pulse unit '1/min', expected 'bpm'" in detail and "measured 2001-01-01T00:00:00" in detail


def test_a_meter_that_vanishes_loses_the_reading_and_the_run_goes_on(
    suite: Suite, tmp_path: Path, lab: Lab, radio: str
) -> None:
    text = READING.replace("steps:\n", "steps:\n  - device_fault: {device: bt-meter, fault: vanish, count: 1}\n")
    m, _ = run_scenario(
        suite, tmp_path, lab, text.replace("within: 5s", "within: 1s"), lambda s: BleMockPlatform(s, lab, radio)
    )
    # the emulated radio has no link supervision timeout, so the gateway keeps its dead connection and the
    # reading after the meter came back is lost too: both are counted, the run completes
    assert m.stimuli == 2 and m.counts["lost"] == 2 and m.latencies["reading_latency"].arrived == 0


BUTTON_PRESS = """
title: Alarmknapp over BLE-annonsering når responssenteret
covers: [TA-1.1]
devices:
  knapp: {id: knapp-solveig}
repeat: 3
drain: 300ms
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 3s}
criteria:
  - {metric: lost, count: "== 0"}
"""


def test_an_alarm_button_advertisement_reaches_the_centre(suite: Suite, tmp_path: Path, lab: Lab, radio: str) -> None:
    m, run_dir = run_scenario(suite, tmp_path, lab, BUTTON_PRESS, lambda s: BleMockPlatform(s, lab, radio))
    assert m.counts["lost"] == 0 and m.counts["altered"] == 0, matches(run_dir)
    assert m.latencies["alarm_latency"].arrived == 3
