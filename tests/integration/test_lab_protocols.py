"""The reference lab as a re-encoding platform: alarms in over SIA DC-09 and SCAIP (vtlab's own DC-09
transmitter and SCAIP device as the devices), out to centres over DC-09, SCAIP and MQTT (vtlab's DC-09
receiver, SCAIP receiver and a paho peer as the centres). Faults on those routes are counted exactly by the
content key `<device>:<code>:<zone>`, with no cid carried; supervision runs on DC-09 NULL and SCAIP PI;
hostile bytes are refused with a ledger line and the lab keeps routing."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from lab_fixtures import Peer, require_mosquitto, wait_until

from harness.lab.config import LabConfig
from harness.lab.process import LabProcess
from harness.protocols.contact_id import ContactIdEvent, encode_adm_cid
from harness.protocols.dc09 import ADM_CID, Account, Decision, TransmitterState
from harness.protocols.scaip import MessageType, StatusNumber
from harness.transports.dc09 import DC09Receiver, DC09Transmitter
from harness.transports.dc09 import Path as Dc09Path
from harness.transports.loop import LoopThread
from harness.transports.sip import Arrival, ScaipDevice, ScaipReceiver


@dataclass
class Centre:
    """What a DC-09 or SCAIP centre received, with a condition to wait on."""

    got: list[dict[str, Any]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, item: dict[str, Any]) -> None:
        with self.cond:
            self.got.append(item)
            self.cond.notify_all()

    def wait(self, pred: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 10.0) -> list[dict[str, Any]]:
        with self.cond:
            if not self.cond.wait_for(lambda: pred(self.got), timeout_s):
                raise AssertionError(f"centre: condition not met within {timeout_s}s; got {self.got[-5:]}")
            return list(self.got)

    def keys(self, device_of: dict[str, str]) -> list[str]:
        with self.cond:
            return [f"{device_of.get(g['account'], g['account'])}:{g['code']}:{g['zone']}" for g in self.got]


ACCOUNTS = {"1234": "dc-1", "5678": "dc-2", "4711": "sc-1", "4712": "sc-2", "2468": "dc-sup", "1357": "mq-1"}


@dataclass
class Bed:
    io: LoopThread
    lab: LabProcess
    dc09_centre: Centre
    scaip_centre: Centre
    mqtt_centre: Peer
    device: Peer
    dc09_port: int

    def dc09_device(self, account: str, *, protocol: str = "tcp", start_sequence: int = 1) -> DC09Transmitter:
        host, port = self.lab.ingress["dc09"].rsplit(":", 1)
        state = TransmitterState(account, start_sequence=start_sequence)
        return DC09Transmitter(state, Dc09Path(host, int(port), protocol), timeout_s=3.0, retries=1)  # type: ignore[arg-type]

    def scaip_device(self, cid: str, transport: str = "udp") -> ScaipDevice:
        dev = ScaipDevice(self.lab.ingress["scaip"], transport=transport, cid=cid)
        self.io.run(dev.start())
        return dev

    def ledger(self, action: str | None = None, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.lab.ledger()
            if (action is None or e["action"] == action) and all(e.get(k) == v for k, v in match.items())
        ]


def _dc09_centre_listener(io: LoopThread, centre: Centre) -> DC09Receiver:
    def on_message(decision: Decision, arrived_ns: int, peer: tuple[str, int], sent: bytes) -> None:
        content = decision.content
        if isinstance(content, ContactIdEvent) and decision.message is not None:
            centre.add(
                {
                    "account": (content.account or decision.message.account or "").upper(),
                    "code": content.code,
                    "qualifier": content.qualifier,
                    "zone": content.zone,
                    "sequence": decision.message.sequence,
                    "reply": decision.reply.kind,
                    "at_ns": arrived_ns,
                }
            )

    rx = DC09Receiver([Account(a) for a in ACCOUNTS], on_message, host="127.0.0.1", port=0)
    io.run(rx.start())
    return rx


def _scaip_centre_listener(io: LoopThread, centre: Centre) -> ScaipReceiver:
    """A SCAIP centre that answers every mrq with snu 0 (the receiver's default) and records it."""

    def record(a: Arrival) -> None:
        m = a.mrq
        centre.add({"cid": m.cid, "stc": m.stc, "dco": m.dco, "ref": m.ref, "dty": m.dty, "at_ns": a.arrived_ns})

    rx = ScaipReceiver(host="127.0.0.1", port=0, transport="udp", on_arrival=record)
    io.run(rx.start())
    return rx


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    require_mosquitto()
    io = LoopThread("test-peers")
    dc09_centre, scaip_centre = Centre(), Centre()
    dc_rx = _dc09_centre_listener(io, dc09_centre)
    sc_rx = _scaip_centre_listener(io, scaip_centre)
    config = LabConfig.model_validate(
        {
            "site": "p",
            "devices": {
                "dc-1": {"user": "persona/a", "centre": "rc-dc", "dc09_account": "1234"},
                "dc-2": {"user": "persona/b", "centre": "rc-mq", "dc09_account": "5678"},
                "dc-3": {"user": "persona/c", "centre": "rc-sc", "dc09_account": "9999"},
                "dc-sup": {
                    "user": "persona/d",
                    "centre": "rc-dc",
                    "dc09_account": "2468",
                    "heartbeat_interval_s": 0.15,
                },
                "sc-1": {"user": "persona/e", "centre": "rc-dc", "scaip": {"cid": "4711", "did": "btn1"}},
                "sc-2": {
                    "user": "persona/f",
                    "centre": "rc-dc",
                    "scaip": {"cid": "4712"},
                    "heartbeat_interval_s": 0.15,
                },
                "mq-1": {"user": "persona/g", "centre": "rc-dc", "dc09_account": "1357"},
            },
            "centres": ["rc-dc", "rc-mq", "rc-sc"],
            "delivery": {
                "rc-dc": {
                    "via": "dc09",
                    "address": f"127.0.0.1:{dc_rx.port}",
                    "accounts": {"sc-1": "4711", "sc-2": "4712"},
                    "timeout_s": 2.0,
                },
                "rc-sc": {"via": "scaip", "address": sc_rx.address, "protocol": "udp", "accounts": {"dc-3": "9999"}},
            },
            "supervision": {"misses": 2},
        }
    )
    lab = LabProcess(config, tmp_path_factory.mktemp("lab") / "lab")
    lab.start()
    mqtt_centre = Peer(lab.broker_url, subscribe=["vtlab/p/centre/+/alarm"])
    device = Peer(lab.broker_url, subscribe=["vtlab/p/device/+/ack"])
    try:
        yield Bed(io, lab, dc09_centre, scaip_centre, mqtt_centre, device, dc_rx.port)
    finally:
        mqtt_centre.close()
        device.close()
        lab.stop()
        io.run(dc_rx.stop())
        io.run(sc_rx.close())
        io.close()


def adm(account: str, code: str, zone: str, qualifier: int = 1) -> str:
    return encode_adm_cid(ContactIdEvent(account, qualifier, code, "01", zone))


def test_ready_line_reports_the_ingress_ports(bed: Bed) -> None:
    assert set(bed.lab.ingress) == {"dc09", "scaip", "scaip_plain"}  # no SCAIP over TLS configured here
    assert bed.lab.ingress["scaip"] == bed.lab.ingress["scaip_plain"]
    for address in bed.lab.ingress.values():
        host, port = address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0


def test_dc09_in_dc09_out_with_the_labs_own_sequence_numbers(bed: Bed) -> None:
    tx = bed.dc09_device("1234", start_sequence=500)
    zones = ["101", "102", "103"]
    results = [bed.io.run(tx.send(ADM_CID, adm("1234", "101", z))) for z in zones]
    assert all(r.acked for r in results)  # the device's ACK comes from the lab's receiver on receipt
    assert [r.message.sequence for r in results] == [500, 501, 502]
    got = bed.dc09_centre.wait(lambda g: sum(1 for x in g if x["account"] == "1234") >= 3)
    mine = [x for x in got if x["account"] == "1234"]
    assert [(x["code"], x["zone"], x["reply"]) for x in mine] == [("101", z, "ACK") for z in zones]
    assert not {x["sequence"] for x in mine} & {500, 501, 502}  # re-encoded: the lab's own sequence numbers
    seqs = [x["sequence"] for x in mine]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    wait_until(lambda: len(bed.ledger("centre_reply", device="dc-1")) >= 3, what="centre replies in the ledger")
    routed = bed.ledger("routed", device="dc-1")
    assert [e["key"] for e in routed] == [f"dc-1:101:{z}" for z in zones]
    assert all(e["via"] == "dc09" and e["ingress"] == "dc09" and "cid" not in e for e in routed)
    replies = bed.ledger("centre_reply", device="dc-1")
    assert {e["reply"] for e in replies} == {"ACK"} and [e["sequence"] for e in replies] == seqs
    bed.io.run(tx.close())


def test_dc09_over_udp_to_an_mqtt_centre_carries_the_zone(bed: Bed) -> None:
    tx = bed.dc09_device("5678", protocol="udp")
    result = bed.io.run(tx.send(ADM_CID, adm("5678", "101", "042")))
    assert result.acked
    got = bed.mqtt_centre.wait_count(1, topic_part="/rc-mq/")
    alarm = json.loads(got[0].payload)
    assert (alarm["device"], alarm["code"], alarm["zone"], alarm["centre"]) == ("dc-2", "101", "042", "rc-mq")
    assert alarm["cid"].startswith("dc09-") and alarm["event"] == "personal_emergency"
    assert alarm["user"] == "persona/b"
    bed.io.run(tx.close())


def test_scaip_in_dc09_out_and_the_mrs_goes_back_to_the_device(bed: Bed) -> None:
    dev = bed.scaip_device("4711")
    try:
        results = [
            bed.io.run(dev.send(dev.mrq(stc="0010", dty="0003", did="btn1", dco=str(z)), mrs_timeout=5.0))
            for z in (7, 8)
        ]
    finally:
        bed.io.run(dev.close())
    for r in results:
        assert r.status == 200 and r.mrs is not None and r.mrs.ref == r.mrq.ref and r.mrs.snu == StatusNumber.OK
    got = bed.dc09_centre.wait(lambda g: sum(1 for x in g if x["account"] == "4711") >= 2)
    assert [(x["code"], x["zone"]) for x in got if x["account"] == "4711"] == [("101", "007"), ("101", "008")]
    wait_until(lambda: len(bed.ledger("routed", device="sc-1")) >= 2)
    lines = bed.ledger("routed", device="sc-1")
    assert [e["key"] for e in lines] == ["sc-1:101:007", "sc-1:101:008"]
    assert [e["ref"] for e in lines] == [r.mrq.ref for r in results]


def test_dc09_in_scaip_out(bed: Bed) -> None:
    tx = bed.dc09_device("9999")
    assert bed.io.run(tx.send(ADM_CID, adm("9999", "302", "005"))).acked
    got = bed.scaip_centre.wait(lambda g: any(x["cid"] == "9999" for x in g))
    mrq = next(x for x in got if x["cid"] == "9999")
    assert (mrq["stc"], mrq["dco"]) == ("0016", "005")  # low battery, zone -> dco
    wait_until(lambda: bool(bed.ledger("centre_reply", device="dc-3")))
    reply = bed.ledger("centre_reply", device="dc-3")[0]
    assert (reply["reply"], reply["key"], reply["via"]) == ("snu=0", "dc-3:302:005", "scaip")
    assert reply["out_ref"] == mrq["ref"]  # the lab's own ref
    bed.io.run(tx.close())


def test_an_mqtt_device_to_a_dc09_centre_gets_its_device_ack(bed: Bed) -> None:
    event = {"v": 1, "cid": "mq-cid-1", "device": "mq-1", "event": "personal_emergency", "code": "101", "zone": "077"}
    bed.device.publish("vtlab/p/device/mq-1/event", event)
    got = bed.dc09_centre.wait(lambda g: any(x["account"] == "1357" for x in g))
    assert [(x["code"], x["zone"]) for x in got if x["account"] == "1357"] == [("101", "077")]
    acks = bed.device.wait_count(1, topic_part="/mq-1/")
    assert json.loads(acks[0].payload) | {"sent": None} == {
        "v": 1,
        "cid": "mq-cid-1",
        "centre": "rc-dc",
        "action": "received",
        "sent": None,
    }
    wait_until(lambda: bool(bed.ledger("ack", cid="mq-cid-1")))
    assert bed.ledger("routed", cid="mq-cid-1")[0]["key"] == "mq-1:101:077"


def test_faults_on_scaip_to_dc09_are_counted_exactly_by_key(bed: Bed) -> None:
    bed.lab.set_faults("drop=0.25,dup=0.25,delay=30ms@0.3,reorder=0.1,seed=11")
    try:
        dev = bed.scaip_device("4712")
        n = 30
        try:
            for z in range(200, 200 + n):
                r = bed.io.run(dev.send(dev.mrq(stc="0009", dty="0005", dco=str(z)), mrs_timeout=5.0))
                assert r.mrs is not None and r.mrs.snu == StatusNumber.OK
        finally:
            bed.io.run(dev.close())
        sent = {f"sc-2:100:{z}" for z in range(200, 200 + n)}
        wait_until(
            lambda: (
                len(bed.ledger("centre_reply", device="sc-2")) + len(bed.ledger("drop", device="sc-2"))
                >= n + len(bed.ledger("dup", device="sc-2"))
            ),
            timeout_s=20,
            what="every sc-2 alarm answered or dropped",
        )
        dropped = Counter(e["key"] for e in bed.ledger("drop", device="sc-2"))
        routed = Counter(e["key"] for e in bed.ledger("routed", device="sc-2"))
        dups = Counter(e["key"] for e in bed.ledger("dup", device="sc-2"))
        arrived = Counter(k for k in bed.dc09_centre.keys(ACCOUNTS) if k.startswith("sc-2:"))
        assert dropped and dups and bed.ledger("delay", device="sc-2")  # the seed exercises each fault
        assert set(dropped) | set(routed) == sent and not set(dropped) & set(routed)
        assert arrived == routed + dups  # exactly what the ledger says: nothing else lost, nothing else doubled
        assert not set(arrived) & set(dropped)
    finally:
        bed.lab.set_faults("")


def test_an_outage_loses_exactly_the_ledgers_keys(bed: Bed) -> None:
    bed.lab.set_faults("outage=30s@0s")
    tx = bed.dc09_device("1234")
    try:
        wait_until(lambda: bool(bed.ledger("outage_window", state="begin")), what="the outage began")
        assert bed.io.run(tx.send(ADM_CID, adm("1234", "101", "901"))).acked  # the receiver still ACKs
        wait_until(lambda: bool(bed.ledger("outage", key="dc-1:101:901")), what="an outage line")
    finally:
        bed.lab.set_faults("")
    assert bed.io.run(tx.send(ADM_CID, adm("1234", "101", "902"))).acked
    got = bed.dc09_centre.wait(lambda g: any(x["zone"] == "902" and x["account"] == "1234" for x in g))
    assert not any(x["zone"] == "901" and x["account"] == "1234" for x in got)
    bed.io.run(tx.close())


def test_supervision_over_dc09_null_polls(bed: Bed) -> None:
    tx = bed.dc09_device("2468")
    for _ in range(3):
        assert bed.io.run(tx.poll()).acked
    got = bed.dc09_centre.wait(lambda g: any(x["account"] == "2468" and x["code"] == "356" for x in g))
    failure = [x for x in got if x["account"] == "2468" and x["code"] == "356"]
    assert failure[0]["qualifier"] == 1 and failure[0]["zone"] == "000"
    assert bed.io.run(tx.poll()).acked  # it comes back
    got = bed.dc09_centre.wait(lambda g: any(x["account"] == "2468" and x["qualifier"] == 3 for x in g))
    assert bed.ledger("supervision_failure", device="dc-sup") and bed.ledger("supervision_restored", device="dc-sup")
    assert bed.ledger("supervision_failure", device="dc-sup")[0]["key"] == "dc-sup:356:000"
    bed.io.run(tx.close())


def test_supervision_over_scaip_heartbeats(bed: Bed) -> None:
    dev = bed.scaip_device("4712", transport="tcp")
    try:
        for _ in range(2):
            r = bed.io.run(dev.send(dev.mrq(mty=MessageType.HEARTBEAT, stc=None, dty="0005"), mrs_timeout=5.0))
            assert r.mrs is not None and r.mrs.snu == StatusNumber.OK
        bed.dc09_centre.wait(lambda g: any(x["account"] == "4712" and x["code"] == "356" for x in g))
        bed.io.run(dev.send(dev.mrq(mty=MessageType.HEARTBEAT, stc=None, dty="0005"), mrs_timeout=5.0))
        bed.dc09_centre.wait(
            lambda g: any(x["account"] == "4712" and x["code"] == "356" and x["qualifier"] == 3 for x in g)
        )
    finally:
        bed.io.run(dev.close())


def test_unknown_senders_and_hostile_bytes_are_refused_and_routing_goes_on(bed: Bed) -> None:
    stranger = bed.dc09_device("ABCD")
    r = bed.io.run(stranger.send(ADM_CID, adm("ABCD", "101", "001")))
    assert r.reply is not None and r.reply.kind == "DUH"
    bed.io.run(stranger.close())
    dev = bed.scaip_device("999")
    try:
        r2 = bed.io.run(dev.send(dev.mrq(stc="0010"), mrs_timeout=5.0))
        assert r2.mrs is not None and r2.mrs.snu == StatusNumber.WRONG_DATA_CONTENT
    finally:
        bed.io.run(dev.close())
    dc_host, dc_port = bed.lab.ingress["dc09"].rsplit(":", 1)
    sip_host, sip_port = bed.lab.ingress["scaip"].rsplit(":", 1)
    junk = [b"\n0000", b'\nFFFF0010"ADM-CID"0001[', bytes(range(256)), b"\n" + b"9" * 5000 + b"\r"]
    for data in junk:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.sendto(data, (dc_host, int(dc_port)))
            u.sendto(b"MESSAGE sip:x SIP/2.0\r\n" + data, (sip_host, int(sip_port)))
        with socket.create_connection((dc_host, int(dc_port)), timeout=2) as t:
            t.sendall(data + b"\r")
    wait_until(lambda: len(bed.ledger("rejected", via="dc09")) >= 3, what="DC-09 refusals in the ledger")
    wait_until(lambda: bool(bed.ledger("rejected", via="scaip")), what="SCAIP refusals in the ledger")
    assert any("unknown_account" in e["reason"] for e in bed.ledger("rejected", via="dc09"))
    assert any("names no device" in e["reason"] for e in bed.ledger("rejected", via="scaip"))
    assert bed.lab.alive
    tx = bed.dc09_device("1234")
    assert bed.io.run(tx.send(ADM_CID, adm("1234", "101", "555"))).acked
    bed.dc09_centre.wait(lambda g: any(x["zone"] == "555" for x in g))
    bed.io.run(tx.close())
