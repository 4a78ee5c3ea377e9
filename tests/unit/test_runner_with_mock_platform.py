"""The scenario runner's correlation rules, fast, on the in-memory bus with a MOCK platform (a few lines
that route alarms and can misbehave on purpose). The same rules run against the real reference lab in
tests/integration/test_faults_are_caught.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from devices.simulated import SimulatedDevice
from harness.contract import load_contract
from harness.evidence import EvidenceReader, EvidenceStore
from harness.labfile import Lab, load_lab
from harness.metrics import ScenarioMetrics, compute
from harness.probes.response_centre import ResponseCentreProbe
from harness.scenario.loader import load_scenario
from harness.scenario.registry import device_models
from harness.scenario.runner import ScenarioRun
from harness.tracking import Tracker
from harness.transports.base import Message
from harness.transports.memory import MemoryBus, MemoryTransport
from harness.transports.mqtt import MqttSettings
from tests.helpers import CONTRACT, LAB, Suite

Route = Callable[[dict[str, object]], list[tuple[str, dict[str, object]]]]


class MockBed:
    """A Testbed on the in-memory bus."""

    def __init__(self, lab: Lab, store: EvidenceStore, bus: MemoryBus) -> None:
        self.lab, self.evidence, self.bus = lab, store, bus
        self.tracker = Tracker(store)
        self.probes = {}
        for name, probe in lab.spec.probes.items():
            p = ResponseCentreProbe(name, probe.centre, MemoryTransport(bus), lab.topic, self.tracker)
            p.start()
            self.probes[name] = p
        self._devices: dict[str, SimulatedDevice] = {}
        self._seq: dict[str, int] = {}

    def device(self, device_id: str) -> SimulatedDevice:
        if device_id not in self._devices:
            spec = self.lab.spec.devices[device_id]
            dev = SimulatedDevice(device_id, device_models()[spec.model], spec.user, MemoryTransport(self.bus),
                                  self.lab.topic)
            dev.listen_for_acks(lambda m, d=device_id: self.tracker.on_message(f"device:{d}", "device_ack", m))
            self._devices[device_id] = dev
        return self._devices[device_id]

    def next_seq(self, device_id: str) -> int:
        self._seq[device_id] = self._seq.get(device_id, 0) + 1
        return self._seq[device_id]

    def mqtt_settings(self) -> MqttSettings:
        raise NotImplementedError("no broker on the in-memory bus")


def mock_platform(bus: MemoryBus, lab: Lab, route: Route) -> None:
    """Subscribe to device events; publish whatever `route` says, to centre alarm topics."""

    def on_event(msg: Message) -> None:
        event = json.loads(msg.payload)
        for centre, alarm in route(event):
            bus.deliver(lab.topic("centre_alarm", centre=centre), json.dumps(alarm).encode())

    bus.add(lab.topic("device_event", device="+"), on_event)


def run(suite: Suite, tmp_path: Path, text: str, route: Route) -> ScenarioMetrics:
    lab = load_lab(LAB)
    contract, _ = load_contract(CONTRACT)
    plan = load_scenario(suite.scenario("s", text), contract, lab, "s")
    bus = MemoryBus()
    store = EvidenceStore.create(tmp_path / "run")
    mock_platform(bus, lab, route)
    bed = MockBed(lab, store, bus)
    asyncio.run(ScenarioRun(plan, bed, "t").execute())
    store.close()
    reader = EvidenceReader(tmp_path / "run")
    try:
        return compute(reader.stimuli("s"), reader.arrivals("s"), reader.matches("s"))
    finally:
        reader.close()


SCENARIO = """
title: Knappetrykk
covers: [TA-1.4]
devices:
  knapp: {model: safety_alarm, rotate: true}
repeat: 8
pace: 100/s
drain: 200ms
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 300ms}
criteria:
  - {metric: lost, count: "== 0"}
"""


def centre_of(event: dict[str, object]) -> str:
    return "rs-vest" if event["user"] in ("persona/ragnhild-87", "persona/odd-79") else "rs-ost"


def test_a_well_behaved_platform_loses_nothing(suite: Suite, tmp_path: Path) -> None:
    m = run(suite, tmp_path, SCENARIO, lambda e: [(centre_of(e), {**e, "centre": centre_of(e)})])
    assert m.counts["lost"] == 0 and m.counts["misrouted"] == 0
    assert m.latencies["alarm_latency"].statistic("count") == 8


def test_an_alarm_never_delivered_is_lost_and_named(suite: Suite, tmp_path: Path) -> None:
    def drop_third(e: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
        return [] if str(e["cid"]).endswith("000003") else [(centre_of(e), {**e, "centre": centre_of(e)})]

    m = run(suite, tmp_path, SCENARIO, drop_third)
    assert m.counts["lost"] == 1 and m.lost_cids[0].endswith("000003")


def test_an_alarm_at_the_wrong_centre_is_misrouted_not_lost(suite: Suite, tmp_path: Path) -> None:
    def swap(e: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
        wrong = "rs-ost" if centre_of(e) == "rs-vest" else "rs-vest"
        return [(wrong, {**e, "centre": wrong})]

    m = run(suite, tmp_path, SCENARIO, swap)
    assert m.counts["misrouted"] == 8 and m.counts["lost"] == 0


@pytest.mark.parametrize("field,value", [("priority", 3), ("code", "100")])
def test_an_alarm_whose_content_changed_is_altered(suite: Suite, tmp_path: Path, field: str, value: object) -> None:
    m = run(suite, tmp_path, SCENARIO, lambda e: [(centre_of(e), {**e, "centre": centre_of(e), field: value})])
    assert m.counts["altered"] == 8


def test_a_second_copy_is_a_duplicate(suite: Suite, tmp_path: Path) -> None:
    m = run(suite, tmp_path, SCENARIO, lambda e: [(centre_of(e), {**e, "centre": centre_of(e)})] * 2)
    assert m.counts["duplicates"] == 8 and m.counts["lost"] == 0
