"""Time-scaled scenarios: supervision intervals of minutes run compressed on the reference lab and are
reported in operational time; against a real platform they run in real time with a progress line. The
runner is exercised on the in-memory bus with a MOCK platform that answers after a real delay."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml

from harness.contract import load_contract
from harness.engine import run_and_judge
from harness.errors import InputError
from harness.evidence import EvidenceReader
from harness.labfile import load_lab
from harness.metrics import ScenarioMetrics, compute
from harness.scenario import runner
from harness.scenario.loader import load_scenario
from harness.session import RunSession
from harness.transports.base import Message
from tests.helpers import CONTRACT, LAB, Suite, memory_lab

SCALED = """
title: Alarm i driftstid
covers: [TA-1.1]
user: persona/ragnhild-87
time_scaled: true
devices:
  knapp: {model: safety_alarm}
drain: 3m
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 30s}
criteria:
  - {metric: alarm_latency, max: "<= 30s"}
"""


def run_with_slow_mock_platform(suite: Suite, tmp_path: Path, text: str, scale: float, delay_s: float,
                                lines: list[str] | None = None) -> ScenarioMetrics:
    """The real session and engine against a MOCK platform that delivers each alarm `delay_s` late."""
    lab = load_lab(memory_lab(tmp_path))
    contract, src = load_contract(CONTRACT)
    plan = load_scenario(suite.scenario("s", text), contract, lab, "s")
    plan.time_scale = scale  # what the loader sets from an embedded lab's platform.time_scale
    session = RunSession(lab=lab, contract=contract, contract_src=src, report_dir=tmp_path / "reports",
                         run_id="mock")
    session.start()
    bus = session.bed.memory_bus()
    if lines is not None:
        session.bed.progress_sink = lines.append

    def on_event(msg: Message) -> None:
        event = json.loads(msg.payload)
        alarm = json.dumps({**event, "centre": "rs-vest"}).encode()
        threading.Timer(delay_s, bus.deliver, (lab.topic("centre_alarm", centre="rs-vest"), alarm)).start()

    bus.add(lab.topic("device_event", device="+"), on_event)
    try:
        run_and_judge(plan, session)
    finally:
        session.close()
    reader = EvidenceReader(session.run_dir)
    try:
        definition = reader.scenarios()[0].definition
        assert definition["time_scale"] == scale  # the store keeps the scale: a rebuilt report needs it
        return compute(reader.stimuli("s"), reader.arrivals("s"), reader.matches("s"), definition["time_scale"])
    finally:
        reader.close()


def test_an_operational_deadline_runs_compressed_and_the_latency_is_reported_operational(
        suite: Suite, tmp_path: Path) -> None:
    real = run_with_slow_mock_platform(suite, tmp_path / "real", SCALED, scale=1, delay_s=0.6)
    scaled = run_with_slow_mock_platform(suite, tmp_path / "scaled", SCALED, scale=60, delay_s=0.6)
    # 0.6 s is well within 30 s of real time, but 36 s of operational time: after the compressed deadline
    assert real.counts["late"] == 0 and real.latencies["alarm_latency"].arrived == 1
    assert scaled.counts["late"] == 1 and scaled.counts["lost"] == 0
    (late,) = scaled.latencies["alarm_latency"].late_samples  # censored above the limit, its value kept
    ratio = late[1] / real.latencies["alarm_latency"].statistic("max")
    assert 40 < ratio < 90, ratio  # the same real delay, multiplied back by the scale


def test_a_long_wait_shows_a_progress_line(suite: Suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "PROGRESS_AFTER_S", 0.5)
    monkeypatch.setattr(runner, "PROGRESS_EVERY_S", 0.2)
    lines: list[str] = []
    run_with_slow_mock_platform(suite, tmp_path, SCALED, scale=1, delay_s=1.5, lines=lines)
    waiting = [x for x in lines if "waiting for alarm from knapp" in x]
    assert len(waiting) >= 3, lines
    assert "of 30 s" in waiting[-1]


def test_a_short_wait_shows_none(suite: Suite, tmp_path: Path) -> None:
    lines: list[str] = []
    run_with_slow_mock_platform(suite, tmp_path, SCALED.replace("within: 30s", "within: 5s"), scale=1,
                                delay_s=0.05, lines=lines)
    assert lines == []


def _lab_file(folder: Path, **platform: object) -> Path:
    data = dict(yaml.safe_load(LAB.read_text(encoding="utf-8")))
    data["platform"] = {**data["platform"], **platform}
    data["users"] = str(USERS)
    path = folder / "lab.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


USERS = LAB.parent.parent / "users" / "personas.yaml"

HEARTBEATS = """
title: Hjerteslag
covers: [TA-3.1]
user: persona/odd-79
{scaled}
devices:
  alarm: {{model: safety_alarm}}
