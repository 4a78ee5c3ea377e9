"""The embedded target built from the example lab file: one certificate per identity, TLS from the URL
scheme alone, keys gone when the lab exits (SIGTERM included), and the lab's broker child gone with it."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_fixtures import wait_until

from harness.lab.process import LabProcess
from harness.labfile import load_lab
from harness.protocols.wire_json import CentreAck, DeviceEvent, RoutedAlarm, decode, encode
from harness.reference_lab import EmbeddedTarget, embedded_target
from harness.transports.base import Message
from harness.transports.mqtt import MqttClient, MqttSettings

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "fixtures" / "labs" / "embedded.yaml"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie still answers kill(0): read its state
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def _keys(folder: Path) -> list[Path]:
    return list(folder.rglob("*.key")) if folder.exists() else []


@pytest.fixture
def target() -> Iterator[EmbeddedTarget]:
    t = embedded_target(load_lab(LAB), "")
    yield t
    t.cleanup()


def test_identities_come_from_the_lab_file(target: EmbeddedTarget) -> None:
    lab = load_lab(LAB)
    own = {f"device-{d}" for d in lab.spec.devices} | {f"centre-{c}" for c in lab.spec.centres}
    expected = {"lab", "harness"} | own | {f"{i}.twin" for i in own}  # twins: for security checks
    assert set(target.identities) == expected
    assert target.pki is not None and set(target.pki.clients) == expected
    assert target.pki.ca_key is None and not (target.pki.ca_cert.parent / "ca.key").exists()
    assert target.config.default_centre is None
    assert target.config.broker.tls is not None and target.config.pki_dir == target.pki.ca_cert.parent
    base = MqttSettings(url="mqtts://127.0.0.1:1", version="5", connect_timeout_s=3.0)
    s = target.client_settings("device-sa-odd", base)
    assert s.cert == target.pki.clients["device-sa-odd"].cert and s.ca == target.pki.ca_cert
    assert (s.url, s.version, s.connect_timeout_s) == (base.url, base.version, 3.0)
    with pytest.raises(Exception, match="no certificate for identity `device-nobody`"):
        target.client_settings("device-nobody", base)


def test_tls_follows_the_url_scheme_alone(tmp_path: Path) -> None:
    text = LAB.read_text(encoding="utf-8").replace("mqtts://127.0.0.1:0", "mqtt://127.0.0.1:0")
    text = text.replace("users: ../users/personas.yaml", f"users: {LAB.parent.parent / 'users' / 'personas.yaml'}")
    plain = tmp_path / "plain.yaml"
    plain.write_text(text, encoding="utf-8")
    t = embedded_target(load_lab(plain), "")  # `platform.tls: true` is still in the file: ignored
    assert t.pki is None and t.config.broker.tls is None
    base = MqttSettings(url="mqtt://127.0.0.1:1")
    assert t.client_settings("device-sa-odd", base) is base


def test_a_device_and_its_centre_work_through_client_settings(target: EmbeddedTarget, tmp_path: Path) -> None:
    with LabProcess(target.config, tmp_path / "lab") as lab:
        base = MqttSettings(url=lab.broker_url, version=lab.mqtt_version)
        got: list[Message] = []
        arrived = threading.Event()
        centre = MqttClient(target.client_settings("centre-rs-vest", base), "centre")
        device = MqttClient(target.client_settings("device-sa-ragnhild", base), "device")
        centre.connect()
        device.connect()
        try:
            centre.subscribe(
                lab.config.topic("centre_alarm", centre="rs-vest"), lambda m: (got.append(m), arrived.set())
            )
            ev = DeviceEvent(cid="e-1", device="sa-ragnhild", event="personal_emergency", code="101")
            device.publish(lab.config.topic("device_event", device="sa-ragnhild"), encode(ev))
            assert arrived.wait(5)
            alarm = decode(got[0].payload, RoutedAlarm)
            assert (alarm.cid, alarm.centre, alarm.user) == ("e-1", "rs-vest", None)
            centre.publish(
                lab.config.topic("centre_ack", centre="rs-vest"), encode(CentreAck(cid="e-1", centre="rs-vest"))
            )
            wait_until(lambda: any(x["action"] == "ack" for x in lab.ledger()), what="ack relayed")
        finally:
            centre.close()
            device.close()


def test_sigterm_removes_the_keys_and_the_broker(target: EmbeddedTarget, tmp_path: Path) -> None:
    assert target.pki is not None
    pki_dir = target.pki.ca_cert.parent
    lab = LabProcess(target.config, tmp_path / "lab").start()
    try:
        assert lab.pid is not None and lab.broker_pid is not None
        assert _keys(pki_dir)  # the lab's router and broker use them while it runs
        os.kill(lab.pid, signal.SIGTERM)
        assert lab._proc is not None and lab._proc.wait(timeout=10) == 0
        assert not pki_dir.exists() and _keys(pki_dir) == []
        wait_until(lambda: _gone(lab.broker_pid or 0), what="broker child gone")
        assert _keys(tmp_path / "lab") == []
    finally:
        lab.stop()


def test_a_killed_lab_leaves_no_keys_once_stopped(target: EmbeddedTarget, tmp_path: Path) -> None:
    assert target.pki is not None
    pki_dir = target.pki.ca_cert.parent
    lab = LabProcess(target.config, tmp_path / "lab", remove_workdir=True).start()
    assert lab.pid is not None
    os.kill(lab.pid, signal.SIGKILL)  # no handler runs: LabProcess.stop() cleans up
    lab.stop()
    assert not pki_dir.exists() and not (tmp_path / "lab").exists()


def test_settings_replace_is_a_dataclass_copy(target: EmbeddedTarget) -> None:
    base = MqttSettings(url="mqtts://127.0.0.1:1", username="u")
    s = target.client_settings("harness", base)
    assert dataclasses.replace(s, cert=None, key=None, ca=None) == base
