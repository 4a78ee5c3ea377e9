"""The same scenarios against other kinds of platform: the amqtt broker, MQTT 3.1.1, and a platform
that does not demand TLS (which the security scenario must catch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import LAB, ROOT, Suite, button_presses, run_vtlab

pytestmark = pytest.mark.slow
SECURITY = ROOT / "scenarios" / "security" / "tls_og_sertifikater.yaml"


def lab_variant(suite: Suite, **replace: str) -> Path:
    text = LAB.read_text(encoding="utf-8").replace(
        "users: ../users/personas.yaml", f"users: {LAB.parent.parent / 'users' / 'personas.yaml'}")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return suite.file("variant.yaml", text)


def test_the_amqtt_fallback_lab_passes_the_alarm_and_security_scenarios(suite: Suite, tmp_path: Path) -> None:
    lab = lab_variant(suite, **{"broker: auto": "broker: amqtt"})
    presses = suite.scenario("knapp", button_presses(repeat=50))
    result = run_vtlab(str(presses), str(SECURITY), "--lab", str(lab), report_dir=tmp_path)
    assert result.rc == 0, result.output[-4000:]
    assert result.summary["target"]["broker_kind"] == "amqtt"
    assert result.summary["target"]["mqtt_version"] == "3.1.1"


def test_mqtt_3_1_1_against_mosquitto(suite: Suite, tmp_path: Path) -> None:
    lab = lab_variant(suite, **{'version: "5"': 'version: "3.1.1"'})
    presses = suite.scenario("knapp", button_presses(repeat=50))
    result = run_vtlab(str(presses), "--lab", str(lab), report_dir=tmp_path)
    assert result.rc == 0, result.output[-4000:]
    assert result.summary["target"]["mqtt_version"] == "3.1.1"


def test_a_platform_without_tls_fails_the_encryption_requirement(suite: Suite, tmp_path: Path) -> None:
    lab = lab_variant(suite, **{"mqtts://127.0.0.1:0": "mqtt://127.0.0.1:0"})  # TLS follows the URL scheme
    result = run_vtlab(str(SECURITY), "--lab", str(lab), report_dir=tmp_path)
    assert result.rc == 1, result.output[-4000:]
    summary = result.summary
    (deviation,) = summary["deviations"]
    assert deviation["requirement"] == "TA-5.1" and deviation["severity"] == "A"
    assert summary["scenarios"][0]["metrics"]["counts"]["insecure_accepted"] == 3
    assert any("no_client_certificate" in d for d in deviation["evidence"]["details"])


def test_without_mosquitto_the_embedded_lab_falls_back_to_amqtt(suite: Suite, tmp_path: Path) -> None:
    presses = suite.scenario("knapp", button_presses(repeat=20))
    result = run_vtlab(str(presses), str(SECURITY), report_dir=tmp_path, env={"VTLAB_MOSQUITTO": "none"})
    assert result.rc == 0, result.output[-4000:]
    assert result.summary["target"] == {**result.summary["target"], "broker_kind": "amqtt", "mqtt_version": "3.1.1"}
