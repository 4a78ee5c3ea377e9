"""Access rules of the reference lab's broker (mosquitto, MQTT 5): each certificate identity may use only
its own topics. The broker's own answers are asserted (SUBACK/PUBACK reason code 0x87 Not authorized),
and the lab's ledger shows that nothing forbidden was routed.

mosquitto's dynamic-security plugin refuses a forbidden subscription with 0x87; with the plain acl_file
(VTLAB_MOSQUITTO_DYNSEC=none) the subscription is granted but nothing is delivered. Both are tested.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_fixtures import NOT_AUTHORIZED, Peer, require_mosquitto, wait_until

from harness.lab.broker import find_dynsec
from harness.lab.config import LabConfig
from harness.lab.process import LabProcess
from harness.pki import TestPki, make_pki

OK = {0x00, 0x10}  # Success, No matching subscribers
RETAIN_NOT_SUPPORTED = "Retain not supported"


def _event(cid: str, device: str) -> dict[str, Any]:
    return {"v": 1, "cid": cid, "device": device, "user": "persona/a", "event": "personal_emergency", "code": "101"}


class SecureLab:
    def __init__(self, lab: LabProcess, pki: TestPki) -> None:
        self.lab = lab
        self.pki = pki

    def peer(self, identity: str, subscribe: list[str] | None = None) -> Peer:
        c = self.pki.clients[identity]
        return Peer(
            self.lab.broker_url, subscribe=subscribe or [], ca=self.pki.ca_cert, cert=c.cert, key=c.key, v5=True
        )

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [x for x in self.lab.ledger() if x["action"] == action]


def _start(tmp_path: Path) -> Iterator[SecureLab]:
    require_mosquitto()
    data: dict[str, Any] = {
        "site": "s",
        "broker": {"kind": "mosquitto", "mqtt_version": "5"},
        "devices": {"d1": {"user": "persona/a"}, "d2": {"user": "persona/b"}},
        "centres": ["rc-a", "rc-b"],
        "routing": {"persona/a": "rc-a", "persona/b": "rc-b"},
    }
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
        yield SecureLab(lab, pki)


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureLab]:
    yield from _start(tmp_path)


@pytest.fixture
def acl_file_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SecureLab]:
    monkeypatch.setenv("VTLAB_MOSQUITTO_DYNSEC", "none")  # inherited by the lab process
    yield from _start(tmp_path)


def test_legitimate_flow_works_with_own_identities(secure: SecureLab) -> None:
    with (
        secure.peer("centre-rc-a", ["vtlab/s/centre/rc-a/alarm"]) as centre,
        secure.peer("device-d1", ["vtlab/s/device/d1/ack"]) as dev,
    ):
        assert centre.suback == [1] and dev.suback == [1]
        assert dev.publish_rc("vtlab/s/device/d1/event", _event("ok-1", "d1")) in OK
        alarm = centre.wait_count(1)[0].json()
        assert alarm["cid"] == "ok-1" and alarm["centre"] == "rc-a"
        ack = {"v": 1, "cid": "ok-1", "centre": "rc-a", "action": "acknowledged"}
        assert centre.publish_rc("vtlab/s/centre/rc-a/ack", ack) in OK
        assert dev.wait_count(1)[0].json()["cid"] == "ok-1"
        assert dev.publish_rc("vtlab/s/device/d1/heartbeat", {"v": 1, "device": "d1", "interval_s": 60}) in OK
    assert secure.lab.set_faults("drop=0").drop == 0  # the harness identity may change faults
    assert secure.lab.access_control in ("dynsec", "acl_file")


def test_device_cannot_read_another_centres_alarms(secure: SecureLab) -> None:
    with (
        secure.peer("centre-rc-b", ["vtlab/s/centre/rc-b/alarm"]) as rc_b,
        secure.peer("device-d1") as spy,
        secure.peer("device-d2") as d2,
    ):
        code = spy.subscribe("vtlab/s/centre/rc-b/alarm")
        wide = spy.subscribe("vtlab/s/#")
        if find_dynsec() is not None:
            assert (code, wide) == (NOT_AUTHORIZED, NOT_AUTHORIZED)
        assert d2.publish_rc("vtlab/s/device/d2/event", _event("b-1", "d2")) in OK
        assert rc_b.wait_count(1)[0].json()["cid"] == "b-1"
        d2.publish_rc("vtlab/s/device/d2/event", _event("b-2", "d2"))
        rc_b.wait_count(2)
        assert spy.arrivals == []  # the rightful centre got both; the spy nothing


def test_device_cannot_publish_to_the_control_topic(secure: SecureLab) -> None:
    with secure.peer("device-d1") as dev:
        assert dev.publish_rc("vtlab/s/lab/control", {"v": 1, "faults": "drop=1"}) == NOT_AUTHORIZED
    with secure.peer("centre-rc-a") as centre:
        assert centre.publish_rc("vtlab/s/lab/control", {"v": 1, "faults": "drop=1"}) == NOT_AUTHORIZED
    assert [x["spec"] for x in secure.actions("faults")] == [""]  # never switched on


def test_centre_cannot_acknowledge_for_another_centre(secure: SecureLab) -> None:
    with (
        secure.peer("centre-rc-b", ["vtlab/s/centre/rc-b/alarm"]) as rc_b,
        secure.peer("centre-rc-a") as rc_a,
        secure.peer("device-d2", ["vtlab/s/device/d2/ack"]) as d2,
    ):
        d2.publish_rc("vtlab/s/device/d2/event", _event("x-1", "d2"))
        rc_b.wait_count(1)
        forged = {"v": 1, "cid": "x-1", "centre": "rc-b", "action": "acknowledged"}
        assert rc_a.publish_rc("vtlab/s/centre/rc-b/ack", forged) == NOT_AUTHORIZED
        # on its own ack topic the broker lets it through, and the lab refuses it
        assert rc_a.publish_rc("vtlab/s/centre/rc-a/ack", {**forged, "centre": "rc-a"}) in OK
        wait_until(lambda: len(secure.actions("rejected")) == 1, what="the lab refuses the foreign ack")
        assert d2.arrivals == []
    reason = secure.actions("rejected")[0]["reason"]
    assert reason == "ack from centre `rc-a` for an alarm routed to another centre"
    assert secure.actions("ack") == []


def test_device_cannot_publish_as_another_device(secure: SecureLab) -> None:
    with secure.peer("centre-rc-b", ["vtlab/s/centre/rc-b/alarm"]) as rc_b, secure.peer("device-d1") as d1:
        assert d1.publish_rc("vtlab/s/device/d2/event", _event("fake-1", "d2")) == NOT_AUTHORIZED
        assert d1.publish_rc("vtlab/s/device/d2/heartbeat", {"v": 1, "device": "d2", "interval_s": 1}) == NOT_AUTHORIZED
        # its own topic, another device's name in the payload: the lab refuses it
        assert d1.publish_rc("vtlab/s/device/d1/event", _event("fake-2", "d2")) in OK
        wait_until(lambda: len(secure.actions("rejected")) == 1, what="the lab refuses the impostor")
        assert rc_b.arrivals == []
    assert secure.actions("rejected")[0]["reason"] == "payload device `d2` is not the topic's device"
    assert secure.actions("routed") == []


def test_no_retained_alarms(secure: SecureLab) -> None:
    with secure.peer("device-d1") as dev:
        dev.client.publish("vtlab/s/device/d1/event", json.dumps(_event("r-1", "d1")).encode(), qos=1, retain=True)
        with dev._cond:
            assert dev._cond.wait_for(lambda: dev.disconnect_reason is not None, 5)
        assert dev.disconnect_reason == RETAIN_NOT_SUPPORTED
    with secure.peer("centre-rc-a", ["vtlab/s/centre/rc-a/alarm"]) as late, secure.peer("device-d1") as dev:
        assert dev.publish_rc("vtlab/s/device/d1/event", _event("r-2", "d1")) in OK
        assert [a.json()["cid"] for a in late.wait_count(1)] == ["r-2"]  # nothing retained came first


def test_acl_file_mode_denies_publishes_and_delivers_nothing_forbidden(acl_file_lab: SecureLab) -> None:
    assert acl_file_lab.lab.access_control == "acl_file"
    with (
        acl_file_lab.peer("centre-rc-a", ["vtlab/s/centre/rc-a/alarm"]) as rc_a,
        acl_file_lab.peer("device-d2") as spy,
        acl_file_lab.peer("device-d1") as d1,
    ):
        spy.subscribe("vtlab/s/centre/rc-a/alarm")  # granted by acl_file, but never served
        assert d1.publish_rc("vtlab/s/lab/control", {"v": 1, "faults": "drop=1"}) == NOT_AUTHORIZED
        assert d1.publish_rc("vtlab/s/device/d2/event", _event("f-1", "d2")) == NOT_AUTHORIZED
        assert d1.publish_rc("vtlab/s/device/d1/event", _event("a-1", "d1")) in OK
        assert [a.json()["cid"] for a in rc_a.wait_count(1)] == ["a-1"]
        d1.publish_rc("vtlab/s/device/d1/event", _event("a-2", "d1"))
        rc_a.wait_count(2)
        assert spy.arrivals == []
