"""Supervision of the devices' heartbeats (the users' plans): a device that misses `supervision.misses`
heartbeat intervals raises the lab's own alarm 356 (loss of supervision), its next heartbeat 356 restored.

Heartbeats come over MQTT (the interval from the heartbeat unless the lab config sets one) or as DC-09
messages and SCAIP heartbeats (the configured interval only). One scheduler timer per device, however many
heartbeats arrive. Supervision alarms are the lab's own and are not subject to faults; a loss of supervision
is recorded in the patient record when the EPJ target asks for it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.clock import utc_text
from harness.lab.alarm import LabAlarm
from harness.lab.config import LabConfig
from harness.lab.ledger import NS, Ledger, Scheduler
from harness.protocols.base import ProtocolError
from harness.protocols.wire_json import Heartbeat, decode
from harness.transports.base import Message


@dataclass(slots=True)
class _Supervised:
    interval_ns: int
    due_ns: int
    failed: bool = False
    timer_pending: bool = False
    counter: int = 0
    user: str | None = None


class SupervisionMixin:
    """The Router's supervision of heartbeats; declares what of the Router it uses."""

    config: LabConfig
    ledger: Ledger
    _clock: Callable[[], int]
    _lock: threading.RLock
    _scheduler: Scheduler | None
    _supervised: dict[str, _Supervised]

    if TYPE_CHECKING:

        def _reject(self, topic: str, reason: str, **fields: Any) -> None: ...

        def _known_device(self, m: re.Match[str], msg: Message, payload_device: str) -> str | None: ...

        def _remember(self, alarm: LabAlarm) -> None: ...

        def _deliver(self, alarm: LabAlarm) -> str | None: ...

        def _record_supervision(self, alarm: LabAlarm) -> None: ...

    def take_heartbeat(self, device: str, via: str) -> None:
        """A DC-09 message or SCAIP heartbeat: the device's configured interval applies."""
        interval_s = self.config.devices[device].heartbeat_interval_s
        if interval_s is None:
            return
        self._heartbeat(device, interval_s, None)

    def _on_heartbeat(self, m: re.Match[str], msg: Message) -> None:
        try:
            hb = decode(msg.payload, Heartbeat)
        except ProtocolError as e:
            self._reject(msg.topic, f"heartbeat: {e.reason}")
            return
        device = self._known_device(m, msg, hb.device)
        if device is None or not self.config.supervision.enabled:
            return
        settings = self.config.devices[device]
        interval_s = settings.heartbeat_interval_s or hb.interval_s
        lo, hi = self.config.limits.heartbeat_interval_s
        if not lo <= interval_s <= hi:
            self._reject(msg.topic, f"heartbeat interval_s {interval_s:g} is outside {lo:g}..{hi:g}", device=device)
            return
        self._heartbeat(device, interval_s, hb.user)

    def _heartbeat(self, device: str, interval_s: float, user: str | None) -> None:
        if not self.config.supervision.enabled:
            return
        settings = self.config.devices[device]
        now = self._clock()
        with self._lock:
            state = self._supervised.get(device)
            if state is None:
                state = self._supervised[device] = _Supervised(interval_ns=0, due_ns=0)
            state.interval_ns = int(interval_s * NS)
            state.due_ns = now + self.config.supervision.misses * state.interval_ns
            state.user = settings.user or user or state.user
            if state.failed:
                state.failed = False
                self._raise_supervision(device, state, restored=True)
            if not state.timer_pending:  # one timer per device, however many heartbeats arrive
                state.timer_pending = True
                self._schedule_check(device, state.due_ns)

    def _schedule_check(self, device: str, due_ns: int) -> None:
        assert self._scheduler is not None
        self._scheduler.at(due_ns, lambda: self._check_supervision(device))

    def _check_supervision(self, device: str) -> None:
        with self._lock:
            state = self._supervised.get(device)
            if state is None:
                return
            if self._clock() < state.due_ns:  # a heartbeat came in since: wait for the new deadline
                self._schedule_check(device, state.due_ns)
                return
            state.timer_pending = False
            if not state.failed:
                state.failed = True
                self._raise_supervision(device, state, restored=False)

    def _raise_supervision(self, device: str, state: _Supervised, *, restored: bool) -> None:
        state.counter += 1
        cid = f"lab-sup-{device}-{state.counter}"
        centre = self.config.centre_for(device, state.user)
        action = "supervision_restored" if restored else "supervision_failure"
        if centre is None:
            self.ledger.write("rejected", cid=cid, device=device, reason=f"{action}: no centre for device")
            return
        now = utc_text()
        alarm = LabAlarm(
            id=cid,
            ingress="lab",
            device=device,
            centre=centre,
            code="356",
            qualifier="3" if restored else "1",
            event=action,
            priority=2,
            received_epoch_s=time.time(),
            zone="000",
            partition=self.config.mapping.partition,
            cid=cid,
            user=state.user,
            sent=now,
        )
        self._remember(alarm)
        via = self._deliver(alarm)
        if via is not None:
            self.ledger.write(action, **alarm.ledger_fields(), delay_ms=0, **({"via": via} if via != "mqtt" else {}))
        if not restored:
            self._record_supervision(alarm)
