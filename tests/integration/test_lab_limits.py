"""The reference lab under hostile input: every payload is validated, unknown devices and unroutable alarms
are refused with a reason, and a flood of oversized messages leaves its memory flat (a ratio against its
own idle RSS in the same run) while valid alarms are still routed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_fixtures import Peer, wait_until

from harness.lab.config import LabConfig
from harness.lab.process import LabProcess

EV = "vtlab/h/device/{}/event"
HB = "vtlab/h/device/{}/heartbeat"
CFG: dict[str, Any] = {
    "site": "h",
    "devices": {"sa-1": {"user": "persona/a"}, "sa-2": {"user": "persona/lost"}, "hb-1": {"user": "persona/a"}},
    "centres": ["rc-a"],
    "routing": {"persona/a": "rc-a"},
    "supervision": {"misses": 1},
}


def event(cid: str, device: str = "sa-1", **extra: Any) -> dict[str, Any]:
    return {"v": 1, "cid": cid, "device": device, "event": "personal_emergency", "code": "101", **extra}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabProcess]:
    with LabProcess(LabConfig.model_validate(CFG), tmp_path / "lab") as lp:
        yield lp


def _rejected(lab: LabProcess) -> list[dict[str, Any]]:
    return [x for x in lab.ledger() if x["action"] == "rejected"]


def _rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def test_hostile_fields_unknown_devices_and_unroutable_alarms_are_refused(lab: LabProcess) -> None:
    centre = Peer(lab.broker_url, subscribe=["vtlab/h/centre/+/alarm"])
    device = Peer(lab.broker_url)
    with centre, device:
        device.publish(EV.format("sa-1"), event("p-1", priority="x"))
        device.publish(EV.format("sa-1"), event("s-1", seq=-1))
        device.publish(EV.format("sa-1"), event("c" * 300))
        device.publish(EV.format("sa-1"), b'{"v": 1, "cid": "big", "pad": "' + b"x" * 200_000 + b'"}')
        device.publish(EV.format("ghost"), event("g-1", "ghost"))
        device.publish(HB.format("ghost"), {"v": 1, "device": "ghost", "interval_s": 0.05})
        device.publish(EV.format("sa-2"), event("n-1", "sa-2"))  # user without a route, no default centre
        device.publish(HB.format("hb-1"), {"v": 1, "device": "hb-1", "interval_s": 1e9})
        device.publish(EV.format("sa-1"), event("ok-1"))
        assert [a.json()["cid"] for a in centre.wait_count(1)] == ["ok-1"]
        wait_until(lambda: len(_rejected(lab)) == 8, what="eight rejected lines")
    reasons = [x["reason"] for x in _rejected(lab)]
    assert reasons == [
        "event: field `priority` must be a whole number 1..9, got 'x'",
        "event: field `seq` must be a whole number 0..9007199254740992, got -1",
        "event: field `cid` is 300 characters long (at most 256)",
        "event: payload of 200033 bytes (at most 16384)",
        "unknown device `ghost`: not in the lab's devices",
        "unknown device `ghost`: not in the lab's devices",
        "no centre for device `sa-2` (user `None`): no device centre, no route, no default_centre",
        "heartbeat interval_s 1e+09 is outside 0.01..86400",
    ]
    assert all(len(json.dumps(x)) < 600 for x in lab.ledger())  # nothing hostile is copied into the ledger
    assert [x["cid"] for x in lab.ledger() if x["action"] == "routed"] == ["ok-1"]
    assert not [x for x in lab.ledger() if x["action"].startswith("supervision")]  # no alarm for `ghost`
    assert "rc-1" not in json.dumps(lab.ledger())


def test_a_packet_over_the_brokers_limit_never_reaches_a_centre(lab: LabProcess) -> None:
    with Peer(lab.broker_url, subscribe=["vtlab/h/centre/+/alarm"]) as centre:
        with Peer(lab.broker_url) as big:
            big.client.publish(EV.format("sa-1"), json.dumps(event("huge", pad="x" * 1_000_000)).encode(), qos=1)
            if lab.broker_kind == "mosquitto":  # refused by the broker (max_packet_size): it drops the client
                with big._cond:
                    assert big._cond.wait_for(lambda: big.disconnect_reason is not None, 5)
            else:  # amqtt has no packet limit: the lab's codec refuses it
                wait_until(lambda: len(_rejected(lab)) == 1, what="rejected line")
        with Peer(lab.broker_url) as device:
            device.publish(EV.format("sa-1"), event("after"))
            assert [a.json()["cid"] for a in centre.wait_count(1)] == ["after"]


def test_memory_stays_flat_under_a_flood_of_oversized_messages(lab: LabProcess) -> None:
    """Before the bounds, 6,000 events with 100 kB cids grew the lab by ~900 MB; now its RSS after a
    flood of N such events stays within 1.5x its idle RSS, and its peak within 2x."""
    assert lab.pid is not None
    n = 1500
    centre = Peer(lab.broker_url, subscribe=["vtlab/h/centre/+/alarm"])
    device = Peer(lab.broker_url)
    with centre, device:
        for i in range(20):  # warm up: every code path once, so idle includes what a working lab needs
            device.publish(EV.format("sa-1"), event(f"warm-{i}"), wait=False)
        centre.wait_count(20)
        idle = _rss_kib(lab.pid)["VmRSS"]
        pad = "c" * 100_000
        for i in range(n):
            device.publish(EV.format("sa-1"), event(f"{i}-{pad}"), wait=False)
            if i % 100 == 0:  # keep the publisher's own queue short
                device.publish(EV.format("sa-1"), event(f"sync-{i}"))
        wait_until(lambda: len(_rejected(lab)) >= n, timeout_s=60, what=f"{n} rejected lines")
        device.publish(EV.format("sa-1"), event("after-flood"))
        got = centre.wait_for(lambda a: any(x.json()["cid"] == "after-flood" for x in a), timeout_s=10)
        assert {x.json()["cid"] for x in got} >= {"after-flood", "sync-0", f"sync-{n - 100}"}
        after = _rss_kib(lab.pid)
    assert after["VmRSS"] / idle <= 1.5, (idle, after)
    assert after["VmHWM"] / idle <= 2.0, (idle, after)
