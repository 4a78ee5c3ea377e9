"""A safety alarm speaking SIA DC-09 to a platform that re-encodes (its own account numbers and sequence
numbers, no vtlab correlation id) before it reaches a response centre that receives DC-09: vtlab correlates
by what survives the trip (account -> device, Contact ID code, zone) and counts loss and copies exactly.

The platform here is a MOCK relay written in the test (a DC-09 receiver that forwards through a DC-09
transmitter), standing in for a supplier's alarm platform."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import yaml

from harness.contract import load_contract
from harness.engine import run_and_judge
from harness.evidence import EvidenceReader
from harness.labfile import load_lab
from harness.metrics import ScenarioMetrics, compute
from harness.protocols.contact_id import decode_adm_cid, encode_adm_cid
from harness.protocols.dc09 import ADM_CID, Account, Decision, TransmitterState
from harness.scenario.loader import load_scenario
from harness.session import RunSession
from harness.transports.dc09 import DC09Receiver, DC09Transmitter
from harness.transports.dc09 import Path as Dc09Path
from harness.transports.loop import LoopThread
from tests.helpers import Suite, memory_lab, partial_suite_contract

pytestmark = pytest.mark.slow

SCENARIO = """
title: Alarm over DC-09 gjennom en plattform som koder om
covers: [TA-1.1, TA-1.4, TA-1.5]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
repeat: 30
pace: 20/s
drain: 1s
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 2s}
criteria:
  - {metric: alarm_latency, p99: "<= 30s", requirement: TA-1.1}
  - {metric: lost, count: "== 0", requirement: TA-1.4}
  - {metric: duplicates, count: "== 0", requirement: TA-1.5}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MockPlatform:
    """Receives DC-09 from the device account 1234, forwards to the centre as account 9876 with its own
    sequence numbers; drops and duplicates the frames whose zone numbers it is told to."""

    def __init__(self, centre_port: int, *, drop: set[str], dup: set[str], delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.io = LoopThread("mock-platform")
        self.drop, self.dup = drop, dup
        self.tx = DC09Transmitter(TransmitterState("9876", start_sequence=4711), Dc09Path("127.0.0.1", centre_port))
        self.rx = DC09Receiver([Account("1234")], self._on, host="127.0.0.1", port=0, udp=False)
        self.io.run(self.rx.start())
        self.port = self.rx.port
        self.forwarded = 0

    def _on(self, decision: Decision, arrived_ns: int, peer: object, sent: bytes) -> None:
        if not decision.accepted or decision.message is None or decision.message.token != ADM_CID:
            return
        event = decode_adm_cid(decision.message.data)
        if event.zone in self.drop:
            return
        out = encode_adm_cid(type(event)("9876", event.qualifier, event.code, event.partition, event.zone))
        for _ in range(2 if event.zone in self.dup else 1):
            self.io.submit(self._forward(out))
            self.forwarded += 1

    async def _forward(self, out: str) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # the platform's own processing time, on purpose
        await self.tx.send(ADM_CID, out)

    def close(self) -> None:
        self.io.run(self.rx.stop())
        self.io.run(self.tx.close())
        self.io.close()


def run(tmp_path: Path, *, drop: set[str], dup: set[str], zones: int = 999, delay_s: float = 0.0,
        scenario: str = SCENARIO, primary_dead: bool = False) -> ScenarioMetrics:
    centre_port = free_port()
    platform = MockPlatform(centre_port, drop=drop, dup=dup, delay_s=delay_s)
    try:
        path = memory_lab(tmp_path / "lab", kind="external")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        to = f"127.0.0.1:{free_port()}" if primary_dead else f"127.0.0.1:{platform.port}"
        dc09 = {"account": "1234", "to": to, "zones": zones, "timeout": "300ms"}
        if primary_dead:
            dc09["backup"] = f"127.0.0.1:{platform.port}"
        data["devices"]["sa-ragnhild"].update(via="dc09", dc09=dc09)
        data["probes"]["response_centre"].update(via="dc09", dc09={"listen": f"127.0.0.1:{centre_port}",
                                                                   "accounts": {"9876": "sa-ragnhild"}})
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        lab = load_lab(path)
        contract, src = load_contract(partial_suite_contract())
        plan = load_scenario(Suite(tmp_path).scenario("dc09", scenario), contract, lab, "dc09")
        session = RunSession(lab=lab, contract=contract, contract_src=src, report_dir=tmp_path / "reports",
                             run_id="dc09")
        session.start()
        try:
            run_and_judge(plan, session)
        finally:
            session.close()
    finally:
        platform.close()
    reader = EvidenceReader(tmp_path / "reports" / "dc09")
    try:
        return compute(reader.stimuli("dc09"), reader.arrivals("dc09"), reader.matches("dc09"))
    finally:
        reader.close()


def test_a_re_encoding_platform_is_correlated_by_content_with_no_cid(tmp_path: Path) -> None:
    m = run(tmp_path, drop=set(), dup=set())
    assert m.stimuli == 30
    assert m.counts["lost"] == 0 and m.counts["misrouted"] == 0 and m.counts["altered"] == 0, m.problem_details
    assert m.latencies["alarm_latency"].arrived == 30


def test_drops_and_copies_of_a_re_encoding_platform_are_counted_exactly(tmp_path: Path) -> None:
    m = run(tmp_path, drop={"003", "017"}, dup={"005", "020", "021"})
    assert m.counts["lost"] == 2
    assert m.counts["duplicates"] == 3
    assert m.latencies["alarm_latency"].censored == 2


def test_alarms_in_flight_that_look_the_same_are_ambiguous_not_guessed(tmp_path: Path) -> None:
    """With only two zone numbers and a platform that takes 300 ms, several alarms with the same code and
    zone are in flight at once: an arrival could be any of them, and vtlab says so."""
    m = run(tmp_path, drop=set(), dup=set(), zones=2, delay_s=0.3,
            scenario=SCENARIO.replace("repeat: 30", "repeat: 8").replace("pace: 20/s", "pace: 50/s"))
    assert m.counts["ambiguous"] >= 1
    assert m.counts["ambiguous"] + m.latencies["alarm_latency"].arrived <= 8


def test_a_device_whose_primary_path_is_dead_falls_back_to_its_backup_path(tmp_path: Path) -> None:
    text = SCENARIO.replace("repeat: 30", "repeat: 4").replace(
        "  - expect_alarm: {from: knapp, within: 2s}",
        "  - expect_alarm: {from: knapp, within: 5s}\n  - expect_receipt: {device: knapp, within: 5s, path: backup}")
    m = run(tmp_path, drop=set(), dup=set(), scenario=text, primary_dead=True)
    assert m.counts["lost"] == 0 and m.latencies["alarm_latency"].arrived == 4
    assert m.latencies["receipt_latency"].arrived == 4 and m.counts["altered"] == 0, m.problem_details
