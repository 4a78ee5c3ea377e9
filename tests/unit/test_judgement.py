"""Metrics from evidence rows, criteria with marginal bands, deviations and the approval rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.acceptance import CriterionDef, ScenarioJudgement, decide, judge
from harness.contract import load_contract
from harness.errors import InputError
from harness.metrics import compute
from harness.units import Dimension, parse_duration, parse_limit, parse_rate
from tests.helpers import CONTRACT

MS = 1_000_000


def stimulus(cid: str, t_ms: float, seq: int, device: str = "sa-1") -> dict[str, Any]:
    return {"cid": cid, "t_ns": int(t_ms * MS), "seq": seq, "device": device}


def arrival(row_id: int, cid: str, t_ms: float, kind: str = "alarm") -> dict[str, Any]:
    return {"id": row_id, "cid": cid, "t_ns": int(t_ms * MS), "kind": kind, "payload": json.dumps({"cid": cid})}


def match(cid: str, arrival_id: int | None, latency_ms: float | None, outcome: str = "ok", seq: int = 1,
          metric: str = "alarm_latency") -> dict[str, Any]:
    return {"stimulus_cid": cid, "arrival_id": arrival_id, "device": "sa-1", "seq": seq, "step": 1,
            "metric": metric, "latency_ns": None if latency_ms is None else int(latency_ms * MS),
            "outcome": outcome, "detail": None}


def test_durations_rates_and_limits() -> None:
    assert parse_duration("250ms") == 250 * MS
    assert parse_duration("1.5s") == 1500 * MS
    assert parse_duration("2h") == 7200 * 1000 * MS
    assert parse_rate("30/m") == 0.5
    assert parse_limit("<= 30s", Dimension.TIME).value == 30_000 * MS
    assert parse_limit("<= 0.5%", Dimension.RATIO).value == 0.005
    assert parse_limit("== 0", Dimension.COUNT).holds(0.0)
    assert not parse_limit("< 2/s", Dimension.RATE).holds(2.0)
    with pytest.raises(InputError, match="not a percentage"):
        parse_limit("<= 5", Dimension.RATIO)
    with pytest.raises(InputError, match="not a limit"):
        parse_limit("maks 30s", Dimension.TIME)


def test_lost_duplicated_and_out_of_order_alarms_are_counted_from_rows() -> None:
    stimuli = [stimulus("a", 0, 1), stimulus("b", 10, 2), stimulus("c", 20, 3), stimulus("d", 30, 4)]
    arrivals = [arrival(1, "a", 1), arrival(2, "c", 21), arrival(3, "b", 25), arrival(4, "b", 26)]
    matches = [match("a", 1, 1, seq=1), match("b", 3, 15, seq=2), match("c", 2, 1, seq=3),
               match("d", None, None, "lost", seq=4)]
    m = compute(stimuli, arrivals, matches)
    assert m.counts["lost"] == 1 and m.lost_cids == ["d"]
    assert m.counts["duplicates"] == 1 and m.duplicate_cids == ["b"]
    assert m.counts["out_of_order"] == 1 and m.out_of_order_cids == ["b"]
    assert m.latencies["alarm_latency"].statistic("count") == 3
    assert m.value("lost", "rate") == pytest.approx(0.25)


def test_latency_percentiles_keep_three_significant_digits() -> None:
    stimuli = [stimulus(f"s{i}", i, i) for i in range(1000)]
    matches = [match(f"s{i}", i, 400.0 + i / 1000, seq=i) for i in range(1000)]
    m = compute(stimuli, [arrival(i, f"s{i}", 0) for i in range(1000)], matches)
    p50 = m.value("alarm_latency", "p50")
    assert p50 is not None and abs(p50 / MS - 400.5) < 0.5  # 0.1 % resolution, not two digits


def _criterion(metric: str, statistic: str, limit: str, marginal: str | None, dim: Dimension) -> CriterionDef:
    return CriterionDef(metric, statistic, limit, marginal, dim.value, ("TA-1.1",))


def test_a_value_inside_the_limit_but_outside_the_marginal_band_is_marginal() -> None:
    m = compute([stimulus("a", 0, 1)], [arrival(1, "a", 25_000)], [match("a", 1, 25_000)])
    (result,) = judge("s", [_criterion("alarm_latency", "p99", "<= 30s", "<= 20s", Dimension.TIME)], m)
    assert result.verdict == "marginal" and result.unit == "ms"
    assert result.measured == pytest.approx(25_000, rel=1e-3)
    (result,) = judge("s", [_criterion("alarm_latency", "p99", "<= 20s", None, Dimension.TIME)], m)
    assert result.verdict == "fail"


def test_no_samples_is_a_failure_not_a_pass() -> None:
    m = compute([stimulus("a", 0, 1)], [], [match("a", None, None, "lost")])
    (result,) = judge("s", [_criterion("alarm_latency", "p99", "<= 30s", None, Dimension.TIME)], m)
    assert result.verdict == "fail" and "no alarm_latency samples" in result.detail


def _judgement(covers: list[str], metric: str, measured_fail: bool) -> ScenarioJudgement:
    rows = ([match("a", None, None, "lost")] if measured_fail else [match("a", 1, 5)])
    m = compute([stimulus("a", 0, 1)], [arrival(1, "a", 5)] if not measured_fail else [], rows)
    crit = CriterionDef(metric, "count", "== 0", None, "count", tuple(covers))
    return ScenarioJudgement("s", "t", "completed", covers, judge("s", [crit], m), m)


def test_approval_rule_blocks_on_a_and_b_deviations_only() -> None:
    contract, _ = load_contract(CONTRACT)
    failing_a = _judgement(["TA-1.4"], "lost", measured_fail=True)  # TA-1.4 is class A
    verdict = decide(contract, [failing_a], run_ended=True)
    assert verdict.verdict == "not_approved"
    (dev,) = verdict.deviations
    assert dev.severity == "A" and dev.requirement == "TA-1.4" and dev.evidence["lost_alarms"] == ["a"]
    failing_c = _judgement(["TA-1.6"], "lost", measured_fail=True)  # TA-1.6 is class C
    verdict = decide(contract, [failing_c], run_ended=True)
    assert verdict.verdict == "approved" and [d.severity for d in verdict.deviations] == ["C"]
    assert "TA-1.1" in verdict.uncovered


def test_a_run_that_did_not_end_is_incomplete() -> None:
    contract, _ = load_contract(CONTRACT)
    passing = _judgement(["TA-1.4"], "lost", measured_fail=False)
    assert decide(contract, [passing], run_ended=True).verdict == "approved"
    assert decide(contract, [passing], run_ended=False).verdict == "incomplete"
    running = ScenarioJudgement("s", "t", "running", ["TA-1.4"], [], None)
    assert decide(contract, [running], run_ended=True).verdict == "incomplete"


def test_a_run_that_left_part_of_the_suite_out_cannot_approve() -> None:
    contract, _ = load_contract(CONTRACT)
    passing = _judgement(["TA-1.4"], "lost", measured_fail=False)
    suite = {"TA-1.4": ["s"], "TA-3.2": ["scenarios/supervision/lavt_batteri.yaml"]}
    verdict = decide(contract, [passing], run_ended=True, suite=suite)
    assert verdict.verdict == "incomplete" and verdict.partial
    assert verdict.not_run == ["TA-3.2"]
    assert "TA-3.2" not in verdict.uncovered
    failing = _judgement(["TA-1.4"], "lost", measured_fail=True)
    assert decide(contract, [failing], run_ended=True, suite=suite).verdict == "not_approved"


def test_a_contract_can_require_every_must_requirement_to_be_tested() -> None:
    contract, _ = load_contract(CONTRACT)
    strict = contract.model_copy(update={"approval": contract.approval.model_copy(update={"require_tested": ["må"]})})
    passing = _judgement(["TA-1.4"], "lost", measured_fail=False)
    assert decide(contract, [passing], run_ended=True).verdict == "approved"
    verdict = decide(strict, [passing], run_ended=True)
    assert verdict.verdict == "incomplete" and "TA-7.1" in verdict.reason and "TA-6.1" not in verdict.reason
