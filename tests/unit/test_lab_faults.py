"""Fault spec parsing, durations, and the decision engine (pure, with a fake clock)."""

from __future__ import annotations

import pytest

from harness.errors import InputError
from harness.faults import (
    KNOWN_KEYS,
    FaultPlan,
    FaultSpec,
    format_duration,
    parse_duration,
    parse_faults,
)

MS = 1_000_000
S = 1_000_000_000


# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("250ms", 250 * MS),
        ("30s", 30 * S),
        ("5m", 300 * S),
        ("2h", 7200 * S),
        ("1.5s", 1500 * MS),
        ("0.25s", 250 * MS),
        (" 400ms ", 400 * MS),
        ("0ms", 0),
    ],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text, "x") == ns


def test_duration_without_unit_says_what_to_write() -> None:
    with pytest.raises(InputError) as e:
        parse_duration("400", "scenario.yaml:3")
    assert str(e.value.place) == "scenario.yaml:3"
    assert e.value.problem == "`400` has no unit"
    assert e.value.fix == "write 400ms or 0.4s"


def test_duration_unknown_unit() -> None:
    with pytest.raises(InputError) as e:
        parse_duration("3d", "f")
    assert e.value.problem == "`3d` has an unknown unit `d`"
    assert e.value.fix == "use one of ms, s, m, h (e.g. 250ms, 30s, 5m, 2h)"


def test_duration_not_a_number() -> None:
    with pytest.raises(InputError) as e:
        parse_duration("soon", "f")
    assert e.value.problem == "`soon` is not a duration"
    assert "250ms" in (e.value.fix or "")


@pytest.mark.parametrize("ns", [0, 250 * MS, 1500 * MS, 30 * S, 300 * S, 7200 * S, 90 * S, 1234])
def test_format_duration_round_trip(ns: int) -> None:
    assert parse_duration(format_duration(ns)) == ns


# ------------------------------------------------------------------ spec parsing


def test_full_spec() -> None:
    spec = parse_faults("drop=0.03,dup=0.01,delay=400ms@0.1,reorder=0.02,outage=10s@30s,seed=7")
    assert spec == FaultSpec(
        drop=0.03,
        dup=0.01,
        delay_ns=400 * MS,
        delay_p=0.1,
        reorder=0.02,
        outage_ns=10 * S,
        outage_at_ns=30 * S,
        seed=7,
    )


def test_empty_spec_is_no_faults() -> None:
    assert parse_faults("") == FaultSpec()
    assert parse_faults("   ") == FaultSpec()
    assert parse_faults("").empty
    assert str(FaultSpec()) == ""


def test_percentages() -> None:
    spec = parse_faults("drop=3%,dup=0.5%,delay=1s@10%")
    assert spec.drop == pytest.approx(0.03)
    assert spec.dup == pytest.approx(0.005)
    assert spec.delay_p == pytest.approx(0.1)


def test_fixed_delay_applies_to_every_alarm() -> None:
    spec = parse_faults("delay=300ms")
    assert spec.delay_ns == 300 * MS and spec.delay_p == 1.0
    assert str(spec) == "delay=300ms"


@pytest.mark.parametrize(
    "text",
    [
        "drop=0.03,dup=0.01,delay=400ms@0.1,reorder=0.02,outage=10s@30s,seed=7",
        "seed=7,outage=10s@30s,reorder=2%,delay=0.4s@10%,dup=1%,drop=3%",
        "delay=1.5s",
        "drop=1",
        "outage=2m@0ms",
    ],
)
def test_canonical_round_trip(text: str) -> None:
    spec = parse_faults(text)
    canonical = str(spec)
    assert parse_faults(canonical) == spec
    assert str(parse_faults(canonical)) == canonical


def test_canonical_form() -> None:
    spec = parse_faults("seed=7,outage=10s@30s,reorder=2%,delay=0.4s@10%,dup=1%,drop=3%")
    assert str(spec) == "drop=0.03,dup=0.01,delay=400ms@0.1,reorder=0.02,outage=10s@30s,seed=7"
    assert FaultSpec.parse(str(spec)) == spec


def _err(text: str, place: str = "--fault") -> InputError:
    with pytest.raises(InputError) as e:
        parse_faults(text, place)
    assert str(e.value.place) == place
    return e.value


def test_error_delay_without_unit() -> None:
    e = _err("delay=400")
    assert e.problem == "`delay=400` has no unit"
    assert e.fix == "write 400ms or 0.4s"
    assert str(e) == "--fault: `delay=400` has no unit\n  fix: write 400ms or 0.4s"


def test_error_delay_without_unit_with_share() -> None:
    e = _err("delay=400@0.1", "labs/home.yaml:12")
    assert e.problem == "`delay=400` has no unit"


def test_error_unknown_key_lists_known_ones() -> None:
    e = _err("lose=0.1")
    assert e.problem == "unknown fault `lose`"
    assert e.fix == "use one of " + ", ".join(KNOWN_KEYS)
    assert "drop, dup, delay, reorder, outage, seed" in (e.fix or "")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("drop=1.5", "`drop=1.5`: probability 1.5 is outside 0 and 1"),
        ("dup=150%", "`dup=150%`: probability 150% is outside 0% and 100%"),
        ("delay=1s@2", "`delay=2`: probability 2 is outside 0 and 1"),
    ],
)
def test_error_probability_out_of_range(text: str, problem: str) -> None:
    e = _err(text)
    assert e.problem == problem
    assert "between" in (e.fix or "")


