"""vtlab's vendor alarm service (128-bit UUIDs) served by a BumblePeripheral and used by a BumbleCentral over
Bumble's emulated link: discovery names the 128-bit service and characteristic, the advertisement lists the
service, a subscription is refused until the link is encrypted (the profile asks for pairing), and the alarm
value arrives as a notification or, when the central asks for it, as a confirmed indication."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from harness.protocols import ble_adv, ble_alarm
from harness.transports.ble import BleAccessDenied, BumbleCentral, BumblePeripheral, Notification
from harness.transports.ble_link import BleLink

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def link() -> Iterator[BleLink]:
    with BleLink() as radio:
        yield radio


@pytest.fixture
def button(link: BleLink) -> Iterator[BumblePeripheral]:
    device = BumblePeripheral(
        link, name="vtlab-knapp-ragnhild", profiles=["vtlab_alarm", "battery"], encrypted=[ble_alarm.ALARM_UUID]
    )
    device.start_advertising()
    yield device
    device.close()


@pytest.fixture
def central(link: BleLink) -> Iterator[BumbleCentral]:
    c = BumbleCentral(link=link, name="gateway")
    yield c
    c.close()


def test_the_advertisement_lists_the_128_bit_alarm_service(central: BumbleCentral, button: BumblePeripheral) -> None:
    seen = central.scan(5.0, until=lambda a: a.address == button.address)
    mine = [a for a in seen if a.address == button.address]
    assert mine and mine[-1].connectable
    parsed = ble_adv.parse(mine[-1].data)
    assert parsed.service_uuids[0] == ble_alarm.SERVICE_UUID and "180F" in parsed.service_uuids
    assert len(mine[-1].data) <= 31 and parsed.local_name and "vtlab-knapp-ragnhild".startswith(parsed.local_name)


def test_discovery_names_the_vendor_service_and_the_alarm_characteristic(
    central: BumbleCentral, button: BumblePeripheral
) -> None:
    central.connect(button.address)
    services = central.services()
    assert services[ble_alarm.SERVICE_UUID] == [ble_alarm.ALARM_UUID]
    assert services["180F"] == ["2A19"]
    with pytest.raises(BleAccessDenied):  # any spelling of the UUID; the alarm is not read in the clear
        central.read(ble_alarm.ALARM_UUID.upper())
    assert central.read("00002a19-0000-1000-8000-00805f9b34fb") == bytes([100])


def test_subscribing_needs_pairing_and_the_alarm_then_arrives_as_a_notification(
    central: BumbleCentral, button: BumblePeripheral
) -> None:
    got: queue.Queue[Notification] = queue.Queue()
    central.connect(button.address)
    with pytest.raises(BleAccessDenied):
        central.start_notify(ble_alarm.ALARM_UUID, got.put)
    assert not button.wait_subscribed(ble_alarm.ALARM_UUID, 0.2)
    central.pair()
    central.start_notify(ble_alarm.ALARM_UUID, got.put)
    assert button.wait_subscribed(ble_alarm.ALARM_UUID, 5.0)
    sent = [ble_alarm.AlarmValue(e, 90, n).to_bytes() for n, e in enumerate(ble_alarm.AlarmEvent, start=1)]
    for value in sent:
        button.send(ble_alarm.ALARM_UUID, value)
    notes = [got.get(timeout=5.0) for _ in sent]
    assert [n.value for n in notes] == sent and not any(n.indication for n in notes)
    assert {n.uuid for n in notes} == {ble_alarm.ALARM_UUID}
    assert [ble_alarm.decode(n.value).event for n in notes] == list(ble_alarm.AlarmEvent)
    assert central.read(ble_alarm.ALARM_UUID) == sent[-1]  # the last alarm stays readable on the encrypted link


def test_a_central_asking_for_indications_gets_confirmed_delivery(
    central: BumbleCentral, button: BumblePeripheral
) -> None:
    got: queue.Queue[Notification] = queue.Queue()
    central.connect(button.address)
    central.pair()
    central.start_notify(ble_alarm.ALARM_UUID, got.put, indicate=True)
    assert button.wait_subscribed(ble_alarm.ALARM_UUID, 5.0)
    value = ble_alarm.AlarmValue(ble_alarm.AlarmEvent.FALL, None, 7).to_bytes()
    button.send(ble_alarm.ALARM_UUID, value)  # returns once the central confirmed
    note = got.get(timeout=5.0)
    assert note.indication and note.value == value
    assert got.empty()  # one delivery, not a notification and an indication


def test_a_disconnection_ends_the_subscription_until_the_central_subscribes_again(
    central: BumbleCentral, button: BumblePeripheral
) -> None:
    got: queue.Queue[Notification] = queue.Queue()
    central.connect(button.address)
    central.pair()
    central.start_notify(ble_alarm.ALARM_UUID, got.put)
    assert button.wait_subscribed(ble_alarm.ALARM_UUID, 5.0)
    button.disconnect()
    assert central.wait_disconnected(5.0)
    assert not button.wait_subscribed(ble_alarm.ALARM_UUID, 0.2)  # nobody listens: a sender must hold its alarm
    central.reconnect()  # re-encrypts with the bond and subscribes again
    assert button.wait_subscribed(ble_alarm.ALARM_UUID, 5.0)
    value = ble_alarm.AlarmValue(ble_alarm.AlarmEvent.PRESS, 50, 2).to_bytes()
    button.send(ble_alarm.ALARM_UUID, value)
    assert got.get(timeout=5.0).value == value
