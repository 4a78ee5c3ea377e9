"""The reference lab as home gateway for an alarm button that reports by GATT notification: vtlab plays the
button (a Bumble peripheral serving the vendor alarm service on its emulated air), the lab process hears its
advertisement through the TCP HCI bridge, connects, pairs, subscribes and forwards each alarm to the centre
(device -> lab -> centre, keyed by device, code and the button's counter). A disconnection during an alarm
is a `gateway_finding` in the lab's ledger and the held alarm still arrives; a drop fault counts exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_fixtures import Peer, require_mosquitto, wait_until

from devices.catalog import CATALOG
from harness.lab.ble_bridge import AirBridge
from harness.lab.config import LabConfig
from harness.lab.process import LabProcess
from harness.links import Incoming, Outgoing, Sent
from harness.links.ble import BleDeviceLink, BleDeviceSettings, air, release_air
from harness.links.gateway import keyed_incoming
from harness.protocols import ble_alarm
from harness.transports.base import Message

pytestmark = pytest.mark.slow

RADIO = "emulated:lab-gateway-notify-test"
BUTTON = "C0:00:00:00:AB:07"
ALARM_TOPIC = "vtlab/s/centre/rc-a/alarm"
MODEL = CATALOG["alarm_button"].model


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_mosquitto()
    button = BleDeviceLink(
        "kn1",
        MODEL,
        CATALOG["alarm_button"],
        BleDeviceSettings(radio=RADIO, address=BUTTON, report="notification", hold="15s"),
    )
    bridge = AirBridge(air(RADIO), "lab-gw-kn1")
    config = LabConfig.model_validate(
        {
            "site": "s",
            "broker": {"kind": "mosquitto", "mqtt_version": "5"},
            "centres": ["rc-a"],
            "routing": {"persona/ragnhild": "rc-a"},
            "devices": {
                "kn1": {
                    "user": "persona/ragnhild",
                    "gateway": {
                        "model": "alarm_button",
                        "ble_hci": bridge.spec,
                        "ble_address": BUTTON,
                        "ble_role": "advertiser",
                    },
                },
            },
        }
    )
    try:
        with LabProcess(config, tmp_path / "lab") as lab, Peer(lab.broker_url, subscribe=[ALARM_TOPIC]) as centre:
            yield {"lab": lab, "centre": centre, "button": button}
    finally:
        button.close()
        bridge.close()
        release_air(RADIO)


def press(button: BleDeviceLink, n: int, event: str = "button_press") -> Sent:
    spec = MODEL.events[event]
    return button.send(Outgoing(f"c{n}", "kn1", "persona/ragnhild", spec.event, spec.code))


def arrivals(centre: Peer) -> list[Incoming]:
    out = []
    for a in centre.arrivals:
        got = keyed_incoming(Message(a.topic, a.payload, a.at_ns))
        assert isinstance(got, Incoming), got
        out.append(got)
    return out


def test_an_alarm_by_notification_reaches_the_centre_through_the_lab_gateway_and_survives_a_disconnect(
    rig: dict[str, Any],
) -> None:
    lab: LabProcess = rig["lab"]
    centre: Peer = rig["centre"]
    button: BleDeviceLink = rig["button"]
    assert button.peripheral.wait_subscribed(ble_alarm.ALARM_UUID, 30), lab.ledger()[-5:]

    first = press(button, 1)
    second = press(button, 2, "fall")
    centre.wait_count(2)
    got = arrivals(centre)
    assert [x.key for x in got] == [first.key, second.key] == ["kn1:101:001", "kn1:100:002"]
    assert [x.fields["event"] for x in got] == ["personal_emergency", "fall_detected"]
    assert all(x.cid is None and str(x.fields["platform_id"]).startswith("gw-") for x in got)

    # the link drops while an alarm is raised: a finding in the lab's ledger, and the alarm still arrives
    button.peripheral.disconnect()
    held = press(button, 3)
    centre.wait_count(3)
    assert arrivals(centre)[2].key == held.key == "kn1:101:003"
    findings = [x for x in lab.ledger() if x["action"] == "gateway_finding"]
    assert any("disconnected" in x["reason"] for x in findings) and all(x["device"] == "kn1" for x in findings)
    assert lab.alive

    # faults apply to alarms by notification as to any other: the dropped one is the one the ledger names
    lab.set_faults("drop=1,seed=1")
    dropped = press(button, 4)
    wait_until(lambda: any(x["action"] == "drop" for x in lab.ledger()), what="the lab drops the next alarm")
    (drop,) = [x for x in lab.ledger() if x["action"] == "drop"]
    assert drop["key"] == dropped.key and drop["ingress"] == "gateway"
    assert len(centre.arrivals) == 3
