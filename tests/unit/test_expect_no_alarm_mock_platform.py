"""`expect_no_alarm`, fast, on the in-memory bus with a MOCK platform (the runner's harness from
test_runner_with_mock_platform): nothing arriving passes, an alarm arriving is `unexpected`, counted once per
stimulus, and named. Against the real reference lab: tests/integration/test_wandering_plan.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import InputError
from harness.labfile import load_lab
from harness.scenario.loader import load_scenario
from tests.helpers import CONTRACT, Suite, memory_lab
from tests.unit.test_runner_with_mock_platform import centre_of, run

QUIET = """
title: Knappetrykk som ikke skal gi alarm
covers: [TA-1.4]
devices:
  knapp: {model: safety_alarm, rotate: true}
repeat: 4
pace: 100/s
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_no_alarm: {from: knapp, within: 400ms}
criteria:
  - {metric: unexpected, count: "== 0"}
"""


def routed(e: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
    return [(centre_of(e), {**e, "centre": centre_of(e)})]


def test_mock_platform_that_raises_nothing_passes_with_no_unexpected_alarm(suite: Suite, tmp_path: Path) -> None:
    m = run(suite, tmp_path, QUIET, lambda e: [])
    assert m.stimuli == 4 and m.counts["unexpected"] == 0 and m.counts["lost"] == 0
    assert "no_alarm" not in m.latencies  # nothing to time when nothing came


def test_mock_platform_that_alarms_every_time_is_unexpected_once_per_stimulus(suite: Suite, tmp_path: Path) -> None:
    m = run(suite, tmp_path, QUIET, lambda e: routed(e) * 2)  # a duplicate is not a second finding
    assert m.counts["unexpected"] == 4 and m.counts["lost"] == 0
    assert len(m.problem_details) == 4 and all("where none must" in d for d in m.problem_details)


def test_mock_platform_unexpected_alarms_are_the_ones_it_sent(suite: Suite, tmp_path: Path) -> None:
    sent: list[str] = []

    def every_other(e: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
        if int(str(e["cid"])[-6:]) % 2:
            sent.append(str(e["cid"]))
            return routed(e)
        return []

    m = run(suite, tmp_path, QUIET, every_other)
    assert m.counts["unexpected"] == len(sent) == 2
    assert sorted(d.split(":")[0] for d in m.problem_details) == sorted(sent)


def test_mock_platform_an_alarm_at_another_centre_is_unexpected_too(suite: Suite, tmp_path: Path) -> None:
    m = run(suite, tmp_path, QUIET, lambda e: [("rs-ost" if centre_of(e) == "rs-vest" else "rs-vest", dict(e))])
    assert m.counts["unexpected"] == 4 and m.counts["misrouted"] == 0


def test_expect_no_alarm_without_a_trigger_on_the_device_is_refused_at_load(suite: Suite, tmp_path: Path) -> None:
    from harness.contract import load_contract

    text = QUIET.replace("  - trigger: {device: knapp, event: button_press}\n", "")
    contract, _ = load_contract(CONTRACT)
    with pytest.raises(InputError, match="no earlier `trigger`") as info:
        load_scenario(suite.scenario("s", text), contract, load_lab(memory_lab(tmp_path)), "s")
    assert "trigger: {device: knapp" in str(info.value.fix)
