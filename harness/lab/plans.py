"""The users' plans the reference lab applies itself: a reading beyond the user's `thresholds:` raises a
follow-up alarm of its own, and an event of the wandering plan outside the plan's night (by the lab's
clock, `platform.local_time`) is recorded, not alarmed.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from decimal import Decimal

from harness.lab.alarm import LabAlarm
from harness.lab.config import LabConfig
from harness.lab.wandering import LocalClock, hhmm


class PlansMixin:
    """The Router's rules from the users' plans; declares what of the Router it uses."""

    config: LabConfig
    _lock: threading.RLock
    _follow_ups: int
    _local: LocalClock

    def _follow_up(self, alarm: LabAlarm) -> tuple[LabAlarm, str] | None:
        limits = self.config.devices[alarm.device].thresholds
        if not alarm.readings or not limits:
            return None
        beyond = []
        for name, reading in alarm.readings.items():
            rule = limits.get(name)
            why = rule.beyond(Decimal(reading["value"]), reading["unit"]) if rule is not None else None
            if why is not None:
                beyond.append(f"{name} {why}")
        if not beyond:
            return None
        with self._lock:
            self._follow_ups += 1
            n = self._follow_ups
        cid = f"lab-fu-{alarm.device}-{n}"
        return dataclasses.replace(
            alarm, id=cid, cid=cid, ingress="lab", code="100", qualifier="1", event="follow_up_alarm", priority=2,
            zone="000", seq=None, ref=None, received_epoch_s=time.time(),
        ), "; ".join(beyond)

    def _outside_night(self, alarm: LabAlarm) -> dict[str, str] | None:
        """For an event of the user's wandering plan (a door opening) outside the plan's night by the lab's
        clock: the window and the lab's time, for the ledger (the event is recorded, not alarmed). None: route."""
        plan = self.config.devices[alarm.device].wandering
        if plan is None or alarm.event not in plan.events:
            return None
        now = self._local.seconds_of_day()
        if plan.at_night(now):
            return None
        return {"night": plan.night, "local_time": hhmm(now)}
