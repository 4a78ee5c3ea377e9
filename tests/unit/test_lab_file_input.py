"""Lab-file mistakes are refused when the file is loaded (file:line, a fix), before any lab starts:
a mistake in vtlab's own configuration must never become a supplier deviation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import InputError
from harness.labfile import load_lab
from harness.pki import make_pki
from tests.helpers import LAB

EXAMPLE = LAB.parent / "external-example.yaml"
USERS = LAB.parent.parent / "users" / "personas.yaml"


def write(folder: Path, data: dict[str, object]) -> Path:
    data = {**data, "users": str(USERS)}
    path = folder / "lab.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def embedded() -> dict[str, object]:
    return dict(yaml.safe_load(LAB.read_text(encoding="utf-8")))


def refused(folder: Path, data: dict[str, object]) -> InputError:
    with pytest.raises(InputError) as info:
        load_lab(write(folder, data))
    err = info.value
    assert err.place is not None and err.place.source.endswith("lab.yaml") and err.fix, err
    return err


def external_with_pki(folder: Path) -> dict[str, object]:
    pki = make_pki(folder / "pki", clients=("vtlab",))
    data = dict(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    tls = data["mqtt"]["tls"]  # type: ignore[index]
    tls.update(ca=str(pki.ca_cert), cert=str(pki.clients["vtlab"].cert), key=str(pki.clients["vtlab"].key))
    tls.pop("key_password_env")
    pub = folder / "vkp-client.pub.pem"
    pub.write_bytes(pki.clients["vtlab"].cert.read_bytes())
    data["probes"]["journal"]["epj"]["clients"] = {"leverandor-vkp": str(pub)}  # type: ignore[index]
    return data


def test_the_external_example_loads_once_its_certificates_and_password_exist(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VTLAB_BROKER_PASSWORD", "secret")
    monkeypatch.setenv("VTLAB_DC09_KEY", "0123456789abcdef")
    lab = load_lab(write(tmp_path, external_with_pki(tmp_path)))
    assert lab.spec.platform.kind == "external" and lab.spec.mqtt.url.startswith("mqtts://")
    assert lab.topic("centre_alarm", centre="rs-vest") == "alarm/kommune/centres/rs-vest/alarms"


@pytest.mark.parametrize("key,value", [("faults", "drop=1"), ("broker", "amqtt"), ("supervision_misses", 3)])
def test_an_external_platform_refuses_keys_only_the_embedded_lab_uses(tmp_path: Path, key: str, value: object,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VTLAB_BROKER_PASSWORD", "secret")
    data = external_with_pki(tmp_path)
    data["platform"] = {"kind": "external", key: value}
    err = refused(tmp_path, data)
    assert key in err.problem and "embedded" in err.problem


def test_a_scaip_response_centre_on_sip_tls_is_refused_at_its_line(tmp_path: Path) -> None:
    data = embedded()
    probe = data["probes"]["responssenter_scaip"]  # type: ignore[index]
    probe["scaip"] = {**probe["scaip"], "transport": "tls"}
    err = refused(tmp_path, data)
    assert "SIP/TLS" in str(err) and "udp" in (err.fix or "") and err.place.line is not None


def test_platform_tls_is_refused_because_the_url_scheme_decides(tmp_path: Path) -> None:
    data = embedded()
    data["platform"] = {**data["platform"], "tls": True}  # type: ignore[dict-item]
    err = refused(tmp_path, data)
    assert "mqtts" in (err.fix or "")


@pytest.mark.parametrize("url", [
    "mqtt://", "mqtts://:8883", "mqtt://host:99999", "mqtt://host:-1", "http://host:1883", "mqtt:/host",
    "mqtt://user:pw@host:1883", "mqtt://host:1883/path", "mqtt://host:port", "tcp://127.0.0.1:1883", "",
])
def test_a_broker_url_without_a_usable_host_or_port_is_refused_at_load(tmp_path: Path, url: str) -> None:
    data = embedded()
    data["platform"] = {"kind": "external"}
    data["mqtt"] = {"url": url}
    refused(tmp_path, data)


@pytest.mark.parametrize("every", ["0s", "0ms", "50ms", "25h", "10000h"])
def test_a_heartbeat_interval_outside_reason_is_refused(tmp_path: Path, every: str) -> None:
    data = embedded()
    data["devices"]["sa-odd"]["heartbeat"] = every  # type: ignore[index]
    err = refused(tmp_path, data)
    assert "heartbeat" in err.problem


@pytest.mark.parametrize("template", [
    "vtlab/{site}/device/{devise}/event", "vtlab/{site}/device/event", "vtlab/{site}/device/{device}/#",
    "vtlab/{site/device/{device}/event", "vtlab/{site}/{0}/{device}",
])
def test_a_topic_template_with_a_wrong_placeholder_is_refused(tmp_path: Path, template: str) -> None:
    data = embedded()
    data["topics"] = {"device_event": template}
    err = refused(tmp_path, data)
    assert "device_event" in err.problem


def test_a_ca_file_that_is_not_pem_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VTLAB_BROKER_PASSWORD", "secret")
    data = external_with_pki(tmp_path)
    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x82\x01\x0a" + bytes(200))
    data["mqtt"]["tls"]["ca"] = str(der)  # type: ignore[index]
    err = refused(tmp_path, data)
    assert "not PEM" in err.problem


def test_tls_files_with_a_plain_url_are_refused_not_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VTLAB_BROKER_PASSWORD", "secret")
    data = external_with_pki(tmp_path)
    data["mqtt"]["url"] = "mqtt://alarm-test.leverandor.example:1883"  # type: ignore[index]
    err = refused(tmp_path, data)
    assert "mqtts" in err.problem


def test_an_unknown_transport_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    data = embedded()
    data["devices"]["sa-odd"]["via"] = "pigeon"  # type: ignore[index]
    err = refused(tmp_path, data)
    assert "pigeon" in err.problem and "mqtt" in (err.fix or "")


def test_a_device_model_typo_is_reported_in_the_lab_file_not_at_a_scenario(tmp_path: Path) -> None:
    data = embedded()
    data["devices"]["sa-odd"]["model"] = "safety_alarn"  # type: ignore[index]
    err = refused(tmp_path, data)
    assert "safety_alarn" in err.problem and "did you mean `safety_alarm`" in (err.fix or "")


def test_a_dc09_device_without_an_account_is_refused(tmp_path: Path) -> None:
    data = embedded()
    data["devices"]["sa-odd"]["via"] = "dc09"  # type: ignore[index]
    err = refused(tmp_path, data)
    assert "DC-09 account" in err.problem


@pytest.mark.parametrize(("key", "value", "words"), [
    ("interval", "50ms", "a poll interval of 50ms is outside 100ms..10m"),
    ("skew", "6m", "a clock-skew allowance of 6m is outside 0s..5m"),
    ("timeout", "3m", "a search timeout of 3m is outside 100ms..2m"),
])
def test_pull_durations_out_of_range_are_refused_with_the_range(tmp_path: Path, key: str, value: str,
                                                                words: str) -> None:
    data = embedded()
    probes = dict(data["probes"])  # type: ignore[arg-type]
    probes["journal"] = {"kind": "epj", "epj": {"orgnr": "999888777", "mode": "pull", key: value}}
    data["probes"] = probes
    err = refused(tmp_path, data)
    assert words in err.problem and "write e.g." in (err.fix or "")
