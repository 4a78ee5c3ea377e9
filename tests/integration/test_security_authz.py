"""Authorisation on the reference lab's MQTT interface (mosquitto, MQTT 5, client certificates), each check
shown both ways: the lab with its access rules refuses (reason code 0x87 asserted) and the same lab with
`broker.access_rules: false` lets the attempt through, which the check reports as a finding. Session
takeover by another identity: mosquitto hands the session over by default (a finding); bound client ids
(`use_username_as_clientid`) keep it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_fixtures import require_mosquitto
from test_security_tls import mosquitto_with, tls_lines

from harness.lab.config import LabConfig
from harness.lab.process import LabProcess
from harness.outcomes import Outcome
from harness.pki import TestPki, make_pki
from harness.security import mqtt_checks
from harness.transports.mqtt import MqttSettings

DATA: dict[str, Any] = {
    "site": "s",
    "broker": {"kind": "mosquitto", "mqtt_version": "5"},
    "devices": {"d1": {"user": "persona/a"}, "d2": {"user": "persona/b"}},
    "centres": ["rc-a", "rc-b"],
    "routing": {"persona/a": "rc-a", "persona/b": "rc-b"},
}


class Lab:
    def __init__(self, lab: LabProcess, pki: TestPki) -> None:
        self.lab, self.pki = lab, pki

    def who(self, identity: str) -> MqttSettings:
        c = self.pki.clients[identity]
        return MqttSettings(self.lab.broker_url, "5", ca=self.pki.ca_cert, cert=c.cert, key=c.key, connect_timeout_s=3)


def _start(tmp_path: Path, access_rules: bool) -> Iterator[Lab]:
    require_mosquitto()
    data = {**DATA, "broker": {**DATA["broker"], "access_rules": access_rules}}
    pki = make_pki(tmp_path / "pki", LabConfig.model_validate(data).identities(), keep_ca_key=False)
    data["broker"]["tls"] = {
        "ca": pki.ca_cert,
        "server_cert": pki.server_cert,
        "server_key": pki.server_key,
        "client_cert": pki.clients["lab"].cert,
        "client_key": pki.clients["lab"].key,
        "control_cert": pki.clients["harness"].cert,
        "control_key": pki.clients["harness"].key,
    }
    with LabProcess(LabConfig.model_validate(data), tmp_path / "lab") as lab:
        yield Lab(lab, pki)


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[Lab]:
    yield from _start(tmp_path / "secure", True)


@pytest.fixture
def open_lab(tmp_path: Path) -> Iterator[Lab]:
    yield from _start(tmp_path / "open", False)


def publish_as_d2(lab: Lab) -> mqtt_checks.CheckResult:
    return mqtt_checks.publish_as_other_device(
        lab.who("device-d1"),
        "vtlab/s/device/d2/event",
        "d2",
        "persona/b",
        lab.who("centre-rc-b"),
        "vtlab/s/centre/rc-b/alarm",
        within_s=3,
    )


def test_a_device_cannot_publish_as_another_on_the_secure_lab_and_can_on_the_open_one(
    secure: Lab, open_lab: Lab
) -> None:
    good = publish_as_d2(secure)
    assert good.outcome is Outcome.REFUSED and good.refusal is not None
    assert good.refusal["puback"] == "0x87 Not authorized"
    bad = publish_as_d2(open_lab)
    assert bad.outcome is Outcome.ACCEPTED and bad.refusal is not None and bad.refusal["routed"] is True
    assert "device-d1" in bad.detail and "`d2`" in bad.detail


def read_rc_b(lab: Lab) -> mqtt_checks.CheckResult:
    return mqtt_checks.read_other_centre(
        lab.who("device-d1"),
        "vtlab/s/centre/rc-b/alarm",
        lab.who("device-d2"),
        "vtlab/s/device/d2/event",
        "d2",
        "persona/b",
        lab.who("centre-rc-b"),
        within_s=3,
    )


def test_a_device_cannot_read_another_centres_alarms_on_the_secure_lab_and_can_on_the_open_one(
    secure: Lab, open_lab: Lab
) -> None:
    good = read_rc_b(secure)
    assert good.outcome is Outcome.REFUSED, good.detail
    if secure.lab.access_control == "dynsec":
        assert good.refusal == {"suback": "0x87 Not authorized"}
    bad = read_rc_b(open_lab)
    assert bad.outcome is Outcome.ACCEPTED and bad.refusal is not None and bad.refusal["canary_reached_spy"]


def test_the_control_topic_is_refused_on_the_secure_lab_and_open_on_the_open_one(secure: Lab, open_lab: Lab) -> None:
    good = mqtt_checks.publish_to_control(secure.who("device-d1"), "vtlab/s/lab/control", within_s=3)
    assert good.outcome is Outcome.REFUSED and good.refusal is not None
    assert good.refusal["puback"] == "0x87 Not authorized"
    bad = mqtt_checks.publish_to_control(open_lab.who("device-d1"), "vtlab/s/lab/control", within_s=3)
    assert bad.outcome is Outcome.ACCEPTED
    assert [x["spec"] for x in open_lab.lab.ledger() if x["action"] == "faults"] == [""]  # nothing changed


def test_the_control_topic_check_needs_mqtt5_and_says_so(secure: Lab) -> None:
    import dataclasses

    v311 = dataclasses.replace(secure.who("device-d1"), version="3.1.1")
    with pytest.raises(mqtt_checks.CannotCheck, match="MQTT 5"):
        mqtt_checks.publish_to_control(v311, "vtlab/s/lab/control")


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return make_pki(tmp_path / "pki", clients=("device-a", "device-b"))


def who(port: int, pki: TestPki, identity: str) -> MqttSettings:
    c = pki.clients[identity]
    return MqttSettings(f"mqtts://127.0.0.1:{port}", "5", ca=pki.ca_cert, cert=c.cert, key=c.key)


def test_session_takeover_by_another_identity_is_a_finding_unless_client_ids_are_bound(
    tmp_path: Path, pki: TestPki
) -> None:
    (tmp_path / "default").mkdir()
    for port in mosquitto_with(tmp_path / "default", tls_lines(pki)):
        bad = mqtt_checks.session_takeover(who(port, pki, "device-a"), who(port, pki, "device-b"), within_s=3)
        same = mqtt_checks.session_takeover(
            who(port, pki, "device-a"), who(port, pki, "device-a"), same_identity=True, within_s=3
        )
    assert bad.outcome is Outcome.ACCEPTED and bad.refusal is not None
    # what mosquitto 2.0.11 does is recorded as paho saw it (the socket closed: 0x80; newer brokers send 0x8E)
    assert bad.refusal["first_disconnect"] in ("0x8E Session taken over", "0x80 Unspecified error")
    assert same.outcome is Outcome.REFUSED and same.refusal is not None
    assert same.refusal["first_disconnect"] != "still connected"
    (tmp_path / "bound").mkdir()
    for port in mosquitto_with(tmp_path / "bound", [*tls_lines(pki), "use_username_as_clientid true"]):
        good = mqtt_checks.session_takeover(who(port, pki, "device-a"), who(port, pki, "device-b"), within_s=2)
    assert good.outcome is Outcome.REFUSED, good.detail
    assert good.refusal is not None and good.refusal["first_disconnect"] == "still connected"
