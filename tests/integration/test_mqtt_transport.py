"""The MQTT transport against real brokers: MQTT 3.1.1 and 5, TLS with a CA and client certificates,
and the refusals a tester must see clearly (no client certificate, wrong CA, wrong password)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import TargetError
from harness.lab.broker import RunningBroker, find_mosquitto, start_broker
from harness.pki import TestPki, make_pki
from harness.transports.base import Message
from harness.transports.mqtt import MqttSettings, MqttTransport

# in CI a missing mosquitto fails these tests instead of skipping them (tools/system-packages.txt installs it)
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None and not os.environ.get("CI"),
                                     reason="mosquitto is not installed")


def roundtrip(settings: MqttSettings) -> Message:
    """Publish one message to ourselves; return it as it arrived (stamped)."""
    got: list[Message] = []
    arrived = threading.Event()
    t = MqttTransport(settings, "roundtrip")
    t.connect()
    try:
        t.subscribe("vtlab/test/#", lambda m: (got.append(m), arrived.set()))
        t.publish("vtlab/test/x", b'{"v": 1}')
        assert arrived.wait(5), "the message did not come back"
    finally:
        t.close()
    return got[0]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("pki"), clients=("device", "other"))


@pytest.fixture(scope="module")
def tls_broker(pki: TestPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    with start_broker(tmp_path_factory.mktemp("tls"), tls=pki.server_tls(require_client_cert=True),
                      kind="mosquitto") as broker:
        yield broker


@needs_mosquitto
@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_publish_and_subscribe_with_both_mqtt_versions(tmp_path: Path, version: str) -> None:
    with start_broker(tmp_path, kind="mosquitto") as broker:
        message = roundtrip(MqttSettings(url=broker.url, version=version))
    assert message.payload == b'{"v": 1}' and message.arrived_ns > 0


@needs_mosquitto
def test_tls_with_a_client_certificate(tls_broker: RunningBroker, pki: TestPki) -> None:
    client = pki.clients["device"]
    settings = MqttSettings(url=tls_broker.url, ca=pki.ca_cert, cert=client.cert, key=client.key)
    assert tls_broker.url.startswith("mqtts://")
    assert roundtrip(settings).topic == "vtlab/test/x"


@needs_mosquitto
def test_tls_without_a_client_certificate_is_refused_clearly(tls_broker: RunningBroker, pki: TestPki) -> None:
    with pytest.raises(TargetError) as info:
        roundtrip(MqttSettings(url=tls_broker.url, ca=pki.ca_cert, connect_timeout_s=3))
    assert tls_broker.url.split("://")[1] in str(info.value)


@needs_mosquitto
def test_a_broker_certificate_from_another_ca_is_refused(
    tls_broker: RunningBroker, pki: TestPki, tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path / "other", clients=("device",))
    client = pki.clients["device"]
    with pytest.raises(TargetError, match="TLS handshake"):
        roundtrip(MqttSettings(url=tls_broker.url, ca=stranger.ca_cert, cert=client.cert, key=client.key))


@needs_mosquitto
def test_a_wrong_password_is_refused_clearly(tmp_path: Path) -> None:
    with start_broker(tmp_path, users={"alarm": "riktig"}, kind="mosquitto") as broker:
        with pytest.raises(TargetError, match="refused the connection"):
            roundtrip(MqttSettings(url=broker.url, username="alarm", password="feil", connect_timeout_s=3))
        assert roundtrip(MqttSettings(url=broker.url, username="alarm", password="riktig")).payload


def test_the_amqtt_broker_works_with_mqtt_3_1_1(tmp_path: Path) -> None:
    with start_broker(tmp_path, kind="amqtt") as broker:
        assert broker.kind == "amqtt"
        assert roundtrip(MqttSettings(url=broker.url, version="3.1.1")).payload == b'{"v": 1}'
