"""Metrics from evidence rows, criteria with marginal bands, deviations and the approval rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.acceptance import CriterionDef, ScenarioJudgement, decide, judge
from harness.contract import load_contract
from harness.errors import InputError
from harness.metrics import compute
from harness.outcomes import ScenarioStatus
from harness.units import Dimension, parse_duration, parse_limit, parse_rate
from tests.helpers import CONTRACT

MS = 1_000_000


def stimulus(cid: str, t_ms: float, seq: int, device: str = "sa-1") -> dict[str, Any]:
    return {"cid": cid, "t_ns": int(t_ms * MS), "seq": seq, "device": device}


def arrival(row_id: int, cid: str, t_ms: float, kind: str = "alarm") -> dict[str, Any]:
    return {"id": row_id, "cid": cid, "t_ns": int(t_ms * MS), "kind": kind, "payload": json.dumps({"cid": cid})}


def match(
    cid: str,
    arrival_id: int | None,
    latency_ms: float | None,
    outcome: str = "ok",
    seq: int = 1,
    metric: str = "alarm_latency",
) -> dict[str, Any]:
    return {
        "stimulus_cid": cid,
        "arrival_id": arrival_id,
        "device": "sa-1",
        "seq": seq,
        "step": 1,
        "metric": metric,
        "latency_ns": None if latency_ms is None else int(latency_ms * MS),
        "outcome": outcome,
        "detail": None,
    }


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
    matches = [
        match("a", 1, 1, seq=1),
        match("b", 3, 15, seq=2),
        match("c", 2, 1, seq=3),
        match("d", None, None, "lost", seq=4),
    ]
    m = compute(stimuli, arrivals, matches)
    assert m.counts["lost"] == 1 and m.lost_cids == ["d"]
    assert m.counts["duplicates"] == 1 and m.duplicate_cids == ["b"]
    assert m.counts["out_of_order"] == 1 and m.out_of_order_cids == ["b"]
    lat = m.latencies["alarm_latency"]
    assert (lat.n, lat.arrived, lat.censored) == (4, 3, 1)  # n counts every expectation, the lost one too
    assert m.value("lost", "rate") == pytest.approx(0.25)


def test_an_arrival_stamped_before_its_observed_stimulus_counts_as_zero_latency_not_negative() -> None:
    """A real device observed by radio: the platform's gateway heard it first and delivered 2 ms before
    vtlab's own radio stamped the event. Not a negative time, not a lost alarm: 0, and counted."""
    stimuli = [stimulus("a", 10, 1), stimulus("b", 20, 2)]
    arrivals = [arrival(1, "a", 8), arrival(2, "b", 25)]
    m = compute(stimuli, arrivals, [match("a", 1, -2, seq=1), match("b", 2, 5, seq=2)])
    lat = m.latencies["alarm_latency"]
    assert [v for _, v in lat.samples] == [0, 5 * MS]
    assert (lat.arrived, lat.censored, lat.before_stimulus) == (2, 0, 1)
    assert lat.summary()["before_stimulus"] == 1 and lat.summary()["min"] is not None and lat.summary()["min"] >= 0
    assert m.counts["lost"] == 0


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
    assert result.verdict == "fail" and result.censored and "did not arrive" in result.detail
    assert (result.n, result.arrived, result.not_arrived) == (1, 0, 1)


def _judgement(covers: list[str], metric: str, measured_fail: bool) -> ScenarioJudgement:
    rows = [match("a", None, None, "lost")] if measured_fail else [match("a", 1, 5)]
    m = compute([stimulus("a", 0, 1)], [arrival(1, "a", 5)] if not measured_fail else [], rows)
    crit = CriterionDef(metric, "count", "== 0", None, "count", tuple(covers))
    return ScenarioJudgement("s", "t", ScenarioStatus.COMPLETED, covers, judge("s", [crit], m), m)


def test_approval_rule_blocks_on_a_and_b_deviations_only() -> None:
    contract = _relaxed(load_contract(CONTRACT)[0])
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
    contract = _relaxed(load_contract(CONTRACT)[0])
    passing = _judgement(["TA-1.4"], "lost", measured_fail=False)
    assert decide(contract, [passing], run_ended=True).verdict == "approved"
    assert decide(contract, [passing], run_ended=False).verdict == "incomplete"
    running = ScenarioJudgement("s", "t", ScenarioStatus.RUNNING, ["TA-1.4"], [], None)
    assert decide(contract, [running], run_ended=True).verdict == "incomplete"


def test_a_run_that_left_part_of_the_suite_out_cannot_approve() -> None:
    contract = _relaxed(load_contract(CONTRACT)[0])
    passing = _judgement(["TA-1.4"], "lost", measured_fail=False)
    suite = {"TA-1.4": ["s"], "TA-3.2": ["scenarios/supervision/lavt_batteri.yaml"]}
    verdict = decide(contract, [passing], run_ended=True, suite=suite)
    assert verdict.verdict == "incomplete" and verdict.partial
    assert verdict.not_run == ["TA-3.2"]
    assert "TA-3.2" not in verdict.uncovered
    failing = _judgement(["TA-1.4"], "lost", measured_fail=True)
    assert decide(contract, [failing], run_ended=True, suite=suite).verdict == "not_approved"