steps:
  - start_heartbeat: {{device: alarm, every: 60s}}
  - trigger: {{device: alarm, event: heartbeat_stop}}
  - expect_alarm: {{from: alarm, event: supervision_failure, within: 150s, metric: supervision_latency}}
criteria:
  - {{metric: supervision_latency, max: "<= 150s"}}
"""


def test_heartbeats_in_real_time_on_a_compressed_lab_are_refused_at_their_line(suite: Suite, tmp_path: Path) -> None:
    contract, _ = load_contract(CONTRACT)
    lab = load_lab(_lab_file(tmp_path, time_scale=60))
    path = suite.scenario("s", HEARTBEATS.format(scaled=""))
    with pytest.raises(InputError) as info:
        load_scenario(path, contract, lab)
    assert "time_scale" in info.value.problem and "time_scaled: true" in (info.value.fix or "")
    line = path.read_text().splitlines().index("  - start_heartbeat: {device: alarm, every: 60s}") + 1
    assert info.value.place is not None and info.value.place.line == line
    plan = load_scenario(suite.scenario("s", HEARTBEATS.format(scaled="time_scaled: true")), contract, lab)
    assert plan.time_scale == 60


@pytest.mark.parametrize("scale", [1, 60])
def test_a_time_scaled_scenario_against_a_supplier_runs_in_real_time(suite: Suite, tmp_path: Path,
                                                                      scale: int) -> None:
    contract, _ = load_contract(CONTRACT)
    lab = load_lab(memory_lab(tmp_path))  # kind: external
    plan = load_scenario(suite.scenario("s", HEARTBEATS.format(scaled="time_scaled: true")), contract, lab)
    assert plan.time_scale == 1


def test_time_scale_is_refused_for_a_supplier_platform_and_when_heartbeats_get_too_short(tmp_path: Path) -> None:
    data = dict(yaml.safe_load((LAB.parent / "external-example.yaml").read_text(encoding="utf-8")))
    data["platform"] = {**data["platform"], "time_scale": 60}
    data["users"] = str(USERS)
    path = tmp_path / "ext.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_lab(path)
    assert "time_scale" in info.value.problem and info.value.fix
    with pytest.raises(InputError) as info:
        load_lab(_lab_file(tmp_path, time_scale=3600))  # 60 s / 3600 = 17 ms
    assert "shorter than 100ms" in info.value.problem and info.value.place is not None


def test_resuming_heartbeats_that_never_started_is_refused_at_its_line(suite: Suite, tmp_path: Path) -> None:
    contract, _ = load_contract(CONTRACT)
    text = HEARTBEATS.format(scaled="time_scaled: true").replace(
        "  - start_heartbeat: {device: alarm, every: 60s}\n", "  - trigger: {device: alarm, event: heartbeat_resume}\n")
    with pytest.raises(InputError) as info:
        load_scenario(suite.scenario("s", text), contract, load_lab(_lab_file(tmp_path, time_scale=60)))
    assert "never started" in info.value.problem and "start_heartbeat" in (info.value.fix or "")


def test_a_centre_names_loss_and_restore_of_supervision_by_their_qualifier() -> None:
    from harness.scenario.registry import device_models

    for name, model in device_models().items():
        if "heartbeat_stop" in model.events:
            assert model.event_name("356", "1") == "supervision_failure", name
            assert model.event_name("356", "3") == "supervision_restored", name
