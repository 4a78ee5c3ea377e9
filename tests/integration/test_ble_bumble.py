"""BumbleCentral against BumblePeripheral on an emulated radio (Bumble LocalLink), through the real Bumble host
stacks: GATT discovery, reads, notifications and indications of injected readings, SMP pairing, reconnection,
a peripheral that vanishes mid-read, and advertisement scanning (BTHome, vendor data).

The BleakCentral test needs a real adapter and device: marked `hardware`.
"""

from __future__ import annotations

import os
import queue
import socket
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from harness.protocols import ble_adv, bthome
from harness.protocols import ble_health as h
from harness.transports.ble import (
    Advertisement,
    BleAccessDenied,
    BleError,
    BleTimeout,
    BumbleCentral,
    BumblePeripheral,
    Notification,
)
from harness.transports.ble_link import BleLink

pytestmark = pytest.mark.timeout(60)


def q(value: str | int, unit: str) -> h.Quantity:
    return h.Quantity(Decimal(value), unit)


@pytest.fixture
def link() -> Iterator[BleLink]:
    with BleLink() as radio:
        yield radio


@pytest.fixture
def meter(link: BleLink) -> Iterator[BumblePeripheral]:
    device = BumblePeripheral(
        link,
        name="bp-meter",
        profiles=["blood_pressure", "heart_rate", "battery", "device_information", "immediate_alert"],
        values={"2A19": bytes([76]), "2A29": b"Acme Medical"},
        encrypted=["2A25"],  # the serial number needs an encrypted link
    )
    device.start_advertising()
    yield device
    device.close()


@pytest.fixture
def central(link: BleLink) -> Iterator[BumbleCentral]:
    c = BumbleCentral(link=link, name="gateway")
    yield c
    c.close()


def connected(central: BumbleCentral, meter: BumblePeripheral) -> BumbleCentral:
    central.connect(meter.address)
    assert meter.wait_connected(5.0)
    return central


def test_discovers_services_and_reads_battery_and_device_information(
    central: BumbleCentral, meter: BumblePeripheral
) -> None:
    connected(central, meter)
    services = central.services()
    assert services["1810"] == ["2A35", "2A36", "2A49"]
    assert services["180D"] == ["2A37", "2A38", "2A39"]
    assert "2A19" in services["180F"]
    assert h.decode("2A19", central.read("2A19")) == h.BatteryLevel(q(76, h.PERCENT))
    assert h.decode("2A29", central.read(0x2A29)).text == "Acme Medical"
    meter.set_value("2A19", bytes([75]))
    assert central.read("00002a19-0000-1000-8000-00805f9b34fb") == bytes([75])


def test_blood_pressure_indication_arrives_decoded_equal_to_what_was_injected(
    central: BumbleCentral, meter: BumblePeripheral
) -> None:
    connected(central, meter)
    arrived: queue.Queue[Notification] = queue.Queue()
    central.start_notify("2A35", arrived.put)
    assert meter.wait_subscribed("2A35", 5.0)
    reading = h.BloodPressureMeasurement(
        q(142, h.MMHG), q(91, h.MMHG), q(108, h.MMHG),
        timestamp=h.DateTime(2025, 5, 17, 8, 30, 0), pulse_rate=q(77, h.BPM), user_id=2,
        status=h.BpmStatus.IRREGULAR_PULSE,
    )  # fmt: skip
    before = time.monotonic_ns()
    sent = meter.send_reading(reading)  # an indication: returns once the central confirmed it
    after = time.monotonic_ns()
    got = arrived.get(timeout=5.0)
    assert got.uuid == "2A35" and got.indication and got.value == sent
    assert h.decode(got.uuid, got.value) == reading
    assert before <= got.arrived_ns <= after  # stamped in the stack's callback, before the confirmation


def test_heart_rate_notifications_arrive_all_and_in_order(central: BumbleCentral, meter: BumblePeripheral) -> None:
    connected(central, meter)
    arrived: queue.Queue[Notification] = queue.Queue()
    central.start_notify("2A37", arrived.put)
    sent = [h.HeartRateMeasurement(q(60 + i, h.BPM), h.SensorContact.DETECTED) for i in range(30)]
    for reading in sent:
        meter.send_reading(reading)
    got = [arrived.get(timeout=5.0) for _ in sent]
    assert [h.decode(n.uuid, n.value) for n in got] == sent
    assert not any(n.indication for n in got)
    stamps = [n.arrived_ns for n in got]
    assert stamps == sorted(stamps)
    central.stop_notify("2A37")
    meter.send_reading(sent[0])
    assert central.read("2A19")  # a round trip after the stop: any stray notification would have arrived by now
    assert arrived.empty()


def test_writes_reach_the_peripheral_stamped(central: BumbleCentral, meter: BumblePeripheral) -> None:
    connected(central, meter)
    central.write("2A06", h.encode(h.AlertLevel(h.AlertLevelValue.HIGH_ALERT)), response=False)
    central.write("2A39", b"\x01")  # heart rate control point: reset energy expended
    deadline = time.monotonic() + 5.0
    while len(meter.written) < 2 and time.monotonic() < deadline:
        central.read("2A19")  # round trips, so the write without response has surely been delivered
    assert [(w.uuid, w.value) for w in meter.written] == [("2A06", b"\x02"), ("2A39", b"\x01")]
    assert meter.written[0].arrived_ns <= meter.written[1].arrived_ns


def test_pairing_encrypts_the_link_and_unlocks_protected_values(
    central: BumbleCentral, meter: BumblePeripheral
) -> None:
    connected(central, meter)
    with pytest.raises(BleAccessDenied, match="INSUFFICIENT_ENCRYPTION"):
        central.read("2A25")
    assert not central.is_encrypted
    central.pair()
    assert central.is_encrypted
    assert central.read("2A25") == b"0001"


