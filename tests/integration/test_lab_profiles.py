"""The reference lab in its two security profiles: every protection switch shown both ways with the security
engineer's own checks (harness.security): the secure lab refuses (for the reason the standard names: TLS
alert, MQTT 5 reason code, DC-09 NAK/DUH, SIP over TLS only) and the insecure lab lets the attempt through,
which the check reports as a finding. Real peers throughout: mosquitto, the lab process, OpenSSL, SIP.

One lab process per profile (module scope), so the whole file costs two lab starts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_fixtures import Peer, require_mosquitto, wait_until

from harness.lab.config import LabConfig
from harness.lab.process import LabProcess
from harness.outcomes import Outcome
from harness.pki import TestPki, make_pki
from harness.scenario.security import connect_check
from harness.security import alarm_checks, mqtt_checks, tls
from harness.transports.mqtt import MqttSettings

pytestmark = pytest.mark.slow

KEY = b"0123456789ABCDEF"

BASE: dict[str, Any] = {
    "site": "s",
    "broker": {"kind": "mosquitto", "mqtt_version": "5"},
    "devices": {
        "d1": {"user": "persona/a"},
        "d2": {"user": "persona/b"},
        "d3": {"user": "persona/a", "dc09_account": "3001"},
        "d4": {"user": "persona/a", "scaip": {"cid": "4711", "did": "1"}},
    },
    "centres": ["rc-a", "rc-b"],
    "routing": {"persona/a": "rc-a", "persona/b": "rc-b"},
}

INSECURE = {
    "broker": {
        "tls_min_version": "1.1",
        "ciphers": "ALL:eNULL:@SECLEVEL=0",
        "access_rules": False,
        "bind_client_ids": False,
    },
    "require_client_cert": False,
    "ingress": {"dc09_require_encryption": False, "dc09_window": False, "scaip_plain": True, "scaip_tls": False},
    "validate_messages": False,
}


class ProfileLab:
    def __init__(self, lab: LabProcess, pki: TestPki, profile: str) -> None:
        self.lab, self.pki, self.profile = lab, pki, profile

    def who(self, identity: str) -> MqttSettings:
        c = self.pki.clients[identity]
        return MqttSettings(self.lab.broker_url, "5", ca=self.pki.ca_cert, cert=c.cert, key=c.key, connect_timeout_s=3)

    def peer(self, identity: str, subscribe: list[str] | None = None) -> Peer:
        c = self.pki.clients[identity]
        return Peer(
            self.lab.broker_url, subscribe=subscribe or [], ca=self.pki.ca_cert, cert=c.cert, key=c.key, v5=True
        )

    @property
    def port(self) -> int:
        return int(self.lab.broker_url.rsplit(":", 1)[1])

    def cred(self) -> dict[str, Any]:
        c = self.pki.clients["harness"]
        return {"cert": c.cert, "key": c.key, "timeout_s": 3.0}

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [x for x in self.lab.ledger() if x["action"] == action]


def _start(folder: Path, profile: str) -> Iterator[ProfileLab]:
    require_mosquitto()
    data: dict[str, Any] = json.loads(json.dumps(BASE))
    key_file = folder / "d3.key"
    folder.mkdir(parents=True, exist_ok=True)
    key_file.write_bytes(KEY)
    data["devices"]["d3"]["dc09_key_file"] = str(key_file)
    pki = make_pki(folder / "pki", LabConfig.model_validate(data).identities(), keep_ca_key=False)
    data["broker"]["tls"] = {
        "ca": pki.ca_cert,
        "server_cert": pki.server_cert,
        "server_key": pki.server_key,
        "client_cert": pki.clients["lab"].cert,
        "client_key": pki.clients["lab"].key,
        "control_cert": pki.clients["harness"].cert,
        "control_key": pki.clients["harness"].key,
    }
    data["ingress"] = {"scaip_tls": True, "scaip_plain": False, "tls_cert": pki.server_cert, "tls_key": pki.server_key}
    if profile == "insecure":
        data["broker"].update(INSECURE["broker"])
        data["broker"]["tls"]["require_client_cert"] = INSECURE["require_client_cert"]
        data["ingress"].update(INSECURE["ingress"])
        data["validate_messages"] = INSECURE["validate_messages"]
    with LabProcess(LabConfig.model_validate(data), folder / "lab") as lab:
        yield ProfileLab(lab, pki, profile)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProfileLab]:
    yield from _start(tmp_path_factory.mktemp("secure"), "secure")


@pytest.fixture(scope="module")
def insecure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProfileLab]:
    yield from _start(tmp_path_factory.mktemp("insecure"), "insecure")


def test_tls_1_1_is_refused_by_the_secure_lab_and_accepted_by_the_insecure_one(
    secure: ProfileLab, insecure: ProfileLab
) -> None:
    good = tls.probe_version("127.0.0.1", secure.port, "1.1", **secure.cred())
    assert good.outcome is Outcome.REFUSED and good.refusal is not None
    assert good.refusal["handshake"] == "failed"
    bad = tls.probe_version("127.0.0.1", insecure.port, "1.1", **insecure.cred())
    assert bad.outcome is Outcome.ACCEPTED, bad.detail
    assert "TLS 1.1 handshake" in bad.detail


def test_weak_cipher_suites_are_refused_by_the_secure_lab_and_a_null_suite_accepted_by_the_insecure_one(
    secure: ProfileLab, insecure: ProfileLab
) -> None:
    good = tls.probe_weak_ciphers("127.0.0.1", secure.port, **secure.cred())
    assert good.outcome is Outcome.REFUSED, good.detail
    bad = tls.probe_weak_ciphers("127.0.0.1", insecure.port, **insecure.cred())
    assert bad.outcome is Outcome.ACCEPTED and "NULL" in bad.detail
    assert bad.request["cipher_class"] == "null_encryption"


def test_a_client_without_certificate_is_refused_by_the_secure_lab_only(
    secure: ProfileLab, insecure: ProfileLab
) -> None:
    good = connect_check(secure.who("harness"), "no_client_certificate", 3.0)
    assert good.outcome is Outcome.REFUSED, good.detail
    bad = connect_check(insecure.who("harness"), "no_client_certificate", 3.0)
    assert bad.outcome is Outcome.ACCEPTED and "accepted a connection" in bad.detail


def test_session_takeover_by_another_identity_is_refused_by_the_secure_lab_only(
    secure: ProfileLab, insecure: ProfileLab
) -> None:
    assert secure.lab.events()[0]["client_ids_bound"] is True
    good = mqtt_checks.session_takeover(secure.who("device-d1"), secure.who("device-d2"), within_s=2)
    assert good.outcome is Outcome.REFUSED, good.detail
    assert good.refusal is not None and good.refusal["first_disconnect"] == "still connected"
    bad = mqtt_checks.session_takeover(insecure.who("device-d1"), insecure.who("device-d2"), within_s=3)
    assert bad.outcome is Outcome.ACCEPTED, bad.detail
    assert "took over the session" in bad.detail


def test_publishing_as_another_device_is_refused_by_the_secure_lab_only(
    secure: ProfileLab, insecure: ProfileLab
) -> None:
    def attempt(lab: ProfileLab) -> mqtt_checks.CheckResult:
        return mqtt_checks.publish_as_other_device(
            lab.who("device-d1"),
            "vtlab/s/device/d2/event",
            "d2",
            "persona/b",
            lab.who("centre-rc-b"),
            "vtlab/s/centre/rc-b/alarm",
            within_s=3,
        )

    good = attempt(secure)
    assert good.outcome is Outcome.REFUSED and good.refusal is not None
    assert good.refusal["puback"] == "0x87 Not authorized"
    bad = attempt(insecure)
    assert bad.outcome is Outcome.ACCEPTED and bad.refusal is not None and bad.refusal["routed"] is True


def _event(cid: str, device: str, user: str) -> dict[str, Any]:
    return {"v": 1, "cid": cid, "device": device, "user": user, "event": "personal_emergency", "code": "101"}


def test_an_event_naming_another_device_is_refused_by_the_validating_lab_and_routed_by_the_careless_one(
    secure: ProfileLab, insecure: ProfileLab
) -> None:
    for lab in (secure, insecure):
        with lab.peer("centre-rc-b", ["vtlab/s/centre/rc-b/alarm"]) as rc_b, lab.peer("device-d1") as d1:
            d1.publish_rc("vtlab/s/device/d1/event", _event(f"imp-{lab.profile}", "d2", "persona/b"))
            if lab.profile == "secure":
                wait_until(
                    lambda: any(r.get("reason", "").startswith("payload device") for r in secure.actions("rejected")),
                    what="the lab refuses the impostor",
                )
                assert rc_b.arrivals == []
            else:
                got = rc_b.wait_count(1)[0].json()
                assert got["cid"] == "imp-insecure" and got["device"] == "d2"
    assert [r["reason"] for r in secure.actions("rejected") if "imp" in json.dumps(r) or "payload" in r["reason"]] == [
        "payload device `d2` is not the topic's device"
    ]
    assert [r["reason"] for r in insecure.actions("unvalidated")] == ["payload device is not the topic's device"]


def test_an_ack_from_a_foreign_centre_is_refused_by_the_validating_lab_and_relayed_by_the_careless_one(
    secure: ProfileLab, insecure: ProfileLab
) -> None:
    for lab in (secure, insecure):
        cid = f"fa-{lab.profile}"
        with (
            lab.peer("centre-rc-b", ["vtlab/s/centre/rc-b/alarm"]) as rc_b,
            lab.peer("centre-rc-a") as rc_a,
            lab.peer("device-d2", ["vtlab/s/device/d2/ack"]) as d2,
        ):
            d2.publish_rc("vtlab/s/device/d2/event", _event(cid, "d2", "persona/b"))
            rc_b.wait_count(1)
            rc_a.publish_rc("vtlab/s/centre/rc-a/ack", {"v": 1, "cid": cid, "centre": "rc-a", "action": "acknowledged"})
            if lab.profile == "insecure":
                assert d2.wait_count(1)[0].json()["cid"] == cid  # the forged ack reached the device
            else:
                wait_until(
                    lambda cid=cid: any(r.get("cid") == cid for r in secure.actions("rejected")),
                    what="the lab refuses the foreign ack",
                )
                assert d2.arrivals == []
    (refusal,) = [r for r in secure.actions("rejected") if r.get("cid") == "fa-secure"]
    assert refusal["reason"] == "ack from centre `rc-a` for an alarm routed to another centre"


def test_unencrypted_dc09_is_refused_with_duh_by_the_secure_lab_and_acked_by_the_insecure_one(
    secure: ProfileLab, insecure: ProfileLab
) -> None:
    good = alarm_checks.dc09_check(secure.lab.ingress["dc09"], "unencrypted", "3001", KEY, timeout_s=3)
    assert good.outcome is Outcome.REFUSED and good.refusal is not None and good.refusal["dc09_reply"] == "DUH"
    bad = alarm_checks.dc09_check(insecure.lab.ingress["dc09"], "unencrypted", "3001", KEY, timeout_s=3)
    assert bad.outcome is Outcome.ACCEPTED and bad.refusal is not None and bad.refusal["dc09_reply"] == "ACK"


def test_a_replayed_dc09_frame_is_nakked_by_the_secure_lab_and_acked_by_the_insecure_one(
    secure: ProfileLab, insecure: ProfileLab
) -> None:
    for attempt in ("replay", "stale_timestamp", "future_timestamp"):
        good = alarm_checks.dc09_check(secure.lab.ingress["dc09"], attempt, "3001", KEY, age_s=120, timeout_s=3)
        assert good.outcome is Outcome.REFUSED and good.refusal is not None
        assert good.refusal["dc09_reply"] == "NAK", attempt
        bad = alarm_checks.dc09_check(insecure.lab.ingress["dc09"], attempt, "3001", KEY, age_s=120, timeout_s=3)
        assert bad.outcome is Outcome.ACCEPTED, (attempt, bad.detail)
        assert bad.refusal is not None and bad.refusal["dc09_reply"].endswith("ACK")
    # the wrong key is refused either way: that protection has no switch
    assert alarm_checks.dc09_check(insecure.lab.ingress["dc09"], "wrong_key", "3001", KEY).outcome is Outcome.REFUSED


def test_plain_scaip_is_refused_where_the_lab_takes_scaip_over_tls_only(
    secure: ProfileLab, insecure: ProfileLab
) -> None:
    assert set(secure.lab.ingress) >= {"scaip", "scaip_tls"} and "scaip_plain" not in secure.lab.ingress
    assert secure.lab.ingress["scaip"] == secure.lab.ingress["scaip_tls"]
    good = asyncio.run(alarm_checks.scaip_plain_check(secure.lab.ingress["scaip"], "4711", "1", timeout_s=2))
    assert good.outcome is Outcome.REFUSED, good.detail
    bad = asyncio.run(alarm_checks.scaip_plain_check(insecure.lab.ingress["scaip"], "4711", "1", timeout_s=2))
    assert bad.outcome is Outcome.ACCEPTED and "plain SIP MESSAGE" in bad.detail


def test_a_scaip_device_over_tls_reaches_its_centre_through_the_secure_lab(secure: ProfileLab) -> None:
    from harness.transports.sip import ScaipDevice, client_ssl_context

    async def send() -> int:
        dev = ScaipDevice(
            secure.lab.ingress["scaip_tls"],
            transport="tls",
            cid="4711",
            ssl_context=client_ssl_context(ca=secure.pki.ca_cert),
        )
        await dev.start()
        try:
            result = await dev.send(dev.mrq(stc="0010", did="1", dco="7"), timeout=5, mrs_timeout=5)
            return result.status
        finally:
            await dev.close()

    with secure.peer("centre-rc-a", ["vtlab/s/centre/rc-a/alarm"]) as rc_a:
        assert asyncio.run(send()) == 200
        alarm = rc_a.wait_count(1)[0].json()
    assert alarm["device"] == "d4" and alarm["code"] == "101" and alarm["zone"] == "007"
