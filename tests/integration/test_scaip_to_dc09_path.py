"""The Nordic path: a safety alarm sends SCAIP (an <mrq> in a SIP MESSAGE) to the alarm platform, which
re-encodes it as SIA DC-09 with Contact ID for the response centre, with its own account and sequence
numbers. vtlab plays both ends and correlates by what survives (device, Contact ID code, zone = SCAIP dco).

The platform is a MOCK written in the test (a SCAIP receiver forwarding through a DC-09 transmitter,
mapping stc 0010 -> Contact ID 101 and dco -> zone), standing in for a supplier's platform."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from harness.contract import load_contract
from harness.engine import run_and_judge
from harness.evidence import EvidenceReader
from harness.labfile import load_lab
from harness.metrics import ScenarioMetrics, compute
from harness.protocols.contact_id import ContactIdEvent, encode_adm_cid
from harness.protocols.dc09 import ADM_CID, TransmitterState
from harness.protocols.scaip import Mrq, reply_for
from harness.scenario.loader import load_scenario
from harness.session import RunSession
from harness.transports.dc09 import DC09Transmitter
from harness.transports.dc09 import Path as Dc09Path
from harness.transports.loop import LoopThread
from harness.transports.sip import ScaipReceiver
from tests.helpers import Suite, memory_lab, partial_suite_contract

pytestmark = pytest.mark.slow

SCENARIO = """
title: Alarmknapp over SCAIP til responssenter over DC-09
covers: [TA-1.1, TA-1.3, TA-1.4]
user: persona/ragnhild-87
devices:
  knapp: {model: safety_alarm}
repeat: 25
pace: 20/s
drain: 1s
steps:
  - trigger: {device: knapp, event: button_press}
  - expect_alarm: {from: knapp, within: 3s}
  - expect_receipt: {device: knapp, within: 3s, snu: 0}
criteria:
  - {metric: alarm_latency, p99: "<= 30s", requirement: TA-1.1}
  - {metric: lost, count: "== 0", requirement: TA-1.4}
"""
STC_TO_CID = {"0010": "101", "0009": "100", "0016": "302"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MockPlatform:
    def __init__(self, centre_port: int, drop: set[str]) -> None:
        self.io = LoopThread("mock-scaip-platform")
        self.drop = drop
        self.tx = DC09Transmitter(TransmitterState("5555", start_sequence=9000), Dc09Path("127.0.0.1", centre_port))
        self.rx = ScaipReceiver(host="127.0.0.1", port=0, transport="udp", on_message=self._on)
        self.io.run(self.rx.start())
        self.address = self.rx.address

    def _on(self, mrq: Mrq, arrived_ns: int, peer: object) -> object:
        if not mrq.is_heartbeat and mrq.dco not in self.drop:
            event = ContactIdEvent("5555", 1, STC_TO_CID[mrq.stc or ""], "01", mrq.dco or "000")
            self.io.submit(self.tx.send(ADM_CID, encode_adm_cid(event)))
        return reply_for(mrq)

    def close(self) -> None:
        self.io.run(self.rx.close())
        self.io.run(self.tx.close())
        self.io.close()


def run(tmp_path: Path, drop: set[str]) -> tuple[ScenarioMetrics, int]:
    centre_port = free_port()
    platform = MockPlatform(centre_port, drop)
    try:
        path = memory_lab(tmp_path / "lab", kind="external")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["devices"]["sa-ragnhild"].update(via="scaip", scaip={"cid": "4711", "did": "1", "to": platform.address})
        data["probes"]["response_centre"].update(via="dc09", dc09={"listen": f"127.0.0.1:{centre_port}",
                                                                   "accounts": {"5555": "sa-ragnhild"}})
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        lab = load_lab(path)
        contract, src = load_contract(partial_suite_contract())
        plan = load_scenario(Suite(tmp_path).scenario("scaip", SCENARIO), contract, lab, "scaip")
        session = RunSession(lab=lab, contract=contract, contract_src=src, report_dir=tmp_path / "reports",
                             run_id="scaip")
        session.start()
        try:
            run_and_judge(plan, session)
        finally:
            session.close()
    finally:
        platform.close()
    reader = EvidenceReader(tmp_path / "reports" / "scaip")
    try:
        receipts = sum(1 for a in reader.arrivals("scaip") if a["kind"] == "device_ack")
        return compute(reader.stimuli("scaip"), reader.arrivals("scaip"), reader.matches("scaip")), receipts
    finally:
        reader.close()


def test_scaip_alarms_re_encoded_as_dc09_arrive_correlated_and_the_device_gets_its_mrs(tmp_path: Path) -> None:
    m, receipts = run(tmp_path, drop=set())
    assert m.stimuli == 25
    assert m.counts["lost"] == 0 and m.counts["misrouted"] == 0 and m.counts["altered"] == 0, m.problem_details
    assert m.latencies["alarm_latency"].arrived == 25
    assert receipts == 25  # every <mrq> got its <mrs> back at the device
    assert m.latencies["receipt_latency"].arrived == 25 and m.counts["altered"] == 0  # with snu 0


def test_alarms_the_platform_drops_on_the_way_to_dc09_are_lost_by_content_correlation(tmp_path: Path) -> None:
    m, receipts = run(tmp_path, drop={"002", "011", "019"})
    assert m.counts["lost"] == 3 and m.latencies["alarm_latency"].censored == 3
    assert sorted(int(c.rsplit("-", 1)[-1]) for c in m.lost_cids) == [2, 11, 19]  # the 2nd, 11th, 19th alarm
    assert receipts == 25  # the platform took every <mrq>; it lost three on the way to the centre