def test_disconnect_and_reconnect_restores_bond_and_subscriptions(
    central: BumbleCentral, meter: BumblePeripheral
) -> None:
    connected(central, meter)
    central.pair()
    arrived: queue.Queue[Notification] = queue.Queue()
    central.start_notify("2A35", arrived.put)
    central.disconnect()
    assert not central.is_connected
    with pytest.raises(BleError, match="not connected"):
        central.read("2A19")
    central.reconnect()  # the meter advertises again by itself after the disconnection
    assert central.is_connected and central.is_encrypted  # re-encrypted with the bond, no new pairing
    assert central.read("2A25") == b"0001"
    reading = h.BloodPressureMeasurement(q("16.1", h.KPA), q("10.2", h.KPA), q("12.1", h.KPA))
    meter.send_reading(reading)
    assert h.decode("2A35", arrived.get(timeout=5.0).value) == reading


def test_peripheral_disconnect_is_seen_by_the_central(central: BumbleCentral, meter: BumblePeripheral) -> None:
    connected(central, meter)
    meter.disconnect()
    assert central.wait_disconnected(5.0)
    assert not central.is_connected


def test_peripheral_vanishing_mid_read_gives_a_clean_timeout_not_a_hang(
    central: BumbleCentral, meter: BumblePeripheral
) -> None:
    connected(central, meter)
    meter.fault_vanish_on_read("2A19")
    with pytest.raises(BleTimeout, match=r"read 2A19: no answer within 0\.3 s"):
        central.read("2A19", timeout_s=0.3)
    central.disconnect(timeout_s=5.0)  # best effort, bounded: the peer cannot answer
    assert not central.is_connected
    meter.reappear()


def test_unknown_characteristic_and_not_connected_errors(central: BumbleCentral, meter: BumblePeripheral) -> None:
    with pytest.raises(BleError, match="not connected"):
        central.read("2A19")
    connected(central, meter)
    with pytest.raises(BleError, match="no characteristic 2A5E"):
        central.read("2A5E")
    with pytest.raises(BleError, match="already connected"):
        central.connect(meter.address)


def test_scan_sees_bthome_button_events(link: BleLink, central: BumbleCentral) -> None:
    button = BumblePeripheral(link, name="knapp", profiles=[])
    try:
        for packet_id in (1, 2, 3):
            payload = bthome.encode(
                [(0x00, packet_id), (0x01, 90), (0x3A, bthome.ButtonEvent.PRESS)], trigger_based=True
            )
            button.start_advertising(ble_adv.ad_flags() + bthome.service_data_ad(payload), connectable=False)

            def is_this_press(a: Advertisement, n: int = packet_id) -> bool:
                d = a.decoded()
                return a.address == button.address and d.bthome is not None and d.bthome.packet_id == n

            seen = central.scan(5.0, until=is_this_press)
            ours = [a for a in seen if a.address == button.address]
            assert ours  # (Bumble's emulated controller reports every advertisement as connectable ADV_IND)
            packet = ours[-1].decoded().bthome
            assert packet is not None and packet.packet_id == packet_id
            assert packet.button_events == [bthome.ButtonEvent.PRESS] and packet.trigger_based
    finally:
        button.close()


def test_scan_sees_encrypted_bthome_and_vendor_alarm_data(link: BleLink, central: BumbleCentral) -> None:
    key = bytes.fromhex("00112233445566778899aabbccddeeff")
    sensor = BumblePeripheral(link, name="fall", profiles=[])
    try:
        state = ble_adv.AlarmButtonAdvert(ble_adv.AlarmState.FALL, 64, 41)
        sealed = bthome.encode([(0x3A, bthome.ButtonEvent.LONG_PRESS)], key=key, address=sensor.address, counter=9)
        data = ble_adv.ad_manufacturer(0xFFFF, state.to_bytes()) + bthome.service_data_ad(sealed)
        sensor.start_advertising(data, connectable=False)
        seen = central.scan(5.0, until=lambda a: a.address == sensor.address)
        decoded = seen[-1].decoded(bthome_key=key)
        assert decoded.manufacturer == ((0xFFFF, state),)
        assert decoded.bthome is not None and decoded.bthome.counter == 9
        assert decoded.bthome.button_events == [bthome.ButtonEvent.LONG_PRESS]
        assert "bind key" in str(seen[-1].decoded().errors[0])  # without the key: refused, clearly
    finally:
        sensor.close()


def test_bumble_on_a_real_controller_transport_that_is_not_there_fails_cleanly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nobody listens once the socket closes
    with pytest.raises(BleError, match="open Bumble transport tcp-client"):
        BumbleCentral(transport=f"tcp-client:127.0.0.1:{port}", open_timeout_s=3.0)


@pytest.mark.hardware
def test_bleak_central_against_a_real_health_device() -> None:
    """Needs a Bluetooth adapter and a device advertising at VTLAB_BLE_ADDRESS (a meter with a battery service)."""
    address = os.environ.get("VTLAB_BLE_ADDRESS")
    if not address:
        pytest.skip("set VTLAB_BLE_ADDRESS to a real BLE device's address to run this")
    from harness.transports.ble import BleakCentral

    central = BleakCentral()
    try:
        seen = central.scan(10.0, until=lambda a: a.address.upper() == address.upper())
        assert any(a.address.upper() == address.upper() for a in seen)
        central.connect(address, timeout_s=20.0)
        assert "180F" in central.services()
        assert h.decode("2A19", central.read("2A19")).level.unit == h.PERCENT
    finally:
        central.close()
