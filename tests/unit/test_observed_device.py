"""An observed real device (serial or BLE): its events wait for a step that asks for them, its findings
wait for a listener, it cannot be made to send, and a device observed for days keeps a bounded buffer."""

from __future__ import annotations

import threading

import pytest

from harness.errors import TargetError
from harness.links import Outgoing, Refused, observed
from harness.links.gateway import GatewayEvent


class Bench(observed.ObservedDevice):
    def __init__(self) -> None:
        super().__init__()
        self.device_id = "knapp"


def press(n: int) -> GatewayEvent:
    return GatewayEvent(t_ns=n, device="knapp", event="personal_emergency", code="101", zone=f"{n % 999 + 1:03d}")


def test_a_step_waits_for_the_event_the_tester_provokes() -> None:
    bench = Bench()
    threading.Timer(0.05, bench._on_event, (press(10),)).start()
    got = bench.wait_event(lambda g: g.fields.get("code") == "101", timeout_s=5, after_ns=5)
    assert got is not None and got.t_ns == 10
    assert bench.wait_event(lambda g: True, timeout_s=0.05, after_ns=11) is None  # nothing newer


def test_findings_wait_for_a_listener_and_the_device_cannot_be_made_to_send() -> None:
    bench = Bench()
    finding = Refused(1, "garbage", "unreadable frame", "serial")
    bench._on_finding(finding)
    heard: list[Refused] = []
    bench.on_findings(heard.append)
    assert heard == [finding]
    with pytest.raises(TargetError, match="cannot make it send"):
        bench.send(Outgoing(cid="c", device="knapp", user="u", event="personal_emergency", code="101",
                            qualifier="1", priority=1, seq=1, battery=None))


def test_a_device_observed_for_long_keeps_a_bounded_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observed, "KEPT_EVENTS", 20)
    bench = Bench()
    for n in range(1, 101):
        bench._on_event(press(n))
    assert 10 <= len(bench._seen) <= 20 and bench._seen[-1].t_ns == 100
