"""start_broker against real brokers: mosquitto, the amqtt fallback, TLS with client certs, users/ACL."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from lab_fixtures import Peer

from harness.errors import InputError, TargetError
from harness.lab.broker import TlsFiles, find_mosquitto, start_broker
from harness.pki import make_pki

needs_mosquitto = pytest.mark.skipif(
    find_mosquitto() is None and not os.environ.get("CI"),  # in CI a missing mosquitto fails the test
    reason="mosquitto is not installed (apt install mosquitto)",
)


def _roundtrip(url: str, **kw: object) -> None:
    with Peer(url, subscribe=["t/#"], **kw) as p:  # type: ignore[arg-type]
        p.publish("t/x", {"v": 1})
        got = p.wait_count(1)
        assert got[0].json() == {"v": 1}


def _port_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


@needs_mosquitto
def test_mosquitto_starts_serves_and_stops(tmp_path: Path) -> None:
    with start_broker(tmp_path, kind="mosquitto") as b:
        assert b.kind == "mosquitto"
        assert b.url == f"mqtt://127.0.0.1:{b.port}"
        _roundtrip(b.url)
        conf = (tmp_path / "mosquitto.conf").read_text()
        assert f"listener {b.port} 127.0.0.1" in conf and "persistence false" in conf
    assert not b.alive
    assert _port_closed(b.port)


def test_amqtt_forced(tmp_path: Path) -> None:
    with start_broker(tmp_path, kind="amqtt") as b:
        assert b.kind == "amqtt"
        _roundtrip(b.url)
        _roundtrip(b.url, v5=False)
    assert not b.alive


@needs_mosquitto
def test_auto_prefers_mosquitto(tmp_path: Path) -> None:
    with start_broker(tmp_path) as b:
        assert b.kind == "mosquitto"


@needs_mosquitto
def test_tls_with_client_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", ["device-1"])
    with start_broker(tmp_path / "b", tls=pki.server_tls()) as b:
        assert b.url.startswith("mqtts://127.0.0.1:")
        dev = pki.clients["device-1"]
        _roundtrip(b.url, ca=pki.ca_cert, cert=dev.cert, key=dev.key)
        with pytest.raises((ConnectionError, OSError, TimeoutError)):
            Peer(b.url, subscribe=["t/#"], ca=pki.ca_cert, timeout_s=2)


def test_amqtt_tls_server_side(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", [])
    with start_broker(tmp_path / "b", tls=pki.server_tls(require_client_cert=False), kind="amqtt") as b:
        _roundtrip(b.url, ca=pki.ca_cert)


@needs_mosquitto
def test_users_and_acl(tmp_path: Path) -> None:
    acl = ["user alice", "topic readwrite t/#"]
    with start_broker(tmp_path, users={"alice": "s3cret"}, acl=acl) as b:
        _roundtrip(b.url, username="alice", password="s3cret")
        with pytest.raises(ConnectionRefusedError):
            Peer(b.url, username="alice", password="wrong", timeout_s=2)
        with pytest.raises(ConnectionRefusedError):
            Peer(b.url, timeout_s=2)


@needs_mosquitto
def test_broker_that_does_not_come_up_reports_its_log(tmp_path: Path) -> None:
    bad = TlsFiles(tmp_path / "nope.pem", tmp_path / "nope.pem", tmp_path / "nope.key")
    with pytest.raises(TargetError) as e:
        start_broker(tmp_path, tls=bad, ready_timeout_s=5)
    assert "did not come up" in e.value.problem
    assert "nope.pem" in e.value.problem  # the log tail names the file mosquitto could not load


def test_access_rules_render_for_mosquitto_and_refuse_injection() -> None:
    from harness.lab.broker import AccessRule, dynsec_config, mosquitto_acl

    rules = [
        AccessRule(identity="device-d1", access="publish", topic_filter="v/s/device/d1/event"),
        AccessRule(identity="device-d1", access="subscribe", topic_filter="v/s/device/d1/ack"),
    ]
    assert mosquitto_acl(rules).splitlines()[1:] == [
        "user device-d1",
        "topic write v/s/device/d1/event",
        "topic read v/s/device/d1/ack",
    ]
    role = dynsec_config(rules)["roles"][0]
    assert {(a["acltype"], a["topic"]) for a in role["acls"]} == {
        ("publishClientSend", "v/s/device/d1/event"),
        ("subscribePattern", "v/s/device/d1/ack"),
        ("publishClientReceive", "v/s/device/d1/ack"),
    }
    assert dynsec_config(rules)["defaultACLAccess"]["subscribe"] is False
    evil = AccessRule(identity="device-x", access="publish", topic_filter="a\nuser lab\ntopic readwrite #")
    with pytest.raises(InputError, match="line break"):
        mosquitto_acl([evil])


def test_access_rules_need_client_certificates(tmp_path: Path) -> None:
    from harness.lab.broker import AccessRule

    rule = AccessRule(identity="lab", access="subscribe", topic_filter="#")
    with pytest.raises(InputError, match="client certificates"):
        start_broker(tmp_path, access=[rule])