def _relaxed(contract: Any) -> Any:
    return contract.model_copy(update={"approval": contract.approval.model_copy(update={"require_tested": []})})


def test_by_default_every_must_requirement_must_be_tested_or_verified_otherwise() -> None:
    contract, _ = load_contract(CONTRACT)
    passing = _judgement(["TA-1.4"], "lost", measured_fail=False)
    verdict = decide(contract, [passing], run_ended=True)
    assert verdict.verdict == "incomplete" and verdict.reason.code == "untested_required"
    assert "TA-1.1" in verdict.reason.items and "TA-6.1" not in verdict.reason.items  # bør is not required
    assert "TA-7.1" not in verdict.reason.items  # verified in the operation period, marked in the contract
    row = next(r for r in verdict.requirements if r["id"] == "TA-7.1")
    assert row["verdict"] == "verified_otherwise" and row["verified_by"]["method"] == "operation_period"
    assert decide(_relaxed(contract), [passing], run_ended=True).verdict == "approved"


def test_a_harness_fault_makes_the_run_incomplete_and_charges_nothing_to_the_supplier() -> None:
    contract, _ = load_contract(CONTRACT)
    failing = _judgement(["TA-1.4"], "lost", measured_fail=True)
    faulted = ScenarioJudgement("s", "t", ScenarioStatus.HARNESS_FAULT, ["TA-1.4"], failing.results, failing.metrics)
    verdict = decide(_relaxed(contract), [faulted], run_ended=True)
    assert verdict.verdict == "incomplete" and verdict.reason.code == "harness_fault"
    assert verdict.deviations == []
    assert next(r for r in verdict.requirements if r["id"] == "TA-1.4")["verdict"] == "error"


# --- what a number means: censored percentiles and distinct throughput ----------------------------------
@pytest.mark.parametrize("seed", range(40))
def test_a_latency_percentile_is_over_every_alarm_sent_not_only_those_that_arrived(seed: int) -> None:
    """Generated variants: n alarms, k of them lost, misrouted, late or never tried, the rest fast.
    p99 passes only when at most 1 % of all alarms failed to arrive in place and in time."""
    import random

    rnd = random.Random(seed)
    n = rnd.randint(1, 400)
    bad = rnd.randint(0, max(0, n // 10))
    kinds = ["lost", "misrouted", "late", "not_reached"]
    stimuli = [stimulus(f"s{i}", i, i) for i in range(n)]
    arrivals, matches = [], []
    for i in range(n):
        if i < bad:
            kind = rnd.choice(kinds)
            late = kind == "late"
            matches.append(match(f"s{i}", i if late else None, 40_000 if late else None, kind, seq=i))
            if late:
                arrivals.append(arrival(i, f"s{i}", i + 40_000))
        else:
            matches.append(match(f"s{i}", i, rnd.uniform(1, 50), seq=i))
            arrivals.append(arrival(i, f"s{i}", i + 5))
    m = compute(stimuli, arrivals, matches)
    (p99,) = judge("s", [_criterion("alarm_latency", "p99", "<= 30s", None, Dimension.TIME)], m)
    assert (p99.n, p99.arrived, p99.not_arrived) == (n, n - bad, bad)
    allowed = n - ((99 * n + 99) // 100)  # alarms that may miss while 99 % of n still arrive in time
    assert (p99.verdict == "pass") == (bad <= allowed), (n, bad, p99.detail)
    (p50,) = judge("s", [_criterion("alarm_latency", "p50", "<= 30s", None, Dimension.TIME)], m)
    assert p50.verdict == "pass"  # at most 10 % failed: the median is among the fast ones


def test_five_percent_dropped_fails_p99_as_well_as_lost() -> None:
    stimuli = [stimulus(f"s{i}", i, i) for i in range(100)]
    matches = [
        match(f"s{i}", None, None, "lost", seq=i) if i % 20 == 0 else match(f"s{i}", i, 6, seq=i) for i in range(100)
    ]
    m = compute(stimuli, [arrival(i, f"s{i}", i + 6) for i in range(100) if i % 20], matches)
    results = judge(
        "s",
        [
            _criterion("alarm_latency", "p99", "<= 30s", None, Dimension.TIME),
            CriterionDef("lost", "count", "== 0", None, "count", ("TA-1.4",)),
        ],
        m,
    )
    assert [r.verdict for r in results] == ["fail", "fail"]
    assert "95 arrived in time, 5 did not: 5 lost" in results[0].detail


def test_throughput_counts_distinct_alarms_delivered_in_place() -> None:
    stimuli = [stimulus(f"s{i}", i * 100, i) for i in range(10)]
    arrivals = [arrival(i, f"s{i}", i * 100 + 5) for i in range(10)]
    arrivals += [arrival(100 + i, f"s{i}", i * 100 + 6) for i in range(3)]  # three copies
    matches = [match(f"s{i}", i, 5, seq=i) for i in range(8)]
    matches += [match("s8", 8, None, "misrouted", seq=8), match("s9", None, None, "lost", seq=9)]
    m = compute(stimuli, arrivals, matches)
    assert m.value("throughput", "count") == 8  # not 13 arrivals, not 9 with the misrouted one
    assert m.counts["duplicates"] == 3
