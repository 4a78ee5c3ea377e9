"""Load scenario files: the examples load; every mistake is refused at its file and line with a fix;
histograms merge exactly (counts add, percentiles from the merge equal those of all samples together)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.contract import load_contract
from harness.errors import InputError
from harness.load import hist
from harness.load.scenario import is_load_scenario, is_load_scenario_file, load_load_scenario
from harness.metrics import Latency
from harness.yamlfile import load_yaml

ROOT = Path(__file__).resolve().parents[2]
CONTRACT, _ = load_contract(next((ROOT / "fixtures" / "contract").glob("*.yaml")))
EXAMPLES = sorted([*(ROOT / "scenarios").rglob("*.yaml"), *(ROOT / "fixtures" / "capacity").glob("*.yaml")])
LOAD_EXAMPLES = [p for p in EXAMPLES if is_load_scenario(load_yaml(p, "scenario").data)]

GOOD = """title: Flåten
covers: [TA-4.1]
load:
  shape: steady
  devices: 20
  rate: 10/s
  duration: 5s
criteria:
  - {metric: lost, count: "== 0"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "load.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_there_are_example_load_scenarios_of_every_shape() -> None:
    shapes = {load_load_scenario(p, CONTRACT).spec.load.shape for p in LOAD_EXAMPLES}
    assert shapes == {"steady", "ramp", "storm", "morning_peak"}


def test_functional_scenarios_are_not_load_scenarios(tmp_path: Path) -> None:
    functional = [p for p in (ROOT / "scenarios").rglob("*.yaml") if p not in LOAD_EXAMPLES]
    assert functional and not any(is_load_scenario_file(p) for p in functional)
    assert all(is_load_scenario_file(p) for p in LOAD_EXAMPLES)
    broken = tmp_path / "broken.yaml"
    broken.write_text("title: [unclosed\n", encoding="utf-8")
    assert not is_load_scenario_file(broken)  # left to the functional loader, which says what is wrong


def test_a_good_file_resolves_its_schedule_and_criteria(tmp_path: Path) -> None:
    plan = load_load_scenario(write(tmp_path, GOOD), CONTRACT)
    assert plan.schedule.planned() == 50
    assert [c.metric for c in plan.criteria] == ["lost"]
    assert plan.criteria[0].requirements == ("TA-4.1",)


def test_cli_overrides_replace_the_files_values(tmp_path: Path) -> None:
    plan = load_load_scenario(write(tmp_path, GOOD), CONTRACT, overrides={"devices": 7, "rate": "4/s"})
    assert plan.devices == 7 and plan.schedule.planned() == 20


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        ({"devices": 0}, "--users"),
        ({"devices": -5}, "--users"),
        ({"devices": True}, "--users"),
        ({"rate": "fast"}, "--rate"),
        ({"rate": "-3/s"}, "--rate"),
        ({"duration": "5"}, "--duration"),
        ({"duration": "99999h"}, "--duration"),
    ],
)
def test_a_bad_command_line_value_is_named_by_its_option(
    tmp_path: Path, overrides: dict[str, object], option: str
) -> None:
    with pytest.raises(InputError) as e:
        load_load_scenario(write(tmp_path, GOOD), CONTRACT, overrides=overrides)
    assert str(e.value).startswith(option) and e.value.fix and "capacity" not in str(e.value.place or "")


@pytest.mark.parametrize(
    ("edit", "line", "words"),
    [
        (("devices: 20", "devices: 0"), 5, "devices"),
        (("rate: 10/s", "rate: fast"), 6, "not a rate"),
        (("shape: steady", "shape: tsunami"), 4, "shape"),
        (("duration: 5s", "duration: 5"), 7, "no unit"),
        (("covers: [TA-4.1]", "covers: [TA-4.9]"), 2, "unknown requirement"),
        (("metric: lost", 'metric: storm_recovery, max: "<= 1s"} #'), 9, "unknown metric"),
        (("  duration: 5s", "  duration: 5s\n  storm: {within: 5s}"), 8, "only belongs to `shape: storm`"),
        (("shape: steady", "shape: storm"), 4, "needs `storm:`"),
        (("  duration: 5s", "  duration: 5s\n  event: heartbeat_stop"), 8, "sends no event"),
        (("  duration: 5s", "  duration: 5s\n  model: toaster"), 8, "unknown device model"),
        (("  duration: 5s", "  duration: 5s\n  burst: 3"), 8, "unknown key"),
    ],
)
def test_mistakes_are_refused_at_their_line(tmp_path: Path, edit: tuple[str, str], line: int, words: str) -> None:
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(InputError) as exc:
        load_load_scenario(path, CONTRACT)
    assert words in exc.value.problem
    assert exc.value.place is not None and exc.value.place.source == str(path)
    assert exc.value.place.line == line
    assert exc.value.fix


def test_a_storm_larger_than_the_fleet_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("shape: steady", "shape: storm").replace(
        "  duration: 5s", "  duration: 5s\n  storm: {devices: 21, within: 5s}"
    )
    with pytest.raises(InputError, match="storm of 21 devices"):
        load_load_scenario(write(tmp_path, text), CONTRACT)


@pytest.mark.parametrize("devices", ["true", "false", "0", "-3", "0%", "101%"])
def test_a_storm_of_no_sensible_size_is_refused_at_its_line(tmp_path: Path, devices: str) -> None:
    text = GOOD.replace("shape: steady", "shape: storm").replace(
        "  duration: 5s", f"  duration: 5s\n  storm: {{devices: {devices}, within: 5s}}"
    )
    with pytest.raises(InputError) as e:
        load_load_scenario(write(tmp_path, text), CONTRACT)
    assert ":8" in str(e.value) and e.value.fix


def test_a_file_without_load_is_sent_to_vtlab_run(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a load scenario") as exc:
        load_load_scenario(ROOT / "scenarios" / "capacity" / "samtidige_alarmer.yaml", CONTRACT)
    assert "vtlab run" in (exc.value.fix or "")


def test_merged_histogram_equals_one_histogram_of_all_samples() -> None:
    rng = random.Random(7)
    parts = [[rng.randint(50_000, 80_000_000) for _ in range(n)] for n in (1000, 3, 0, 2500)]
    encoded = []
    for values in parts:
        h = hist.new_histogram()
        for v in values:
            hist.record(h, v)
        encoded.append(hist.encode(h))
    merged = hist.merge(encoded)
    everything = Latency("all")
    for v in (v for values in parts for v in values):
        everything.record(0, v)
    assert merged.get_total_count() == sum(len(p) for p in parts) == everything.arrived
    for pct in (50.0, 90.0, 99.0, 99.9, 100.0):
        assert merged.get_value_at_percentile(pct) == everything.histogram.get_value_at_percentile(pct)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda s: s.encode()))
def test_junk_is_not_a_histogram(junk: bytes) -> None:
    try:
        h = hist.decode(junk.decode("latin-1"))
    except ValueError:
        return
    assert h.get_total_count() >= 0  # whatever decodes is a histogram, never a crash
