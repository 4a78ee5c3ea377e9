"""A failure of vtlab's own parts is never a supplier deviation, and a broker restart never makes vtlab
count alarms lost: its MQTT client subscribes again by itself."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from harness.acceptance import decide
from harness.contract import load_contract
from harness.engine import run_and_judge
from harness.labfile import load_lab
from harness.outcomes import ScenarioStatus
from harness.report.summary import judge_run
from harness.scenario.loader import load_scenario
from harness.session import RunSession
from harness.transports.base import Message
from harness.transports.mqtt import MqttClient, MqttSettings
from tests.helpers import CONTRACT, LAB, Suite, free_port, start_mosquitto

pytestmark = pytest.mark.slow


def mosquitto_or_skip() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is required in CI (tools/system-packages.txt)")
        pytest.skip("mosquitto is not installed")
    return path


def test_after_a_broker_restart_the_probe_subscribes_again_and_receives(tmp_path: Path) -> None:
    binary = mosquitto_or_skip()
    port = free_port()
    broker = start_mosquitto(binary, port, tmp_path)
    states: list[tuple[str, str]] = []
    restored = threading.Event()

    def on_state(state: str, detail: str) -> None:
        states.append((state, detail))
        if state == "restored":
            restored.set()

    settings = MqttSettings(url=f"mqtt://127.0.0.1:{port}", version="5", connect_timeout_s=5)
    probe = MqttClient(settings, "probe", on_state=on_state)
    probe.connect()
    got: list[bytes] = []
    arrived = threading.Event()

    def handler(msg: Message) -> None:
        got.append(msg.payload)
        arrived.set()

    probe.subscribe("vtlab/t/centre/+/alarm", handler)
    try:
        broker.kill()
        broker.wait(timeout=10)
        broker = start_mosquitto(binary, port, tmp_path)  # same port, no persistence: subscriptions gone
        assert restored.wait(20), f"the probe never subscribed again: {states}"
        assert [s for s, _ in states][:1] == ["lost"]
        sender = MqttClient(settings, "device")
        sender.connect()
        sender.publish("vtlab/t/centre/rs-1/alarm", b'{"v":1,"cid":"after-restart"}')
        assert arrived.wait(10), "an alarm published after the restart never reached the probe"
        assert got == [b'{"v":1,"cid":"after-restart"}']
        sender.close()
    finally:
        probe.close()
        broker.kill()
        broker.wait(timeout=10)


STEADY = """
title: Alarmer mens megleren dør
covers: [TA-1.4, TA-3.1]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
repeat: 60
pace: 20/s
drain: 1s
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 1s}
criteria:
  - {metric: lost, count: "== 0", requirement: TA-1.4}
  - {metric: alarm_latency, p99: "<= 30s", requirement: TA-3.1}
"""


def test_a_killed_broker_is_a_harness_fault_not_a_supplier_deviation(suite: Suite, tmp_path: Path) -> None:
    mosquitto_or_skip()
    lab = load_lab(LAB)
    contract, src = load_contract(CONTRACT)
    plan = load_scenario(suite.scenario("steady", STEADY), contract, lab, "steady")
    session = RunSession(lab=lab, contract=contract, contract_src=src, report_dir=tmp_path / "reports",
                         run_id="killed-broker")
    session.start()
    pid = session.lab_process.broker_pid
    assert pid, "the lab reports its broker's pid"
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(run_and_judge(plan, session)), daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while session.bed._seq.get("sa-ragnhild", 0) < 10:  # a few alarms are out
        assert time.monotonic() < deadline and worker.is_alive()
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    worker.join(120)
    assert not worker.is_alive()
    session.close("completed")
    (result,) = outcome
    assert result.status is ScenarioStatus.HARNESS_FAULT  # type: ignore[attr-defined]
    from harness.evidence import EvidenceReader

    reader = EvidenceReader(session.run_dir)
    try:
        _, verdict = judge_run(reader, contract)
    finally:
        reader.close()
    assert verdict.verdict == "incomplete" and verdict.reason.code == "harness_fault"
    assert verdict.deviations == []  # nothing charged to the supplier
    assert decide(contract, [], run_ended=True).verdict == "incomplete"
