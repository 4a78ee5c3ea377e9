"""The patient record (EPJ): what the reference lab pushes as FHIR bundles in the VKP profile, and when.

On receipt: low battery (302), a missed or taken dose, a meter's readings (once, not again for the follow-up
alarm they raise). When a centre handles an alarm: the handled alarm with its operator. On loss of
supervision: the supervision alarm. Pushes go through the push faults when the EPJ target says so, then to
one worker (EpjPusher); each `epj_*` ledger line names the alarm it records.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from typing import Any

from harness.faults import FaultPlan
from harness.lab.alarm import LabAlarm
from harness.lab.config import LabConfig
from harness.lab.epj_push import EpjPusher, Record, utc
from harness.lab.ledger import Ledger, Scheduler
from harness.protocols import vkp


class RecordsMixin:
    """The Router's pushes to the patient record; declares what of the Router it uses."""

    config: LabConfig
    ledger: Ledger
    _clock: Callable[[], int]
    _lock: threading.RLock
    _scheduler: Scheduler | None
    _epj: EpjPusher | None
    _push_plan: FaultPlan

    def _push(self, record: Record) -> None:
        """Apply the push faults when the EPJ target says so, then queue the push."""
        epj = self._epj
        if epj is None:
            return
        if epj.target.faults:
            with self._lock:
                decision = self._push_plan.decide(self._clock())
            if decision.drop:
                self.ledger.write(f"epj_{decision.reason}", kind=record.kind, device=record.device, **record.fields)
                return
            if decision.extra_delay_ns:
                self.ledger.write(
                    "epj_delay",
                    kind=record.kind,
                    device=record.device,
                    delay_ms=decision.extra_delay_ns / 1e6,
                    **record.fields,
                )
                assert self._scheduler is not None
                self._scheduler.after(decision.extra_delay_ns, lambda: epj.submit(record))
                return
        epj.submit(record)

    def _record_on_receipt(self, alarm: LabAlarm, user: str | None) -> None:
        epj = self._epj
        if epj is None:
            return
        at = utc(alarm.received_epoch_s)
        t = epj.target
        ids = _record_ids(alarm)
        kind = t.bundle_type
        if alarm.code == "302" and alarm.qualifier == "1" and alarm.event != "dose_missed" and t.push_low_battery:
            level = alarm.battery
            self._push(
                Record(
                    "low_battery",
                    alarm.device,
                    user,
                    lambda p, d, c: vkp.low_battery(p, d, at, level_percent=level, type=kind, codes=c),
                    **ids,
                )
            )
        elif alarm.event == "dose_missed" and t.push_doses:
            self._push(
                Record(
                    "dose_missed",
                    alarm.device,
                    user,
                    lambda p, d, c: vkp.missed_dose(p, d, at, type=kind, codes=c),
                    **ids,
                )
            )
        elif alarm.event == "dose_taken" and t.push_doses:
            self._push(
                Record("dose_taken", alarm.device, user, lambda p, d, c: vkp.taken_dose(p, d, at, type=kind), **ids)
            )
        elif alarm.readings and alarm.event != "follow_up_alarm":  # the reading itself is recorded once
            values = {n: (r["value"], r["unit"]) for n, r in alarm.readings.items()}
            taken = _measured_at(alarm.measured) or at

            def readings_bundle(p: vkp.Ident, d: vkp.Ident, c: vkp.CodeTables) -> dict[str, Any]:
                return vkp.meter_readings(p, d, taken, values, type=kind, codes=c)[0]

            self._push(Record("reading", alarm.device, user, readings_bundle, **ids))

    def _record_handled(self, alarm: LabAlarm, *, operator: str, via: str, action: str = "acknowledged") -> None:
        epj = self._epj
        if epj is None or not epj.target.push_handled or alarm.event in ("dose_missed", "dose_taken"):
            return
        if alarm.code == "302":
            return  # low battery is recorded on receipt (DetectedIssue 1.17), not as a handled alarm
        vkp_code = epj.alarm_code(alarm.code)
        if vkp_code is None:
            self.ledger.write(
                "epj_skipped",
                kind="handled_alarm",
                **_record_ids(alarm),
                device=alarm.device,
                reason=f"no VKP alert code for Contact ID {alarm.code} (epj.alarm_codes)",
            )
            return
        raised = utc(alarm.received_epoch_s)
        handled = utc(time.time())
        kind = epj.target.bundle_type
        note = f"Alarm {alarm.event} ({alarm.code}) {action} ved {alarm.centre} av {operator} ({via})"
        op = vkp.Ident(vkp.OPERATOR_SYSTEM, operator)
        self._push(
            Record(
                "handled_alarm",
                alarm.device,
                alarm.user or self.config.devices[alarm.device].user,
                lambda p, d, c: vkp.handled_alarm(p, d, vkp_code, raised, handled, op, note, type=kind, codes=c),
                operator=operator,
                **_record_ids(alarm),
            )
        )

    def _record_supervision(self, alarm: LabAlarm) -> None:
        epj = self._epj
        if epj is None or not epj.target.push_supervision:
            return
        code = epj.target.supervision_code
        if code is None:
            self.ledger.write(
                "epj_skipped",
                kind="supervision_loss",
                device=alarm.device,
                cid=alarm.id,
                reason="no VKP alert code for loss of supervision (epj.supervision_code)",
            )
            return
        at = utc(alarm.received_epoch_s)
        kind = epj.target.bundle_type
        self._push(
            Record(
                "supervision_loss",
                alarm.device,
                alarm.user,
                lambda p, d, c: vkp.supervision_loss(p, d, at, code=code, type=kind, codes=c),
                **_record_ids(alarm),
            )
        )


def _measured_at(text: str | None) -> datetime.datetime | None:
    """The meter's own time of a reading (UTC when it names no zone), for the Observation's effective time."""
    if text is None:
        return None
    try:
        at = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return at.replace(tzinfo=datetime.UTC) if at.tzinfo is None else at


def _record_ids(alarm: LabAlarm) -> dict[str, Any]:
    """How an `epj_*` ledger line names the alarm it records (cid / lab_cid, key)."""
    fields = alarm.ledger_fields()
    return {k: fields[k] for k in ("cid", "lab_cid", "key") if k in fields}
