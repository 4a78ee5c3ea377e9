"""The scenario runner's correlation rules, fast, on the in-memory bus with a MOCK platform (a few lines
that route alarms and can misbehave on purpose). The same rules run against the real reference lab in
tests/integration/test_faults_are_caught.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness.contract import load_contract
from harness.engine import run_and_judge
from harness.evidence import EvidenceReader
from harness.labfile import Lab, load_lab
from harness.metrics import ScenarioMetrics, compute
from harness.scenario.loader import load_scenario
from harness.session import RunSession
from harness.transports.base import Message
from harness.transports.memory import MemoryBus
from tests.helpers import CONTRACT, Suite, memory_lab

Route = Callable[[dict[str, object]], list[tuple[str, dict[str, object]]]]


def mock_platform(bus: MemoryBus, lab: Lab, route: Route) -> None:
    """Subscribe to device events; publish whatever `route` says, to centre alarm topics."""

    def on_event(msg: Message) -> None:
        event = json.loads(msg.payload)
        for centre, alarm in route(event):
            bus.deliver(lab.topic("centre_alarm", centre=centre), json.dumps(alarm).encode())

    bus.add(lab.topic("device_event", device="+"), on_event)


def run(suite: Suite, tmp_path: Path, text: str, route: Route) -> ScenarioMetrics:
    """The real session and engine, on the in-memory transport, against a MOCK platform."""
    lab = load_lab(memory_lab(tmp_path))
    contract, src = load_contract(CONTRACT)
    plan = load_scenario(suite.scenario("s", text), contract, lab, "s")
    session = RunSession(lab=lab, contract=contract, contract_src=src, report_dir=tmp_path / "reports",
                         run_id="mock")
    session.start()
    mock_platform(session.bed.memory_bus(), lab, route)
    try:
        run_and_judge(plan, session)
    finally:
        session.close()
    reader = EvidenceReader(session.run_dir)
    try:
        return compute(reader.stimuli("s"), reader.arrivals("s"), reader.matches("s"))
    finally:
        reader.close()


SCENARIO = """
title: Knappetrykk
covers: [TA-1.4]
devices:
  knapp: {model: safety_alarm, rotate: true}
repeat: 8
pace: 100/s
drain: 200ms
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 300ms}
criteria:
  - {metric: lost, count: "== 0"}
"""


def centre_of(event: dict[str, object]) -> str:
    """The centre the routing plan gives the event's user (fixtures/users/personas.yaml)."""
    return str(_CENTRES[str(event["user"])])


_CENTRES = {p["id"]: p["centre"] for p in yaml.safe_load(
    (Path(__file__).parents[2] / "fixtures" / "users" / "personas.yaml").read_text(encoding="utf-8"))["personas"]}


def test_a_well_behaved_platform_loses_nothing(suite: Suite, tmp_path: Path) -> None:
    m = run(suite, tmp_path, SCENARIO, lambda e: [(centre_of(e), {**e, "centre": centre_of(e)})])
    assert m.counts["lost"] == 0 and m.counts["misrouted"] == 0
    assert m.latencies["alarm_latency"].statistic("count") == 8 and m.latencies["alarm_latency"].arrived == 8


def test_an_alarm_never_delivered_is_lost_and_named(suite: Suite, tmp_path: Path) -> None:
    def drop_third(e: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
        return [] if str(e["cid"]).endswith("000003") else [(centre_of(e), {**e, "centre": centre_of(e)})]

    m = run(suite, tmp_path, SCENARIO, drop_third)
    assert m.counts["lost"] == 1 and m.lost_cids[0].endswith("000003")


def test_an_alarm_at_the_wrong_centre_is_misrouted_not_lost(suite: Suite, tmp_path: Path) -> None:
    def swap(e: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
        wrong = "rs-ost" if centre_of(e) == "rs-vest" else "rs-vest"
        return [(wrong, {**e, "centre": wrong})]

    m = run(suite, tmp_path, SCENARIO, swap)
    assert m.counts["misrouted"] == 8 and m.counts["lost"] == 0


@pytest.mark.parametrize("field,value", [("priority", 3), ("code", "100")])
def test_an_alarm_whose_content_changed_is_altered(suite: Suite, tmp_path: Path, field: str, value: object) -> None:
    m = run(suite, tmp_path, SCENARIO, lambda e: [(centre_of(e), {**e, "centre": centre_of(e), field: value})])
    assert m.counts["altered"] == 8


def test_a_second_copy_is_a_duplicate(suite: Suite, tmp_path: Path) -> None:
    m = run(suite, tmp_path, SCENARIO, lambda e: [(centre_of(e), {**e, "centre": centre_of(e)})] * 2)
    assert m.counts["duplicates"] == 8 and m.counts["lost"] == 0


def test_an_alarm_without_user_is_judged_misrouted_with_what_arrived(suite: Suite, tmp_path: Path) -> None:
    """A platform-side omission is described as what happened, not as "nothing arrived"."""
    def no_user(e: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
        return [(centre_of(e), {k: v for k, v in {**e, "centre": centre_of(e)}.items() if k != "user"})]

    m = run(suite, tmp_path, SCENARIO, no_user)
    assert m.counts["misrouted"] == 8 and m.counts["lost"] == 0
    assert all("user absent" in d for d in m.problem_details)


@pytest.mark.parametrize("junk", [{"priority": "x"}, {"seq": -1}, {"battery": 1000}, {"code": 101}])
def test_an_alarm_with_malformed_fields_is_altered_not_lost(suite: Suite, tmp_path: Path,
                                                            junk: dict[str, object]) -> None:
    m = run(suite, tmp_path, SCENARIO, lambda e: [(centre_of(e), {**e, "centre": centre_of(e), **junk})])
    assert m.counts["altered"] == 8 and m.counts["lost"] == 0
    assert all("malformed" in d for d in m.problem_details)


def test_correlation_ids_differ_between_runs_with_the_same_run_id_suffix(suite: Suite, tmp_path: Path) -> None:
    seen: list[set[str]] = []
    for run_dir in ("a", "b"):
        cids: set[str] = set()

        def record(e: dict[str, object], cids: set[str] = cids) -> list[tuple[str, dict[str, object]]]:
            cids.add(str(e["cid"]))
            return [(centre_of(e), {**e, "centre": centre_of(e)})]

        run(suite, tmp_path / run_dir, SCENARIO, record)
        seen.append(cids)
    assert len(seen[0]) == 8 and not seen[0] & seen[1]
