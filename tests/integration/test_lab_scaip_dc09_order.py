"""The reference lab hands a SCAIP alarm on before it answers the device: the re-encoded DC-09 frame leaves
before the lab builds and sends its `<mrs>`, so neither the receipt nor the device's answer to it sits on
the alarm's path to the centre (issue 8: SCAIP -> DC-09 latency within a few ms of MQTT's)."""

from __future__ import annotations

import threading
from functools import partial
from pathlib import Path

from lab_fixtures import require_mosquitto, wait_until

from harness.lab.config import LabConfig
from harness.lab.process import LabProcess
from harness.protocols.contact_id import ContactIdEvent
from harness.protocols.dc09 import Account, Decision
from harness.transports.dc09 import DC09Receiver
from harness.transports.loop import LoopThread
from harness.transports.sip import ScaipDevice

ALARMS = 40
# Both ends are read by one event loop in this process, stamped as the bytes come off each socket: on a
# busy machine the loop may serve the device's socket first now and then although the frame left first.
# The lab's order shows as a large majority, never as every single alarm (a lab that answers first loses
# nearly every time).
LATE_AT_MOST = 0.10


def _replies_at_least(lab: LabProcess, n: int) -> bool:
    return sum(e["action"] == "centre_reply" for e in lab.ledger()) >= n


def test_the_dc09_frame_reaches_the_centre_before_the_mrs_reaches_the_device(tmp_path: Path) -> None:
    require_mosquitto()
    io = LoopThread("order-peers")
    arrivals: dict[str, int] = {}
    cond = threading.Condition()

    def on_dc09(decision: Decision, arrived_ns: int, peer: tuple[str, int], sent: bytes) -> None:
        if isinstance(decision.content, ContactIdEvent):
            with cond:
                arrivals[decision.content.zone] = arrived_ns
                cond.notify_all()

    rx = DC09Receiver([Account("4711")], on_dc09, host="127.0.0.1", port=0, udp=False)
    io.run(rx.start())
    config = LabConfig.model_validate(
        {
            "site": "o",
            "devices": {"sc-1": {"centre": "rc-dc", "scaip": {"cid": "4711"}}},
            "centres": ["rc-dc"],
            "delivery": {"rc-dc": {"via": "dc09", "address": f"127.0.0.1:{rx.port}", "accounts": {"sc-1": "4711"}}},
        }
    )
    order: list[tuple[int, int]] = []  # (centre's DC-09 arrival, device's <mrs> arrival), one per alarm
    try:
        with LabProcess(config, tmp_path / "lab") as lab:
            dev = ScaipDevice(lab.ingress["scaip"], transport="udp", cid="4711")
            io.run(dev.start())
            try:
                for i in range(1, ALARMS + 1):
                    zone = f"{i:03d}"
                    result = io.run(dev.send(dev.mrq(stc="0010", dco=zone), mrs_timeout=5.0))
                    assert result.mrs is not None and result.mrs_ns is not None
                    with cond:
                        assert cond.wait_for(partial(arrivals.__contains__, zone), 5.0), (
                            f"alarm {zone} never reached the centre"
                        )
                    order.append((arrivals[zone], result.mrs_ns))
                    # DC-09 has one message in flight per line: the next alarm starts once the lab has its ACK
                    wait_until(partial(_replies_at_least, lab, i), what="the centre's ACK in the lab's ledger")
            finally:
                io.run(dev.close())
    finally:
        io.run(rx.stop())
        io.close()
    # the first alarm opens the lab's DC-09 connection (the <mrs> may overtake it meanwhile); after that,
    # with the line free, the frame leads
    timed = order[1:]
    late = [(i, (centre - mrs) / 1e3) for i, (centre, mrs) in enumerate(timed, start=1) if centre > mrs]
    assert len(late) <= LATE_AT_MOST * len(timed), (
        f"{len(late)} of {len(timed)} alarms reached the centre after the device had its <mrs> (index, us): {late}"
    )
