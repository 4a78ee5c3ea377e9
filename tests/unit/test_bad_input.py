"""Every mistake a tester can make in a scenario, contract or lab file gets one clear message that names
the file and line and says what to write instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.contract import load_contract
from harness.errors import InputError
from harness.labfile import load_lab
from harness.scenario.loader import load_scenario
from tests.helpers import CONTRACT, LAB, Suite

GOOD = """
title: Knappetrykk
covers: [TA-1.1]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 30s}
criteria:
  - {metric: alarm_latency, p99: "<= 30s"}
"""


def load(path: Path) -> object:
    contract, _ = load_contract(CONTRACT)
    return load_scenario(path, contract, load_lab(LAB))


def error_for(suite: Suite, text: str) -> InputError:
    path = suite.scenario("s", text)
    with pytest.raises(InputError) as info:
        load(path)
    return info.value


def test_a_good_scenario_loads(suite: Suite) -> None:
    plan = load(suite.scenario("s", GOOD))
    assert plan.title == "Knappetrykk"  # type: ignore[attr-defined]


def test_malformed_yaml_names_the_line(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace("  knapp: {model: safety_alarm}", "  knapp: {model: safety_alarm\n"))
    assert "malformed YAML" in err.problem
    assert err.place is not None and err.place.source.endswith("s.yaml") and err.place.line in (6, 7, 8)
    assert err.fix


def test_unknown_step_suggests_the_right_one(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace("- trigger:", "- triger:"))
    assert "unknown step `triger`" in err.problem
    assert err.place is not None and err.place.line == 7
    assert "did you mean `trigger`" in (err.fix or "")


def test_unknown_requirement_id(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace("covers: [TA-1.1]", "covers: [TA-1.1, TA-9.9]"))
    assert "unknown requirement id `TA-9.9`" in err.problem
    assert err.place is not None and err.place.line == 2
    assert "KS-2026-014" in (err.fix or "")


def test_unknown_device_lists_the_inventory(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace("knapp: {model: safety_alarm}", "knapp: {id: sa-ola}"))
    assert "unknown device `sa-ola`" in err.problem
    assert err.place is not None and err.place.line == 5
    assert "sa-ragnhild" in (err.fix or "")


def test_a_device_the_step_does_not_know(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace("trigger: {device: knapp", "trigger: {device: knap"))
    assert "unknown device `knap`" in err.problem
    assert err.place is not None and err.place.line == 7


def test_duration_in_words_is_refused_with_the_form_to_use(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace("within: 30s", "within: 3 sekunder"))
    assert "`3 sekunder` has an unknown unit `sekunder`" in err.problem
    assert err.place is not None and err.place.line == 8
    assert "30s" in (err.fix or "")


def test_limit_without_unit(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace('p99: "<= 30s"', 'p99: "<= 30"'))
    assert "has no unit" in err.problem
    assert err.place is not None and err.place.line == 10
    assert '"<= 30s"' in (err.fix or "")


def test_unknown_metric(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace("metric: alarm_latency", "metric: alarm_latancy"))
    assert "unknown metric `alarm_latancy`" in err.problem
    assert "did you mean `alarm_latency`" in (err.fix or "")


def test_a_criterion_for_a_requirement_the_scenario_does_not_cover(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace('p99: "<= 30s"}', 'p99: "<= 30s", requirement: TA-1.4}'))
    assert "does not cover" in err.problem


def test_unknown_key_in_a_step(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace("within: 30s}", "within: 30s, innen: 3s}"))
    assert "unknown key `innen`" in err.problem
    assert err.place is not None and err.place.line == 8


def test_event_the_device_model_does_not_have(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace("event: button_press", "event: fall"))
    assert "has no event `fall`" in err.problem
    assert "button_press" in (err.fix or "")


def test_lab_file_pointing_at_a_missing_certificate(suite: Suite) -> None:
    lab = suite.file("lab.yaml", LAB.read_text(encoding="utf-8").replace(
        "users: ../users/personas.yaml", f"users: {LAB.parent.parent / 'users' / 'personas.yaml'}"
    ).replace('  version: "5"', '  version: "5"\n  tls: {ca: certs/ca.pem}'))
    with pytest.raises(InputError) as info:
        load_lab(lab)
    err = info.value
    assert "TLS ca file `certs/ca.pem` not found" in err.problem
    text = lab.read_text(encoding="utf-8").splitlines()
    assert err.place is not None and err.place.line is not None and "tls" in text[err.place.line - 1]


def test_contract_with_a_requirement_missing_its_severity(suite: Suite) -> None:
    text = CONTRACT.read_text(encoding="utf-8").replace("    severity: A\n", "", 1)
    path = suite.file("contract.yaml", text)
    with pytest.raises(InputError) as info:
        load_contract(path)
    assert "`requirements.0.severity` is missing" in info.value.problem
    assert info.value.place is not None and info.value.place.line is not None


def test_error_message_has_place_problem_and_fix(suite: Suite) -> None:
    err = error_for(suite, GOOD.replace("within: 30s", "within: 3 sekunder"))
    first, second = str(err).splitlines()
    assert first.startswith(str(err.place)) and ": `3 sekunder` has an unknown unit" in first
    assert second.strip().startswith("fix:")


# --- nonsense that used to be accepted in silence: each refused at its line ---------------------------
@pytest.mark.parametrize("old,new,words", [
    ("within: 30s}", "within: 0s}", "outside"),
    ("within: 30s}", "within: 0ms}", "outside"),
    ("within: 30s}", "within: 100000h}", "outside"),
    ("devices:\n", "pace: 0/s\ndevices:\n", "outside what a run can do"),
    ("devices:\n", "pace: 1000000/s\ndevices:\n", "outside what a run can do"),
    ("devices:\n", "drain: 2h\ndevices:\n", "outside"),
    ("{model: safety_alarm}", "{model: safety_alarm, via: mqtt}", "belongs in the lab file"),
    ('{metric: alarm_latency, p99: "<= 30s"}', '{metric: lost, rate: "<= 200%"}', "more than 100 %"),
])
def test_nonsense_values_are_refused_at_their_line(suite: Suite, old: str, new: str, words: str) -> None:
    assert old in GOOD
    err = error_for(suite, GOOD.replace(old, new))
    assert words in err.problem, err
    assert err.place is not None and err.place.line is not None and err.fix


@pytest.mark.parametrize("name", ["../../../../elsewhere/x", "/etc/passwd", "a/b", "..", "Alarm", "x" * 60,
                                  "lat\x00ency", "latency-ms", "é", "1st"])
def test_a_metric_name_that_could_become_a_path_is_refused_at_load(suite: Suite, name: str) -> None:
    text = GOOD.replace("within: 30s}", f"within: 30s, metric: {name!r}}}").replace(
        "metric: alarm_latency", f"metric: {name!r}")
    err = error_for(suite, text)
    assert err.place is not None and err.place.line == 8, err


@pytest.mark.parametrize("typo,right,line", [("titel", "title", 1), ("coverz", "covers", 2), ("stepps", "steps", 6),
                                             ("criterias", "criteria", 9)])
def test_a_misspelled_key_is_reported_as_a_typo_at_its_line_not_as_a_missing_key(
        suite: Suite, typo: str, right: str, line: int) -> None:
    err = error_for(suite, GOOD.replace(f"\n{right}:", f"\n{typo}:"))
    assert err.problem == f"unknown key `{typo}`" and f"did you mean `{right}`" in (err.fix or "")
    assert err.place is not None and err.place.line == line
