"""The reference lab as home gateway: a simulated serial medicine dispenser (a pty, opened by the lab process
by its path) and a simulated BLE blood-pressure meter (a Bumble peripheral on vtlab's emulated air, reached
by the lab's own Bumble central over the TCP HCI bridge) go device -> lab gateway -> router -> centre, as
the centre side reads them (harness.links.gateway.keyed_incoming: device, code, zone; readings compared
field by field). Faults apply to gateway events as to any other alarm, and the ledger counts them."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lab_fixtures import Peer, require_mosquitto, wait_until

from devices.catalog import CATALOG
from devices.serial_sim import SimulatedSerialDevice
from harness.lab.ble_bridge import AirBridge
from harness.lab.config import LabConfig
from harness.lab.process import LabProcess
from harness.links import Incoming, Outgoing
from harness.links.ble import BleDeviceLink, BleDeviceSettings, air, release_air
from harness.links.gateway import compare_readings, keyed_incoming, measured_now, zone_of
from harness.links.serial import load_codec
from harness.transports.base import Message

pytestmark = pytest.mark.slow

RADIO = "emulated:lab-gateway-test"
METER = "C0:00:00:00:AB:01"
ALARM_TOPIC = "vtlab/s/centre/rc-a/alarm"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_mosquitto()
    dispenser = SimulatedSerialDevice(load_codec("medicine_dispenser"), link=tmp_path / "ttyDSP")
    dispenser.plug_in()
    meter = BleDeviceLink(
        "bp1",
        CATALOG["blood_pressure_meter"].model,
        CATALOG["blood_pressure_meter"],
        BleDeviceSettings(radio=RADIO, address=METER, hold="10s"),
    )
    bridge = AirBridge(air(RADIO), "lab-gw-bp1")
    config = LabConfig.model_validate(
        {
            "site": "s",
            "broker": {"kind": "mosquitto", "mqtt_version": "5"},
            "centres": ["rc-a"],
            "routing": {"persona/solveig": "rc-a"},
            "devices": {
                "dsp1": {
                    "user": "persona/solveig",
                    "gateway": {
                        "model": "medicine_dispenser",
                        "serial": dispenser.path,
                        "profile": "medicine_dispenser",
                    },
                },
                "bp1": {
                    "user": "persona/solveig",
                    "gateway": {"model": "blood_pressure_meter", "ble_hci": bridge.spec, "ble_address": METER},
                },
            },
        }
    )
    try:
        with LabProcess(config, tmp_path / "lab") as lab, Peer(lab.broker_url, subscribe=[ALARM_TOPIC]) as centre:
            yield {"lab": lab, "centre": centre, "dispenser": dispenser, "meter": meter}
    finally:
        meter.close()
        bridge.close()
        dispenser.unplug()
        release_air(RADIO)


def arrivals(centre: Peer) -> list[Incoming]:
    out = []
    for a in centre.arrivals:
        got = keyed_incoming(Message(a.topic, a.payload, a.at_ns))
        assert isinstance(got, Incoming), got
        out.append(got)
    return out


def test_a_dispensers_missed_dose_and_a_meters_reading_reach_the_centre_through_the_lab_gateway(
    rig: dict[str, Any],
) -> None:
    lab: LabProcess = rig["lab"]
    centre: Peer = rig["centre"]
    wait_until(
        lambda: len([x for x in lab.ledger() if x["action"] == "gateway_device"]) == 2,
        what="the lab opened both gateway devices",
    )

    # serial: the dispenser prints dose_missed with its own sequence number
    rig["dispenser"].send("dose_missed", {"battery": "080"})
    seq = rig["dispenser"].seq
    centre.wait_count(1)
    (dose,) = arrivals(centre)
    assert dose.key == f"dsp1:{CATALOG['medicine_dispenser'].model.events['dose_missed'].code}:{zone_of(seq)}"
    assert dose.cid is None and str(dose.fields["platform_id"]).startswith("gw-")
    assert dose.fields["event"] == "dose_missed" and dose.fields["battery"] == 80

    # BLE: the meter indicates a reading once the lab's central subscribed
    readings = {
        "systolic": (Decimal("182"), "mmHg"),
        "diastolic": (Decimal("95"), "mmHg"),
        "pulse": (Decimal("71"), "bpm"),
    }
    stamp = measured_now()
    sent = rig["meter"].send(
        Outgoing("m-1", "bp1", "persona/solveig", "measurement", "995", readings=readings, measured=stamp)
    )
    assert "fault" not in sent.fields
    centre.wait_count(2)
    reading = arrivals(centre)[1]
    assert reading.fields["device"] == "bp1" and reading.key == "bp1:995:001"
    assert compare_readings(readings, stamp, reading.fields) == []  # value, unit and time unchanged

    # faults apply to gateway events as to any alarm, and the ledger counts them
    lab.set_faults("drop=1,seed=1")
    rig["dispenser"].send("dose_missed", {"battery": "080"})
    dropped_zone = zone_of(rig["dispenser"].seq)
    wait_until(lambda: any(x["action"] == "drop" for x in lab.ledger()), what="the lab drops the next event")
    ledger = lab.ledger()
    (drop,) = [x for x in ledger if x["action"] == "drop"]
    assert drop["key"].endswith(f":{dropped_zone}") and drop["device"] == "dsp1" and drop["ingress"] == "gateway"
    routed = [x for x in ledger if x["action"] == "routed" and x.get("ingress") == "gateway"]
    assert sorted(x["device"] for x in routed) == ["bp1", "dsp1"]
    received = [x for x in ledger if x["action"] == "received" and x.get("ingress") == "gateway"]
    assert any(x.get("readings", {}).get("systolic") == {"value": "182", "unit": "mmHg"} for x in received)
    assert len(centre.arrivals) == 2  # the dropped dose never reached the centre


def test_garbage_on_the_serial_line_is_a_gateway_finding_and_the_next_frame_still_arrives(
    rig: dict[str, Any],
) -> None:
    lab: LabProcess = rig["lab"]
    wait_until(
        lambda: any(x["action"] == "gateway_device" and x["device"] == "dsp1" for x in lab.ledger()),
        what="the lab opened the dispenser",
    )
    rig["dispenser"].send_garbage()
    rig["dispenser"].send("dose_missed", {"battery": "080"})
    got = rig["centre"].wait_count(1)
    assert len(got) == 1 and got[0].json()["event"] == "dose_missed"
    wait_until(lambda: any(x["action"] == "gateway_finding" for x in lab.ledger()), what="the garbage is a finding")
    findings = [x for x in lab.ledger() if x["action"] == "gateway_finding"]
    assert all(f["device"] == "dsp1" for f in findings)
    assert lab.alive
