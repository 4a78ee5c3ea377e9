"""The reference lab end to end: `python -m harness.lab` in a subprocess, paho peers as device and centre."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_fixtures import Peer, require_mosquitto, wait_until

from harness.errors import InputError, TargetError
from harness.lab.config import LabConfig
from harness.lab.process import LabProcess
from harness.pki import make_pki

SITE = "t"
EV = "vtlab/t/device/{}/event"
HB = "vtlab/t/device/{}/heartbeat"

BASE: dict[str, Any] = {
    "site": SITE,
    "devices": {
        "sa-1": {"user": "persona/ragnhild-87", "centre": "rc-a"},
        "sa-2": {"user": "persona/olav-91"},
        "sa-3": {},
        "hb-1": {
            "user": "persona/kari-80",
            "centre": "rc-a",
            "heartbeat_interval_s": 0.2,
        },
    },
    "centres": ["rc-a", "rc-b", "rc-z"],
    "routing": {"persona/olav-91": "rc-b"},
    "default_centre": "rc-z",
    "supervision": {"misses": 2},
}


def _cfg(**over: Any) -> LabConfig:
    data = json.loads(json.dumps(BASE))
    data.update(over)
    return LabConfig.model_validate(data)


def event(cid: str, device: str = "sa-1", **extra: Any) -> dict[str, Any]:
    e = {
        "v": 1,
        "cid": cid,
        "device": device,
        "user": "persona/ragnhild-87",
        "event": "personal_emergency",
        "code": "101",
        "qualifier": "1",
        "priority": 1,
        "seq": 1,
        "battery": 78,
        "sent": "2026-11-23T10:00:00.123Z",
    }
    e.update(extra)
    return e


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabProcess]:
    with LabProcess(_cfg(), tmp_path / "lab") as lp:
        yield lp


def _peers(lab: LabProcess, v5: bool = False) -> tuple[Peer, Peer]:
    centre = Peer(lab.broker_url, subscribe=["vtlab/t/centre/+/alarm"], v5=v5)
    device = Peer(lab.broker_url, subscribe=["vtlab/t/device/+/ack"], v5=v5)
    return centre, device


def _actions(lab: LabProcess, action: str) -> list[dict[str, Any]]:
    return [x for x in lab.ledger() if x["action"] == action]


@pytest.mark.parametrize(("kind", "version"), [("mosquitto", "5"), ("amqtt", "3.1.1")])
def test_routes_to_the_right_centre_and_relays_acks(tmp_path: Path, kind: str, version: str) -> None:
    if kind == "mosquitto":
        require_mosquitto()
    cfg = _cfg(broker={"kind": kind, "mqtt_version": version})
    with LabProcess(cfg, tmp_path / "lab") as lab:
        assert lab.broker_kind == kind
        assert lab.broker_url.startswith("mqtt://127.0.0.1:")
        centre, device = _peers(lab, v5=version == "5")
        with centre, device:
            sent = {
                "c-1": event("c-1", "sa-1"),  # device's own centre
                "c-2": event("c-2", "sa-2", user="persona/olav-91"),  # by user routing
                "c-3": event("c-3", "sa-3", user="persona/nobody"),  # known device, unrouted user: default
            }
            device.publish(EV.format("sa-9"), event("c-9", "sa-9"))  # unknown device: refused
            for e in sent.values():
                device.publish(EV.format(e["device"]), e)
            got = {a.json()["cid"]: a for a in centre.wait_count(3)}
            assert got["c-1"].topic == "vtlab/t/centre/rc-a/alarm"
            assert got["c-2"].topic == "vtlab/t/centre/rc-b/alarm"
            assert got["c-3"].topic == "vtlab/t/centre/rc-z/alarm"
            for cid, a in got.items():
                body = a.json()
                assert body.pop("centre") == a.topic.split("/")[3]
                assert body.pop("routed").endswith("Z")
                assert body == sent[cid]  # the event's fields unchanged

            centre.publish(
                "vtlab/t/centre/rc-a/ack",
                {
                    "v": 1,
                    "cid": "c-1",
                    "device": "sa-1",
                    "centre": "rc-a",
                    "operator": "op-1",
                    "action": "acknowledged",
                    "sent": "2026-11-23T10:00:01.000Z",
                },
            )
            centre.publish(
                "vtlab/t/centre/rc-b/ack",
                {"v": 1, "cid": "c-2", "centre": "rc-b", "action": "acknowledged"},
            )
            acks = {a.json()["cid"]: a for a in device.wait_count(2)}
            assert acks["c-1"].topic == "vtlab/t/device/sa-1/ack"
            assert acks["c-2"].topic == "vtlab/t/device/sa-2/ack"  # device found from the cid
            ack = acks["c-1"].json()
            assert ack["v"] == 1 and ack["centre"] == "rc-a" and ack["action"] == "acknowledged"
        routed = _actions(lab, "routed")
        assert {x["cid"] for x in routed} == {"c-1", "c-2", "c-3"}
        assert {x["cid"] for x in _actions(lab, "ack")} == {"c-1", "c-2"}
        assert [x["reason"] for x in _actions(lab, "rejected")] == ["unknown device `sa-9`: not in the lab's devices"]
    assert not lab.alive


def test_drop_ledger_names_exactly_the_lost_alarms(lab: LabProcess) -> None:
    lab.set_faults("drop=0.2,seed=4")
    centre, device = _peers(lab)
    n = 100
    with centre, device:
        for i in range(n):
            device.publish(EV.format("sa-1"), event(f"d-{i}"), wait=False)
        wait_until(
            lambda: len(_actions(lab, "routed")) + len(_actions(lab, "drop")) >= n,
            what="ledger complete",
        )
        dropped = {x["cid"] for x in _actions(lab, "drop")}
        arrived = {a.json()["cid"] for a in centre.wait_count(n - len(dropped))}
    assert 5 <= len(dropped) <= 40
    assert dropped | arrived == {f"d-{i}" for i in range(n)}
    assert not dropped & arrived
    assert {x["cid"] for x in _actions(lab, "routed")} == arrived


def test_dup_delivers_twice(lab: LabProcess) -> None:
    lab.set_faults("dup=1")
    centre, device = _peers(lab)
    with centre, device:
        for i in range(3):
            device.publish(EV.format("sa-1"), event(f"u-{i}"))
        got = centre.wait_count(6)
    assert Counter(a.json()["cid"] for a in got) == {"u-0": 2, "u-1": 2, "u-2": 2}
    assert len(_actions(lab, "dup")) == 3


def test_delay_shifts_arrival(lab: LabProcess) -> None:
    centre, device = _peers(lab)
    with centre, device:

        def latency_ms(cid: str) -> float:
            sent = device.publish(EV.format("sa-1"), event(cid), wait=False)
            arr = centre.wait_for(lambda a: any(x.json()["cid"] == cid for x in a))
            at = next(x.at_ns for x in arr if x.json()["cid"] == cid)
            return (at - sent) / 1e6

        latency_ms("b-0")
        lab.set_faults("delay=300ms")
        delayed = [latency_ms(f"x-{i}") for i in range(3)]
    assert min(delayed) >= 300  # held at least as long as the fault says (an upper bound would time the machine)
    lines = _actions(lab, "delay")
    assert [(x["cid"], x["delay_ms"]) for x in lines] == [(f"x-{i}", 300.0) for i in range(3)]
    assert [x["cid"] for x in _actions(lab, "routed")] == ["b-0", "x-0", "x-1", "x-2"]


def test_reorder_swaps_neighbours(lab: LabProcess) -> None:
    lab.set_faults("reorder=1")
    centre, device = _peers(lab)
    with centre, device:
        for i in range(4):
            device.publish(EV.format("sa-1"), event(f"r-{i}"))
        got = [a.json()["cid"] for a in centre.wait_count(4)]
        assert got == ["r-1", "r-0", "r-3", "r-2"]
        t0 = time.monotonic()
        device.publish(EV.format("sa-1"), event("r-4"))  # held, and no next alarm comes
        got = [a.json()["cid"] for a in centre.wait_count(5, timeout_s=3)]
        assert got[-1] == "r-4" and time.monotonic() - t0 >= 1.0  # released by the lab's 1 s timer
    assert [x["cid"] for x in _actions(lab, "reorder")] == ["r-0", "r-2", "r-4"]


def test_outage_drops_alarms_and_acks_then_recovers(lab: LabProcess) -> None:
    centre, device = _peers(lab)
    with centre, device:
        device.publish(EV.format("sa-1"), event("o-0"))
        centre.wait_count(1)
        lab.set_faults("outage=600ms@0ms")
        device.publish(EV.format("sa-1"), event("o-1"))
        centre.publish("vtlab/t/centre/rc-a/ack", {"v": 1, "cid": "o-0", "centre": "rc-a", "device": "sa-1"})
        wait_until(lambda: len(_actions(lab, "outage")) == 2, what="two outage lines")
        # the lab says when its window ends: wait for that line, not for a guessed time
        wait_until(lambda: any(x.get("state") == "end" for x in _actions(lab, "outage_window")), what="outage end")
        device.publish(EV.format("sa-1"), event("o-2"))
        got = [a.json()["cid"] for a in centre.wait_count(2)]
    assert got == ["o-0", "o-2"]
    kinds = {(x["cid"], x.get("kind", "alarm")) for x in _actions(lab, "outage")}
    assert kinds == {("o-1", "alarm"), ("o-0", "ack")}
    assert device.arrivals == []


def test_supervision_raises_356_and_restores(lab: LabProcess) -> None:
    centre, device = _peers(lab)
    with centre, device:
        device.publish(HB.format("hb-1"), {"v": 1, "device": "hb-1", "seq": 1, "interval_s": 60})
        t0 = time.monotonic()
        fail = centre.wait_count(1, timeout_s=3)[0]
        waited = time.monotonic() - t0
        body = fail.json()
        assert fail.topic == "vtlab/t/centre/rc-a/alarm"
        assert body["event"] == "supervision_failure"
        assert (body["code"], body["qualifier"]) == ("356", "1")
        assert body["cid"] == "lab-sup-hb-1-1" and body["device"] == "hb-1"
        assert waited >= 0.3  # two missed 0.2 s intervals (config beats the payload's 60 s)
        assert len(centre.arrivals) == 1  # raised once, not every interval
        device.publish(HB.format("hb-1"), {"v": 1, "device": "hb-1", "seq": 2, "interval_s": 60})
        got = centre.wait_count(2, timeout_s=3)
        restored = got[1].json()
        assert restored["event"] == "supervision_restored"
        assert (restored["code"], restored["qualifier"], restored["cid"]) == (
            "356",
            "3",
            "lab-sup-hb-1-2",
        )
    actions = [x["action"] for x in lab.ledger() if x.get("device") == "hb-1"]
    assert actions[:2] == ["supervision_failure", "supervision_restored"]


def test_bad_input_is_rejected_not_fatal(lab: LabProcess) -> None:
    centre, device = _peers(lab)
    with centre, device:
        device.publish(EV.format("sa-1"), b"\xff not json")
        device.publish(EV.format("sa-1"), {"v": 1, "event": "personal_emergency"})  # no cid
        device.publish(EV.format("sa-1"), b"[1, 2]")
        device.publish(HB.format("sa-1"), b"{}")  # no device, no interval
        centre.publish("vtlab/t/centre/rc-a/ack", {"v": 1, "cid": "never-routed", "centre": "rc-a"})
        centre.publish("vtlab/t/lab/control", b'{"v": 1}')
        device.publish(EV.format("sa-1"), event("ok-1"))
        assert centre.wait_count(1)[0].json()["cid"] == "ok-1"
        wait_until(lambda: len(_actions(lab, "rejected")) == 6, what="six rejected lines")
    assert lab.alive
    reasons = [x["reason"] for x in _actions(lab, "rejected")]
    assert len(reasons) == 6, reasons
    assert reasons[0].startswith("event: not UTF-8")
    assert reasons[1] == "event: field `cid` is missing"
    assert reasons[2] == "event: payload is a JSON list, not an object"
    assert reasons[3] == "heartbeat: field `device` is missing"
    assert reasons[4] == "ack for a cid this lab has not routed (or no longer remembers)"
    assert reasons[5] == "control message: field `faults` is missing"


def test_control_message_changes_faults(lab: LabProcess) -> None:
    centre, device = _peers(lab)
    with centre, device:
        assert str(lab.set_faults("drop=100%")) == "drop=1"
        device.publish(EV.format("sa-1"), event("k-1"))
        wait_until(lambda: len(_actions(lab, "drop")) == 1, what="drop line")
        lab.set_faults("")
        device.publish(EV.format("sa-1"), event("k-2"))
        assert [a.json()["cid"] for a in centre.wait_count(1)] == ["k-2"]
        # a raw control message with a bad spec is rejected by the lab, which keeps running
        centre.publish("vtlab/t/lab/control", {"v": 1, "faults": "delay=400"})
        wait_until(lambda: any("no unit" in x.get("reason", "") for x in lab.ledger()))
    with pytest.raises(InputError) as e:
        lab.set_faults("delay=400")
    assert e.value.fix == "write 400ms or 0.4s"
    specs = [x["spec"] for x in _actions(lab, "faults")]
    assert specs == ["", "drop=1", ""]


def test_tls_lab(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", ["lab", "harness", "centre-rc-a", "device-sa-1"], keep_ca_key=False)
    assert pki.ca_key is None and not (tmp_path / "pki" / "ca.key").exists()
    tls = {
        "ca": str(pki.ca_cert),
        "server_cert": str(pki.server_cert),
        "server_key": str(pki.server_key),
        "client_cert": str(pki.clients["lab"].cert),
        "client_key": str(pki.clients["lab"].key),
        "control_cert": str(pki.clients["harness"].cert),
        "control_key": str(pki.clients["harness"].key),
    }
    with LabProcess(_cfg(broker={"tls": tls, "kind": "amqtt", "mqtt_version": "3.1.1"}), tmp_path / "lab") as lab:
        assert lab.broker_url.startswith("mqtts://")
        assert lab.access_control == "amqtt-acl"
        c, d = pki.clients["centre-rc-a"], pki.clients["device-sa-1"]
        with (
            Peer(lab.broker_url, subscribe=["vtlab/t/centre/rc-a/alarm"], ca=pki.ca_cert, cert=c.cert, key=c.key) as p,
            Peer(lab.broker_url, ca=pki.ca_cert, cert=d.cert, key=d.key) as dev,
        ):
            assert p.suback == [1]
            assert dev.subscribe("vtlab/t/centre/+/alarm") == 0x80  # MQTT 3.1.1: refused
            lab.set_faults("dup=1")
            dev.publish(EV.format("sa-1"), event("tls-1"))
            assert len(p.wait_count(2)) == 2
            dev.publish(EV.format("sa-2"), event("tls-2", "sa-2"))  # not its topic: dropped by the broker
            dev.publish(EV.format("sa-1"), event("tls-3"))
            assert [a.json()["cid"] for a in p.wait_count(4)] == ["tls-1", "tls-1", "tls-3", "tls-3"]
            assert dev.arrivals == []


def test_lab_that_cannot_start_raises_target_error(tmp_path: Path) -> None:
    cfg = _cfg(broker={"external_url": "mqtt://127.0.0.1:1"})
    with pytest.raises(TargetError) as e:
        LabProcess(cfg, tmp_path / "lab", ready_timeout_s=15).start()
    assert "failed to start" in e.value.problem and "127.0.0.1:1" in e.value.problem


def test_cli_bad_config_prints_ready_false(tmp_path: Path) -> None:
    cfg = tmp_path / "lab.json"
    cfg.write_text(json.dumps({"faults": "drop=2"}))
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    r = subprocess.run(
        [sys.executable, "-m", "harness.lab", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert r.returncode == 2
    out = json.loads(r.stdout.strip().splitlines()[0])
    assert out["ready"] is False and "outside 0 and 1" in out["error"] and str(cfg) in out["error"]


def test_cli_stops_broker_on_sigterm(tmp_path: Path) -> None:
    cfg = tmp_path / "lab.json"
    cfg.write_text(_cfg(ledger=str(tmp_path / "l.jsonl")).to_json())
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    p = subprocess.Popen(
        [sys.executable, "-m", "harness.lab", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert p.stdout is not None
        ready = json.loads(p.stdout.readline())
        assert ready["ready"] is True and ready["pid"] == p.pid
        port = int(ready["broker"].rsplit(":", 1)[1])
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        import socket

        with (
            pytest.raises(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=1),
        ):
            pass
    finally:
        if p.poll() is None:
            p.kill()


def test_lab_stops_with_its_broker_when_the_parent_goes_away(tmp_path: Path) -> None:
    lab = LabProcess(_cfg(), tmp_path / "lab").start()
    try:
        port = int(lab.broker_url.rsplit(":", 1)[1])
        assert lab._proc is not None and lab._proc.stdin is not None
        lab._proc.stdin.close()  # what the kernel does when the harness dies
        assert lab._proc.wait(timeout=10) == 0
        wait_until(lambda: _closed(port), what="broker port closed")
    finally:
        lab.stop()


def _closed(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def test_amqtt_with_mqtt5_is_refused_with_a_fix(tmp_path: Path) -> None:
    cfg = _cfg(broker={"kind": "amqtt", "mqtt_version": "5"})
    with pytest.raises(TargetError) as e:
        LabProcess(cfg, tmp_path / "lab").start()
    assert "MQTT 3.1.1 only" in e.value.problem