def test_error_probability_not_a_number() -> None:
    e = _err("drop=often")
    assert e.problem == "`drop=often`: `often` is not a probability"
    assert e.fix == "write a number between 0 and 1 or a percentage, e.g. drop=0.03 or drop=3%"


def test_error_negative_probability() -> None:
    e = _err("drop=-0.1")
    assert e.problem == "`drop=-0.1`: `-0.1` is not a probability"


def test_error_no_value() -> None:
    e = _err("drop")
    assert e.problem == "`drop` has no value"
    assert e.fix == "write key=value, e.g. drop=0.03"


def test_error_duplicate_key() -> None:
    e = _err("drop=0.1,drop=0.2")
    assert e.problem == "`drop` is given twice"
    assert e.fix == "keep one `drop=...`"


def test_error_empty_item() -> None:
    e = _err("drop=0.1,,dup=0.1")
    assert e.problem == "`drop=0.1,,dup=0.1` has an empty item"


def test_error_outage_without_start() -> None:
    e = _err("outage=10s")
    assert e.problem == "`outage=10s` has no start time"
    assert e.fix is not None and e.fix.startswith("write outage=10s@30s")


def test_error_outage_bad_unit() -> None:
    e = _err("outage=10x@30s")
    assert e.problem == "`outage=10x`: `10x` has an unknown unit `x`"


def test_error_seed_not_a_number() -> None:
    e = _err("seed=abc")
    assert e.problem == "`seed=abc` is not a whole number"
    assert e.fix == "write a non-negative whole number, e.g. seed=7"


def test_error_names_the_lab_file() -> None:
    e = _err("delay=5", "fixtures/labs/reference.json")
    assert str(e).startswith("fixtures/labs/reference.json: ")


# ------------------------------------------------------------------ decisions


def _run(spec: str, n: int, step_ns: int = MS) -> list[tuple[bool, str | None, int, int, bool]]:
    plan = FaultPlan(parse_faults(spec), start_ns=0)
    out = []
    for i in range(n):
        d = plan.decide(i * step_ns)
        out.append((d.drop, d.reason, d.copies, d.extra_delay_ns, d.hold_for_reorder))
    return out


def test_no_faults_routes_everything_once() -> None:
    for drop, reason, copies, delay, hold in _run("", 1000):
        assert (drop, reason, copies, delay, hold) == (False, None, 1, 0, False)


def test_drop_rate_within_band() -> None:
    n = 10_000
    drops = sum(1 for d in _run("drop=0.03,seed=7", n) if d[0])
    # binomial sd = sqrt(10000*0.03*0.97) ~= 17; allow ~5 sd
    assert 215 <= drops <= 385, drops
    assert all(r == "drop" for d, r, *_ in _run("drop=0.03,seed=7", n) if d)


def test_dup_and_delay_share_within_band() -> None:
    n = 10_000
    runs = _run("dup=0.1,delay=400ms@0.2,reorder=0.05,seed=3", n)
    dups = sum(1 for r in runs if r[2] == 2)
    delayed = [r[3] for r in runs if r[3]]
    held = sum(1 for r in runs if r[4])
    assert 850 <= dups <= 1150
    assert 1800 <= len(delayed) <= 2200
    assert set(delayed) == {400 * MS}
    assert 400 <= held <= 600


def test_fixed_delay_every_alarm() -> None:
    assert {r[3] for r in _run("delay=300ms", 500)} == {300 * MS}


def test_same_seed_same_decisions_other_seed_differs() -> None:
    spec = "drop=0.1,dup=0.1,delay=50ms@0.3,reorder=0.1"
    a = _run(spec + ",seed=11", 2000)
    b = _run(spec + ",seed=11", 2000)
    c = _run(spec + ",seed=12", 2000)
    assert a == b
    assert a != c


def test_default_seed_is_reproducible() -> None:
    assert _run("drop=0.5", 500) == _run("drop=0.5,seed=0", 500)


def test_outage_window_boundaries_with_fake_clock() -> None:
    plan = FaultPlan(parse_faults("outage=10s@30s"), start_ns=1_000 * S)
    t0 = 1_000 * S

    def reason(t: int) -> str | None:
        return plan.decide(t).reason

    assert reason(t0) is None
    assert reason(t0 + 30 * S - 1) is None
    assert reason(t0 + 30 * S) == "outage"
    assert reason(t0 + 35 * S) == "outage"
    assert reason(t0 + 40 * S - 1) == "outage"
    assert reason(t0 + 40 * S) is None
    assert reason(t0 + 3600 * S) is None
    assert plan.in_outage(t0 + 31 * S)
    assert not plan.in_outage(t0 + 41 * S)


def test_outage_clock_starts_at_first_decision_when_not_given() -> None:
    plan = FaultPlan(parse_faults("outage=1s@2s"))
    assert plan.decide(50 * S).reason is None
    assert plan.decide(52 * S).reason == "outage"
    assert plan.decide(53 * S).reason is None


def test_outage_does_not_shift_the_random_stream() -> None:
    # decisions after an outage are the same as without it: each decide() draws the same amount
    with_outage = FaultPlan(parse_faults("drop=0.3,outage=1s@0ms,seed=5"), start_ns=0)
    without = FaultPlan(parse_faults("drop=0.3,seed=5"), start_ns=0)
    for i in range(100):
        with_outage.decide(i * 10 * MS)  # all inside the outage
        without.decide(i * 10 * MS)
    for i in range(100):
        t = 2 * S + i * MS
        assert with_outage.decide(t) == without.decide(t)
