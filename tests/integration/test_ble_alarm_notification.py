"""An alarm button that vtlab plays with `report: notification` (harness.links.ble.BleDeviceLink on a Bumble
peripheral serving the vendor alarm service) and the home gateway that hears its advertisement, connects,
pairs, subscribes and forwards each alarm (harness.links.ble.AdvertisementGateway on a BumbleCentral), over
Bumble's emulated radio: events, codes and correlation keys arrive as sent; a disconnection during an alarm
is a finding on the gateway's side and the held alarm arrives after it reconnects; an alarm nobody collects
and a value no decoder accepts are findings, never a crash."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devices.catalog import CATALOG
from harness.links import Outgoing, Refused, Sent
from harness.links import ble as ble_links
from harness.links.ble import AdvertisementGateway, BleDeviceLink, BleDeviceSettings
from harness.links.gateway import GatewayEvent
from harness.protocols import ble_alarm
from harness.transports.ble import BumbleCentral

pytestmark = pytest.mark.timeout(90)
BUTTON, ADDRESS = "knapp-ragnhild", "C0:00:00:00:AA:07"
MODEL = CATALOG["alarm_button"].model


class Rig:
    def __init__(self, radio: str, hold: str = "10s") -> None:
        self.events: queue.Queue[GatewayEvent] = queue.Queue()
        self.gateway_findings: queue.Queue[Refused] = queue.Queue()
        self.device_findings: queue.Queue[Refused] = queue.Queue()
        settings = BleDeviceSettings(radio=radio, address=ADDRESS, report="notification", hold=hold)
        self.button = BleDeviceLink(BUTTON, MODEL, CATALOG["alarm_button"], settings)
        self.button.on_ack(lambda _incoming: None, self.device_findings.put)
        self.central = BumbleCentral(link=ble_links.air(radio), name="gateway")
        self.gateway = AdvertisementGateway(
            self.central, {ADDRESS: (BUTTON, MODEL)}, self.events.put, self.gateway_findings.put
        ).start()
        self._n = 0

    def press(self, event: str = "button_press") -> Sent:
        spec = MODEL.events[event]
        self._n += 1
        return self.button.send(Outgoing(f"c{self._n}", BUTTON, "persona/ragnhild-87", spec.event, spec.code))

    def close(self) -> None:
        self.gateway.close()
        self.central.close()
        self.button.close()


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    radio = f"emulated:test-{request.node.name[:40]}"
    r = Rig(radio, hold=getattr(request, "param", "10s"))
    yield r
    r.close()
    ble_links.release_air(radio)


def drain(q: queue.Queue[Any]) -> list[Any]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_each_alarm_arrives_once_with_its_event_code_and_key_over_an_encrypted_link(rig: Rig) -> None:
    assert rig.gateway.subscribed.wait(10), drain(rig.gateway_findings)
    assert rig.central.is_encrypted  # the gateway paired before the button let it subscribe
    assert rig.button.peripheral.wait_subscribed(ble_alarm.ALARM_UUID, 1.0)
    sent = [rig.press("button_press"), rig.press("fall"), rig.press("cancel")]
    got = [rig.events.get(timeout=5) for _ in sent]
    assert [e.event for e in got] == ["personal_emergency", "fall_detected", "alarm_cancelled"]
    assert [e.code for e in got] == ["101", "100", "406"]
    assert (
        [e.key for e in got] == [s.key for s in sent] == [f"{BUTTON}:101:001", f"{BUTTON}:100:002", f"{BUTTON}:406:003"]
    )
    assert all(s.fields["report"] == "notification" for s in sent)
    assert [ble_alarm.decode(bytes.fromhex(e.raw)).counter for e in got] == [1, 2, 3]
    assert all(e.battery == 100 and e.device == BUTTON for e in got)
    time.sleep(0.3)
    assert rig.events.empty() and drain(rig.gateway_findings) == [] and drain(rig.device_findings) == []
    assert rig.gateway.connections == 1


def test_a_disconnect_during_an_alarm_is_a_finding_and_the_held_alarm_arrives_after_reconnecting(rig: Rig) -> None:
    assert rig.gateway.subscribed.wait(10)
    rig.button.peripheral.disconnect()  # the link drops (the button walked out of range and back)
    assert not rig.button.peripheral.wait_subscribed(ble_alarm.ALARM_UUID, 0.0)  # the button knows nobody listens
    sent = rig.press("button_press")  # raised while the link is down: the button holds it
    event = rig.events.get(timeout=15)
    assert event.key == sent.key and event.event == "personal_emergency"
    findings = drain(rig.gateway_findings)
    assert any("disconnected" in f.reason and f.where == f"ble {BUTTON}" for f in findings), findings
    assert rig.gateway.connections == 2 and rig.central.is_encrypted
    assert drain(rig.device_findings) == []  # delivered within `hold`: nothing lost


@pytest.mark.parametrize("rig", ["1s"], indirect=True)
def test_an_alarm_no_gateway_collects_is_a_finding_of_the_device(rig: Rig) -> None:
    assert rig.gateway.subscribed.wait(10)
    rig.gateway.close()  # the gateway goes away for good
    assert not rig.central.is_connected
    sent = rig.press("fall")
    assert "fault" not in sent.fields
    finding = rig.device_findings.get(timeout=10)
    assert "not delivered" in finding.reason and "alarm c1 (fall_detected)" in finding.reason
    assert rig.events.empty()


def test_a_value_no_decoder_accepts_is_a_finding_and_the_next_alarm_still_arrives(rig: Rig) -> None:
    assert rig.gateway.subscribed.wait(10)
    rig.button.peripheral.send(ble_alarm.ALARM_UUID, bytes.fromhex("0109640100"))  # state 9: no such event
    finding = rig.gateway_findings.get(timeout=5)
    assert finding.raw == "0109640100" and "state 9" in finding.reason
    sent = rig.press("button_press")
    assert rig.events.get(timeout=5).key == sent.key
    assert rig.gateway.connections == 1  # garbage does not cost the connection


def test_a_dropout_sends_nothing_and_says_so(rig: Rig) -> None:
    from devices.catalog import DeviceFault

    assert rig.gateway.subscribed.wait(10)
    rig.button.faults.add(DeviceFault("dropout", count=1))
    dropped = rig.press("button_press")
    sent = rig.press("button_press")
    assert dropped.fields["fault"] == "dropout"
    assert rig.events.get(timeout=5).key == sent.key and sent.key != dropped.key
    time.sleep(0.3)
    assert rig.events.empty()
